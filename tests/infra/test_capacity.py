"""Capacity planner: catalogs, config.json parsing, vLLM's memory formulas, the TP/PP choice and every refusal.

Expected numbers are worked out by hand from the formulas in docs/capacity.md (and ../shared/notes/capacity.md), not
read back from the planner, so a wrong formula fails here.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from infra.capacity import (
    GPU_CATALOG,
    MODEL_CATALOG,
    CapacityError,
    ModelSpec,
    Plan,
    PlanRequest,
    Reserves,
    gpu_type,
    kv_bytes_per_token_rank,
    model_from_config,
    plan,
    resolve_model,
    valid_tensor_parallel_sizes,
    weight_bytes,
    weights_per_rank_bytes,
)
from infra.capacity.planner import default_max_num_batched_tokens, default_max_num_seqs

GIB = 1024**3
H100 = gpu_type("H100-80GB-SXM")
REQUIRED_JSON_KEYS = {
    "model",
    "gpu",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "replicas",
    "gpus",
    "nodes",
    "weights_gib_per_gpu",
    "kv_cache_gib_per_gpu",
    "kv_cache_tokens",
    "max_concurrency",
    "fits",
    "reasons",
}


def request(model: str | ModelSpec, gpu: str = "H100-80GB-SXM", gpus_per_node: int = 8, **kwargs: Any) -> PlanRequest:
    spec = model if isinstance(model, ModelSpec) else MODEL_CATALOG[model]
    return PlanRequest(model=spec, gpu=gpu_type(gpu), gpus_per_node=gpus_per_node, **kwargs)


def same_facts(parsed: ModelSpec, catalog: ModelSpec) -> bool:
    """Every architecture fact equal (names, ids and provenance aside)."""
    renamed = replace(parsed, name=catalog.name, hf_id=catalog.hf_id, aliases=catalog.aliases, source=catalog.source)
    return renamed == catalog


# Real config.json files (as published on Hugging Face), trimmed of keys the planner does not read.
LLAMA_31_8B_CONFIG = {
    "_name_or_path": "meta-llama/Llama-3.1-8B-Instruct",
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rope_scaling": {"factor": 8.0, "rope_type": "llama3", "original_max_position_embeddings": 8192},
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}
GLM_4_9B_CHAT_CONFIG = {
    "architectures": ["ChatGLMModel"],
    "add_bias_linear": False,
    "add_qkv_bias": True,
    "ffn_hidden_size": 13696,
    "hidden_size": 4096,
    "kv_channels": 128,
    "model_type": "chatglm",
    "multi_query_attention": True,
    "multi_query_group_num": 2,
    "num_attention_heads": 32,
    "num_layers": 40,
    "padded_vocab_size": 151552,
    "rope_ratio": 500,
    "seq_length": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
DEEPSEEK_V3_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "first_k_dense_replace": 3,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8"},
    "tie_word_embeddings": False,
    "v_head_dim": 128,
    "vocab_size": 129280,
}
QWEN3_235B_CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "decoder_sparse_step": 1,
    "head_dim": 128,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "max_position_embeddings": 40960,
    "mlp_only_layers": [],
    "model_type": "qwen3_moe",
    "moe_intermediate_size": 1536,
    "num_attention_heads": 64,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 94,
    "num_key_value_heads": 4,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


# --- GPU catalog ------------------------------------------------------------------------------------------------------


def test_gpu_catalog_has_exactly_the_documented_types() -> None:
    assert set(GPU_CATALOG) == {
        "A100-40GB",
        "A100-80GB",
        "H100-80GB-SXM",
        "H100-80GB-PCIE",
        "H200-141GB",
        "L40S",
        "A10",
        "L4",
    }
    # CUDA-visible memory, not the marketing size.
    assert GPU_CATALOG["H100-80GB-SXM"].memory_gib == pytest.approx(79.18)
    assert GPU_CATALOG["A100-40GB"].memory_gib == pytest.approx(39.38)
    assert GPU_CATALOG["L40S"].memory_gib == pytest.approx(44.35)
    assert 22.0 <= GPU_CATALOG["L4"].memory_gib <= 23.6
    assert 22.0 <= GPU_CATALOG["A10"].memory_gib <= 23.6
    # Dense figures, not "with sparsity".
    assert GPU_CATALOG["H100-80GB-SXM"].bf16_tflops == pytest.approx(989, rel=0.01)
    assert GPU_CATALOG["L4"].bf16_tflops == pytest.approx(121, rel=0.01)
    assert GPU_CATALOG["A100-80GB"].fp8_tflops is None
    assert "NVIDIA-H100-80GB-HBM3" in GPU_CATALOG["H100-80GB-SXM"].product_labels


def test_gpu_lookup_is_case_insensitive_and_accepts_product_labels() -> None:
    assert gpu_type("h100-80gb-sxm") is GPU_CATALOG["H100-80GB-SXM"]
    assert gpu_type("NVIDIA-L40S") is GPU_CATALOG["L40S"]
    with pytest.raises(CapacityError, match=r"unknown GPU type 'B200'.*H100-80GB-SXM.*L4"):
        gpu_type("B200")


# --- model catalog ----------------------------------------------------------------------------------------------------


def test_model_catalog_keys() -> None:
    assert set(MODEL_CATALOG) >= {
        "Llama-3.1-8B",
        "Llama-3.1-70B",
        "Llama-3.3-70B",
        "Qwen2.5-7B",
        "Qwen2.5-72B",
        "Qwen3-8B",
        "Qwen3-14B",
        "Qwen3-32B",
        "Qwen3-235B-A22B",
        "DeepSeek-V3",
        "DeepSeek-R1",
        "GLM-4-9B",
        "Mistral-Small-24B",
        "Baichuan2-13B",
        "ChatGLM3-6B",
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Exact counts published by others for these shapes.
        ("Llama-3.1-8B", 8_030_261_248),
        ("Llama-3.1-70B", 70_553_706_496),
        ("Mistral-Small-24B", 23_572_403_200),
    ],
)
def test_param_count_exact(name: str, expected: int) -> None:
    assert MODEL_CATALOG[name].param_count() == expected


@pytest.mark.parametrize(
    ("name", "total_b", "active_b"),
    [
        ("Qwen2.5-7B", 7.61, 7.61),
        ("Qwen2.5-72B", 72.7, 72.7),
        ("Qwen3-32B", 32.8, 32.8),
        ("Qwen3-235B-A22B", 235.0, 22.0),
        ("DeepSeek-V3", 671.0, 37.0),
        ("ChatGLM3-6B", 6.24, 6.24),
        ("GLM-4-9B", 9.4, 9.4),
        ("Baichuan2-13B", 13.9, 13.9),
    ],
)
def test_param_counts_match_published_sizes(name: str, total_b: float, active_b: float) -> None:
    spec = MODEL_CATALOG[name]
    assert spec.param_count() / 1e9 == pytest.approx(total_b, rel=0.01)
    assert spec.active_param_count() / 1e9 == pytest.approx(active_b, rel=0.02)


def test_moe_and_mla_flags() -> None:
    deepseek = MODEL_CATALOG["DeepSeek-V3"]
    assert deepseek.is_moe and deepseek.uses_mla and deepseek.num_dense_layers == 3
    qwen_moe = MODEL_CATALOG["Qwen3-235B-A22B"]
    assert qwen_moe.is_moe and not qwen_moe.uses_mla and qwen_moe.num_dense_layers == 0
    assert not MODEL_CATALOG["Llama-3.1-8B"].is_moe
    assert MODEL_CATALOG["Qwen3-32B"].head_dim == 128  # not 5120 / 64 = 80


# --- formulas ---------------------------------------------------------------------------------------------------------


def test_llama_8b_bf16_weights_match_vllm_log() -> None:
    weights = weight_bytes(MODEL_CATALOG["Llama-3.1-8B"], "bf16") / GIB
    assert weights == pytest.approx(14.96, abs=0.01)
    assert weights == pytest.approx(14.99, rel=0.01)  # "Loading model weights took 14.99 GiB"


def test_quantized_weights_keep_embeddings_in_bf16() -> None:
    spec = MODEL_CATALOG["Llama-3.1-70B"]
    embeddings = 2 * 128256 * 8192
    rest = spec.param_count() - embeddings
    assert weight_bytes(spec, "fp8") == embeddings * 2 + rest * 1
    assert weight_bytes(spec, "awq") == pytest.approx(embeddings * 2 + rest * 0.52)
    assert weight_bytes(spec, "fp8") / GIB == pytest.approx(67.67, abs=0.01)


def test_qwen3_32b_kv_uses_config_head_dim() -> None:
    spec = MODEL_CATALOG["Qwen3-32B"]
    assert kv_bytes_per_token_rank(spec, tp=1, pp=1, kv_dtype_bytes=2) == 2 * 64 * 8 * 128 * 2  # 262,144
    assert kv_bytes_per_token_rank(spec, tp=2, pp=1, kv_dtype_bytes=2) == 2 * 64 * 4 * 128 * 2


def test_mla_kv_is_the_latent_and_not_divided_by_tp() -> None:
    spec = MODEL_CATALOG["DeepSeek-V3"]
    expected = 61 * (512 + 64) * 2  # L x (kv_lora_rank + qk_rope_head_dim) x bf16
    assert kv_bytes_per_token_rank(spec, tp=1, pp=1, kv_dtype_bytes=2) == expected == 70_272
    assert kv_bytes_per_token_rank(spec, tp=8, pp=1, kv_dtype_bytes=2) == expected
    assert kv_bytes_per_token_rank(spec, tp=8, pp=2, kv_dtype_bytes=1) == 31 * 576  # ceil(61/2) layers, fp8


def test_gqa_heads_are_replicated_when_tp_exceeds_kv_heads() -> None:
    spec = MODEL_CATALOG["Llama-3.1-70B"]  # 8 KV heads
    per_head = 2 * 80 * 128 * 2
    assert kv_bytes_per_token_rank(spec, tp=4, pp=1, kv_dtype_bytes=2) == 2 * per_head
    assert kv_bytes_per_token_rank(spec, tp=8, pp=1, kv_dtype_bytes=2) == per_head
    assert kv_bytes_per_token_rank(spec, tp=16, pp=1, kv_dtype_bytes=2) == per_head  # replicated, not 0.5 head


def test_pipeline_stages_hold_ceil_layers_and_one_embedding() -> None:
    spec = MODEL_CATALOG["Llama-3.1-70B"]
    layer = spec.layer_param_count(moe=False) * 2
    embedding = 128256 * 8192 * 2
    assert weights_per_rank_bytes(spec, "bf16", tp=8, pp=3) == (embedding + 27 * layer) / 8
    assert weights_per_rank_bytes(spec, "bf16", tp=8, pp=1) == weight_bytes(spec, "bf16") / 8
    assert kv_bytes_per_token_rank(spec, tp=8, pp=3, kv_dtype_bytes=2) == 2 * 27 * 1 * 128 * 2


def test_valid_tensor_parallel_sizes_prefer_powers_of_two() -> None:
    assert valid_tensor_parallel_sizes(MODEL_CATALOG["Llama-3.1-70B"], 8) == [1, 2, 4, 8]
    # Qwen3-14B: 40 heads, 8 KV heads: 5 divides the heads but not the KV heads (8 % 5), so vLLM refuses it.
    assert valid_tensor_parallel_sizes(MODEL_CATALOG["Qwen3-14B"], 8) == [1, 2, 4, 8]
    # Baichuan2-13B: 40 heads = 40 KV heads, intermediate 13696 = 2^7 x 107: TP=5 fails the MLP split.
    assert valid_tensor_parallel_sizes(MODEL_CATALOG["Baichuan2-13B"], 8) == [1, 2, 4, 8]
    assert valid_tensor_parallel_sizes(MODEL_CATALOG["ChatGLM3-6B"], 4) == [1, 2, 4]


def test_vllm_scheduling_defaults_follow_gpu_size() -> None:
    assert default_max_num_seqs(H100) == 1024 and default_max_num_batched_tokens(H100) == 8192
    assert default_max_num_seqs(gpu_type("H200-141GB")) == 1024
    assert default_max_num_seqs(gpu_type("A100-80GB")) == 256  # >= 70 GiB, but an A100
    assert default_max_num_seqs(gpu_type("L40S")) == 256 and default_max_num_batched_tokens(gpu_type("L4")) == 2048


# --- the choice -------------------------------------------------------------------------------------------------------


def test_llama_70b_on_h100_at_32k_picks_tp4() -> None:
    result = plan(request("Llama-3.1-70B", max_model_len=32768))
    # TP=1: 131.42 GiB of weights > 0.92 x 79.18 = 72.85 GiB usable.
    # TP=2: 72.85 - 65.71 weights - 5.6 activation - 0.55 non-torch - 1.0 CUDA graphs = -0.01 GiB for the KV cache.
    # TP=4: 72.85 - 32.85 - 5.6 - 0.55 - 1.0 = 32.84 GiB; 81,920 B/token (2 KV heads per GPU) → 26,903 blocks.
    assert result.fits
    assert (result.tensor_parallel_size, result.pipeline_parallel_size, result.replicas) == (4, 1, 1)
    assert (result.gpus, result.nodes) == (4, 1)
    assert result.weights_gib_per_gpu == pytest.approx(131.42 / 4, abs=0.01)
    assert result.kv_bytes_per_token_per_gpu == 81_920
    available = 0.92 * 79.18 * GIB - weight_bytes(MODEL_CATALOG["Llama-3.1-70B"]) / 4 - (5.6 + 0.55 + 1.0) * GIB
    blocks = math.floor(available / (16 * 81_920))
    assert result.num_blocks == blocks == 26_903
    assert result.kv_cache_tokens == blocks * 16
    assert result.max_concurrency == pytest.approx(blocks / 2048)
    assert math.floor(result.max_concurrency) == 13
    assert len(result.rejected) == 2
    assert (
        "TP=1, PP=1: weights need 131.4 GiB per GPU but only 72.8 GiB is usable (0.92 x 79.18 GiB)"
        in (result.rejected[0])
    )
    assert "TP=2, PP=1: no memory left for the KV cache" in result.rejected[1] and "= -0.01 GiB" in result.rejected[1]


def test_replicas_cover_the_target_concurrency() -> None:
    result = plan(request("Llama-3.1-70B", max_model_len=32768, target_concurrency=40))
    assert result.replicas == math.ceil(40 / 13) == 4
    assert (result.gpus, result.nodes) == (16, 2)  # two TP=4 replicas per 8-GPU node


def test_llama_8b_on_h100_and_l4() -> None:
    h100 = plan(request("Llama-3.1-8B"))  # full 131,072-token context
    assert (h100.tensor_parallel_size, h100.pipeline_parallel_size, h100.fits) == (1, 1, True)
    assert h100.kv_cache_gib_per_gpu == pytest.approx(72.85 - 14.96 - 5.6 - 0.13 - 1.0, abs=0.01)
    assert h100.kv_bytes_per_token_per_gpu == 131_072

    # L4 (22.06 GiB, 2048 batched tokens → activation 5.6 x 2048/8192 = 1.4 GiB): 20.30 - 14.96 - 1.4 - 0.13 - 1.0
    # = 2.81 GiB → 22,992 tokens at TP=1: enough for 8k, not for the full 131k context.
    l4_full = plan(request("Llama-3.1-8B", "L4", gpus_per_node=4))
    assert (l4_full.tensor_parallel_size, l4_full.fits) == (2, True)
    assert "max_concurrency 0.18 < 1" in l4_full.rejected[0]
    l4_8k = plan(request("Llama-3.1-8B", "L4", gpus_per_node=4, max_model_len=8192))
    assert (l4_8k.tensor_parallel_size, l4_8k.fits, l4_8k.kv_cache_tokens) == (1, True, 22_992)
    assert l4_8k.max_num_seqs == 256


def test_qwen3_235b_bf16_fits_one_h100_node() -> None:
    # The formulas give TP=8, PP=1: 437.9 GiB / 8 = 54.74 GiB of weights per GPU, leaving 72.85 - 54.74 - 7.4 (MoE
    # activation) - 0.55 - 1.0 = 9.16 GiB; 4 KV heads < TP=8 are replicated (48,128 B/token) → 204k tokens, enough
    # for the 40,960-token context. No pipeline parallelism is needed in bf16 (it is on 8xL40S, below).
    result = plan(request("Qwen3-235B-A22B"))
    assert result.fits
    assert (result.tensor_parallel_size, result.pipeline_parallel_size, result.nodes) == (8, 1, 1)
    assert result.weights_gib_per_gpu == pytest.approx(54.74, abs=0.01)
    assert result.kv_bytes_per_token_per_gpu == 2 * 94 * 1 * 128 * 2
    assert any("KV heads replicated" in reason for reason in result.reasons)
    on_l40s = plan(request("Qwen3-235B-A22B", "L40S"))
    assert (on_l40s.tensor_parallel_size, on_l40s.pipeline_parallel_size, on_l40s.nodes) == (8, 2, 2)


def test_deepseek_v3_needs_pipeline_parallelism_across_h100_nodes() -> None:
    # fp8: (2 x 129280 x 7168 + 669.2 B x 1) bytes = 626.7 GiB → 78.3 GiB per GPU at TP=8 > 72.85 usable → PP=2.
    fp8 = plan(request("DeepSeek-V3", quantization="fp8"))
    assert fp8.fits
    assert (fp8.tensor_parallel_size, fp8.pipeline_parallel_size) == (8, 2)
    assert (fp8.gpus, fp8.nodes, fp8.nodes_per_replica) == (16, 2, 2)
    assert "TP=8, PP=1: weights need 78.3 GiB per GPU but only 72.8 GiB is usable" in fp8.rejected[-1]
    assert fp8.kv_bytes_per_token_per_gpu == 31 * 576 * 2
    # The published checkpoint is fp8: leaving quantization unset sizes it the same way, with a note.
    default = plan(request("DeepSeek-V3"))
    assert (default.quantization, default.pipeline_parallel_size) == ("fp8", 2)
    assert any("checkpoint's own fp8" in reason for reason in default.reasons)
    # bf16: 156.2 GiB per GPU at PP=1, 83.3 GiB at PP=2 (31 layers per stage), fits at PP=3.
    bf16 = plan(request("DeepSeek-V3", quantization="bf16"))
    assert (bf16.tensor_parallel_size, bf16.pipeline_parallel_size, bf16.nodes) == (8, 3, 3)
    assert "TP=8, PP=2: weights need 83.3 GiB per GPU" in bf16.rejected[-1]


def test_fp8_weights_and_kv_cache() -> None:
    fp8 = plan(request("Llama-3.1-70B", max_model_len=32768, quantization="fp8"))
    # TP=1: 72.85 - 67.67 - 5.6 - 0.13 - 1.0 = -1.55 GiB; TP=2 fits.
    assert fp8.tensor_parallel_size == 2
    assert "= -1.55 GiB" in fp8.rejected[0]
    auto = plan(request("Llama-3.1-8B", max_model_len=8192))
    fp8_kv = plan(request("Llama-3.1-8B", max_model_len=8192, kv_cache_dtype="fp8"))
    assert fp8_kv.kv_bytes_per_token_per_gpu * 2 == auto.kv_bytes_per_token_per_gpu
    assert fp8_kv.num_blocks in (2 * auto.num_blocks, 2 * auto.num_blocks + 1)


def test_reserves_are_overridable() -> None:
    lean = Reserves(activation_dense_gib=4.8, cuda_graph_gib=0.0)
    # TP=2 now leaves 72.85 - 65.71 - 4.8 - 0.55 = 1.79 GiB: 11.7k tokens, enough for an 8k context.
    result = plan(request("Llama-3.1-70B", max_model_len=8192, reserves=lean))
    assert result.tensor_parallel_size == 2
    assert result.kv_cache_gib_per_gpu == pytest.approx(72.85 - 65.71 - 4.8 - 0.55, abs=0.01)
    assert plan(request("Llama-3.1-70B", max_model_len=8192)).tensor_parallel_size == 4


def test_speed_and_load_time_bounds() -> None:
    result = plan(request("Llama-3.1-8B", max_model_len=8192))
    spec = MODEL_CATALOG["Llama-3.1-8B"]
    read = 2 * spec.param_count() - 2 * 128256 * 4096 + 8192 * 131_072  # weights less the input embedding, + KV
    assert result.decode_ms_per_token_bound == pytest.approx(read / 3.35e12 * 1e3)
    assert result.decode_ms_per_token_bound == pytest.approx(4.80, abs=0.01)
    assert result.prefill_ms_bound == pytest.approx(2 * spec.param_count() * 1024 / (0.5 * 989e12) * 1e3)
    assert result.load_time_s == pytest.approx(2 * spec.param_count() / 0.3e9 + 60)
    faster = plan(request("Llama-3.1-8B", max_model_len=8192, storage_gbps=3.0))
    assert faster.load_time_s == pytest.approx(2 * spec.param_count() / 3e9 + 60)
    # TP halves the prefill bound; PP does not shorten decode.
    tp2 = plan(request("Llama-3.1-8B", max_model_len=8192, tensor_parallel_size=2))
    assert tp2.prefill_ms_bound == pytest.approx(result.prefill_ms_bound / 2)


# --- refusals (each message carries the numbers) ----------------------------------------------------------------------


def test_refuses_weights_that_do_not_fit() -> None:
    result = plan(request("Llama-3.1-70B", max_model_len=32768, tensor_parallel_size=1))
    assert not result.fits and result.tensor_parallel_size == 1
    assert result.reasons == [
        "weights need 131.4 GiB per GPU but only 72.8 GiB is usable (0.92 x 79.18 GiB) at TP=1, PP=1"
    ]
    assert result.kv_cache_tokens == 0 and result.max_concurrency == 0


def test_refuses_when_no_memory_is_left_for_kv() -> None:
    result = plan(request("Llama-3.1-70B", max_model_len=32768, tensor_parallel_size=2))
    assert not result.fits
    assert result.reasons == [
        "no memory left for the KV cache at TP=2, PP=1: 72.85 GiB usable - 65.71 GiB weights - 5.60 GiB activation "
        "peak - 0.55 GiB non-torch - 1.00 GiB CUDA graphs = -0.01 GiB"
    ]


def test_refuses_when_one_max_model_len_request_does_not_fit() -> None:
    result = plan(request("Qwen3-32B", tensor_parallel_size=1))  # 40,960 tokens x 262,144 B = 10 GiB
    assert not result.fits
    (reason,) = result.reasons
    assert "one request of max_model_len=40960 tokens needs 2560 KV blocks (10.00 GiB)" in reason
    assert "only 1303 blocks (20848 tokens, 5.09 GiB) fit at TP=1, PP=1: max_concurrency 0.51 < 1" in reason
    assert result.max_concurrency == pytest.approx(1303 / 2560)
    chosen = plan(request("Qwen3-32B"))
    assert (chosen.tensor_parallel_size, chosen.fits) == (2, True)


def test_refuses_tp_that_does_not_divide_heads() -> None:
    result = plan(request("Qwen3-14B", tensor_parallel_size=3))
    assert not result.fits
    assert (
        "tensor_parallel_size=3 does not divide num_attention_heads=40 of Qwen3-14B; use 1, 2, 4, 5, 8"
        in (result.reasons[0])
    )


def test_refuses_tp_larger_than_a_node() -> None:
    result = plan(request("Llama-3.1-70B", gpus_per_node=4, tensor_parallel_size=8))
    assert not result.fits
    assert "tensor_parallel_size=8 exceeds gpus_per_node=4" in result.reasons[0]


def test_replicated_kv_heads_with_tp16() -> None:
    # Llama-70B has 8 KV heads; TP=16 (16-GPU nodes) replicates them: one head per GPU, like TP=8.
    result = plan(request("Llama-3.1-70B", gpus_per_node=16, tensor_parallel_size=16, max_model_len=32768))
    assert result.fits
    assert result.kv_bytes_per_token_per_gpu == 2 * 80 * 1 * 128 * 2
    assert any("num_key_value_heads=8 < TP=16" in reason for reason in result.reasons)


def test_refuses_tp_that_cannot_split_kv_heads_or_mlp() -> None:
    odd = ModelSpec(
        name="odd",
        hf_id="",
        architecture="LlamaForCausalLM",
        num_layers=4,
        hidden_size=3072,
        num_attention_heads=24,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=8190,
        vocab_size=32000,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    )
    result = plan(request(odd, tensor_parallel_size=3))
    assert not result.fits
    assert any("tensor_parallel_size=3 and num_key_value_heads=8 of odd" in reason for reason in result.reasons)
    assert plan(request(odd, tensor_parallel_size=4)).reasons == [
        "intermediate_size=8190 of odd is not divisible by tensor_parallel_size=4"
    ]
    assert valid_tensor_parallel_sizes(odd, 8) == [1, 2]


def test_refuses_more_gpus_than_the_pool() -> None:
    one_replica = plan(request("DeepSeek-V3", quantization="fp8", pool_gpus=8))
    assert not one_replica.fits and one_replica.pipeline_parallel_size == 2
    assert "one replica needs 16 GPUs (TP=8 x PP=2) but pool_gpus=8" in one_replica.reasons
    many = plan(request("Llama-3.1-70B", max_model_len=32768, target_concurrency=100, pool_gpus=16))
    assert not many.fits
    assert many.replicas == 8  # ceil(100 / 13)
    assert "needs 32 GPUs (8 replicas x TP=4 x PP=1) for target_concurrency=100 but pool_gpus=16" in many.reasons


def test_a_tighter_pool_moves_to_a_larger_tp() -> None:
    # TP=4 holds 13 requests: 31 requests need 3 replicas = 12 GPUs > 8. TP=8 holds 39.4 (49.27 GiB of KV room per
    # GPU and one KV head per GPU, 40,960 B/token): one replica, 8 GPUs.
    result = plan(request("Llama-3.1-70B", max_model_len=32768, target_concurrency=31, pool_gpus=8))
    assert result.fits and (result.tensor_parallel_size, result.replicas, result.gpus) == (8, 1, 8)
    assert result.kv_cache_gib_per_gpu == pytest.approx(72.85 - 131.42 / 8 - 5.6 - 0.55 - 1.0, abs=0.01)
    assert math.floor(result.max_concurrency) == 39
    assert any("needs 12 GPUs (3 replicas x TP=4 x PP=1)" in rejected for rejected in result.rejected)


def test_refuses_more_replicas_than_allowed() -> None:
    result = plan(request("Llama-3.1-8B", target_concurrency=10, max_replicas=2, tensor_parallel_size=1))
    assert not result.fits
    assert (
        "holding target_concurrency=10 requests of 131072 tokens needs 4 replicas (3 per replica at TP=1, PP=1) "
        "but max_replicas=2" in result.reasons
    )


def test_refuses_context_beyond_the_model() -> None:
    result = plan(request("Qwen3-8B", max_model_len=65536))
    assert not result.fits
    assert result.reasons[0] == (
        "max_model_len=65536 exceeds max_position_embeddings=40960 of Qwen3-8B "
        "(vLLM refuses this unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)"
    )
    baichuan = plan(request("Baichuan2-13B", max_model_len=8192))
    assert not baichuan.fits and "max_position_embeddings=4096" in baichuan.reasons[0]


def test_forced_layouts_are_evaluated_as_given() -> None:
    result = plan(request("Llama-3.1-8B", tensor_parallel_size=2, max_model_len=8192))
    assert result.fits and result.tensor_parallel_size == 2 and result.rejected == []
    forced_pp = plan(request("Llama-3.1-70B", pipeline_parallel_size=2, max_model_len=32768))
    assert forced_pp.fits and (forced_pp.tensor_parallel_size, forced_pp.pipeline_parallel_size) == (2, 2)
    too_deep = plan(request("ChatGLM3-6B", tensor_parallel_size=1, pipeline_parallel_size=29))
    assert not too_deep.fits and "pipeline_parallel_size=29 exceeds the 28 layers of ChatGLM3-6B" in too_deep.reasons


# --- invalid inputs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"gpus_per_node": 0}, "gpus_per_node"),
        ({"max_model_len": -1}, "max_model_len"),
        ({"target_concurrency": 0}, "target_concurrency"),
        ({"quantization": "int3"}, "quantization"),
        ({"kv_cache_dtype": "int4"}, "kv_cache_dtype"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"pool_gpus": 0}, "pool_gpus"),
        ({"storage_gbps": 0}, "storage_gbps"),
    ],
)
def test_invalid_inputs_raise_capacity_error_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"gpus_per_node": 8, **kwargs}
    with pytest.raises(CapacityError, match=field):
        PlanRequest(model=MODEL_CATALOG["Llama-3.1-8B"], gpu=H100, **args)


def test_quantization_names_are_normalised() -> None:
    assert PlanRequest(
        model=MODEL_CATALOG["Llama-3.1-8B"], gpu=H100, gpus_per_node=8, quantization="FP8"
    ).quantization == ("fp8")
    with pytest.raises(CapacityError, match=r"reserves\.block_size"):
        Reserves(block_size=0)


# --- every catalog model plans ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODEL_CATALOG))
def test_every_catalog_model_yields_a_json_plan_on_h100(name: str) -> None:
    result = plan(request(name))
    data = result.to_json()
    assert set(data) >= REQUIRED_JSON_KEYS
    json.dumps(data)
    assert result.fits, result.reasons
    assert result.gpus == result.tensor_parallel_size * result.pipeline_parallel_size * result.replicas
    assert result.max_concurrency >= 1
    assert result.kv_cache_tokens == result.num_blocks * 16


@pytest.mark.parametrize("gpu", sorted(GPU_CATALOG))
@pytest.mark.parametrize("name", sorted(MODEL_CATALOG))
def test_every_model_on_every_gpu_plans_without_exceptions(name: str, gpu: str) -> None:
    result = plan(request(name, gpu, max_model_len=4096, quantization="fp8"))
    assert isinstance(result, Plan)
    assert result.fits or result.reasons


# --- config.json parsing ----------------------------------------------------------------------------------------------


def test_llama_style_config_file(tmp_path: Path) -> None:
    path = tmp_path / "Llama-3.1-8B-Instruct" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(LLAMA_31_8B_CONFIG), encoding="utf-8")
    spec = resolve_model(None, path)
    catalog = MODEL_CATALOG["Llama-3.1-8B"]
    for attribute in (
        "num_layers",
        "hidden_size",
        "num_attention_heads",
        "num_kv_heads",
        "head_dim",
        "intermediate_size",
        "vocab_size",
        "tie_word_embeddings",
        "max_position_embeddings",
    ):
        assert getattr(spec, attribute) == getattr(catalog, attribute), attribute
    assert spec.name == "Llama-3.1-8B-Instruct" and spec.architecture == "LlamaForCausalLM"
    assert same_facts(spec, catalog)
    assert spec.param_count() == 8_030_261_248
    assert plan(PlanRequest(model=spec, gpu=H100, gpus_per_node=8)).to_json()["tensor_parallel_size"] == 1
    assert model_from_config(path.parent, name="mine").name == "mine"  # a model directory works too


def test_glm_style_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(GLM_4_9B_CHAT_CONFIG), encoding="utf-8")
    spec = resolve_model("glm-4-9b-chat", path)
    assert (spec.num_layers, spec.num_kv_heads, spec.head_dim) == (40, 2, 128)
    assert (spec.intermediate_size, spec.vocab_size, spec.max_position_embeddings) == (13696, 151552, 131072)
    assert spec.qkv_bias and spec.name == "glm-4-9b-chat"
    assert same_facts(spec, MODEL_CATALOG["GLM-4-9B"])
    result = plan(PlanRequest(model=spec, gpu=gpu_type("L40S"), gpus_per_node=4, max_model_len=32768))
    assert result.fits and result.kv_bytes_per_token_per_gpu == 2 * 40 * 2 * 128 * 2


def test_deepseek_and_qwen_moe_configs() -> None:
    deepseek = model_from_config(DEEPSEEK_V3_CONFIG, name="dsv3")
    catalog = MODEL_CATALOG["DeepSeek-V3"]
    assert deepseek.num_dense_layers == 3 and deepseek.num_experts == 256 and deepseek.num_shared_experts == 1
    assert (deepseek.kv_lora_rank, deepseek.qk_rope_head_dim, deepseek.q_lora_rank) == (512, 64, 1536)
    assert deepseek.checkpoint_quantization == "fp8"
    assert deepseek.param_count() == catalog.param_count()
    assert same_facts(deepseek, catalog)
    qwen = model_from_config(QWEN3_235B_CONFIG, name="q235")
    assert same_facts(qwen, MODEL_CATALOG["Qwen3-235B-A22B"])
    assert qwen.num_dense_layers == 0 and qwen.sliding_window is None
    # Qwen-MoE's mlp_only_layers / decoder_sparse_step turn layers dense.
    mixed = model_from_config({**QWEN3_235B_CONFIG, "mlp_only_layers": [0, 1], "decoder_sparse_step": 2})
    # Dense: the 47 even layer indexes ((l + 1) % 2 != 0) plus layer 1 from mlp_only_layers.
    assert mixed.num_dense_layers == 48
    assert mixed.param_count() < qwen.param_count()


def test_baichuan_and_chatglm_context_keys() -> None:
    baichuan = model_from_config(
        {
            "architectures": ["BaichuanForCausalLM"],
            "hidden_size": 5120,
            "intermediate_size": 13696,
            "model_max_length": 4096,
            "model_type": "baichuan",
            "num_attention_heads": 40,
            "num_hidden_layers": 40,
            "tie_word_embeddings": False,
            "vocab_size": 125696,
        }
    )
    assert baichuan.max_position_embeddings == 4096 and baichuan.num_kv_heads == 40
    assert same_facts(baichuan, MODEL_CATALOG["Baichuan2-13B"])
    chatglm3 = model_from_config(
        {**GLM_4_9B_CHAT_CONFIG, "num_layers": 28, "padded_vocab_size": 65024, "seq_length": 8192}
    )
    assert same_facts(chatglm3, MODEL_CATALOG["ChatGLM3-6B"])


def test_sliding_window_models_are_flagged_approximate() -> None:
    mistral_7b = {
        "architectures": ["MistralForCausalLM"],
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "max_position_embeddings": 32768,
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "sliding_window": 4096,
        "vocab_size": 32000,
    }
    spec = model_from_config(mistral_7b, name="Mistral-7B-v0.1")
    assert spec.sliding_window == 4096
    result = plan(PlanRequest(model=spec, gpu=H100, gpus_per_node=8))
    assert result.fits and any(reason.startswith("approximate: ") for reason in result.reasons)
    qwen25 = model_from_config({**mistral_7b, "use_sliding_window": False, "sliding_window": 131072})
    assert qwen25.sliding_window is None


def test_multimodal_text_config_is_read() -> None:
    spec = model_from_config({"architectures": ["Mistral3ForConditionalGeneration"], "text_config": LLAMA_31_8B_CONFIG})
    assert spec.hidden_size == 4096 and spec.architecture == "Mistral3ForConditionalGeneration"


def test_missing_keys_name_the_key_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in LLAMA_31_8B_CONFIG.items() if k != "num_attention_heads"}))
    with pytest.raises(CapacityError, match=r"config file .*config\.json: required key 'num_attention_heads'"):
        model_from_config(path)
    no_context = {k: v for k, v in LLAMA_31_8B_CONFIG.items() if k != "max_position_embeddings"}
    with pytest.raises(CapacityError, match=r"'max_position_embeddings' .*seq_length.*model_max_length"):
        model_from_config(no_context)
    with pytest.raises(CapacityError, match="does not exist"):
        model_from_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CapacityError, match="not a readable JSON file"):
        model_from_config(tmp_path / "bad.json")


# --- resolve_model ----------------------------------------------------------------------------------------------------


def test_resolve_model_by_name_and_hf_id() -> None:
    assert resolve_model("llama-3.1-8b", None) is MODEL_CATALOG["Llama-3.1-8B"]
    assert resolve_model("meta-llama/Llama-3.1-8B-Instruct", None) is MODEL_CATALOG["Llama-3.1-8B"]
    assert resolve_model("Qwen/Qwen3-32B", None) is MODEL_CATALOG["Qwen3-32B"]
    assert resolve_model("THUDM/glm-4-9b-chat", None) is MODEL_CATALOG["GLM-4-9B"]
    with pytest.raises(CapacityError, match=r"'Falcon-40B' is not in the catalog \(Llama-3\.1-8B.*config\.json"):
        resolve_model("Falcon-40B", None)
    with pytest.raises(CapacityError, match=r"config\.json"):
        resolve_model(None, None)


def test_catalog_specs_are_frozen() -> None:
    spec = MODEL_CATALOG["Llama-3.1-8B"]
    with pytest.raises(AttributeError):
        spec.num_layers = 1  # type: ignore[misc]
    assert replace(spec, max_position_embeddings=8192).max_position_embeddings == 8192
