"""Models in stack files, end to end: sizing, refusals before anything is created, and what gets rendered."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from infra.capacity import GPU_CATALOG, MODEL_CATALOG
from infra.cli import app
from infra.offline import OfflineError, Recording, load_stack_config, run_program, write_render
from infra.tools.checks import check_recording, spec_of
from tests.conftest import ROOT, masked_keys
from tests.infra.test_capacity import REQUIRED_JSON_KEYS
from tests.platforms import model, render

runner = CliRunner()


def platform(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "bank",
        "profile": "baseline",
        "registry": {"host": "harbor.bank.internal"},
        "node_pools": [{"name": "h100", "gpu": "H100-80GB-SXM", "gpus_per_node": 8, "nodes": 2}],
        "models": [{"name": "llama-8b", "model": "Llama-3.1-8B", "pool": "h100", "max_model_len": 8192}],
    }
    doc.update(kw)
    return doc


def problems_of(doc: dict[str, Any], project: Path = ROOT, **config: Any) -> str:
    with pytest.raises(OfflineError) as info:
        render(doc, project, **config)
    return str(info.value)


def kinds(rec: Recording) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in rec.kubernetes_objects():
        if r.kind == "Deployment" and r.namespace != "llm-inference":
            continue  # model servers only (the logging stack has its exporter)
        out.setdefault(r.kind, []).append(r)
    return out


def test_a_model_becomes_a_deployment_through_the_customer_registry() -> None:
    rec = render(platform())
    [deployment] = kinds(rec)["Deployment"]
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "harbor.bank.internal/platform/vllm/vllm-openai:v0.33.0"
    assert deployment.namespace == "llm-inference"
    # Plenty of room on a 16-GPU pool: rolling updates may surge.
    assert deployment.inputs["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 1
    [pvc] = kinds(rec)["PersistentVolumeClaim"]
    assert pvc.options["retainOnDelete"] is True
    # 14.96 GiB of weights → 1.25 x 14.96 + 10 → 29 GiB.
    assert pvc.inputs["spec"]["resources"]["requests"]["storage"] == "29Gi"
    assert "lws" not in {c.name for c in rec.charts()}


def test_multi_node_model_brings_the_leader_worker_set_controller(tmp_path: Path) -> None:
    doc = platform(models=[{"name": "deepseek-v3", "model": "DeepSeek-V3", "pool": "h100", "max_model_len": 16384}])
    rec = render(doc)
    [lws] = kinds(rec)["LeaderWorkerSet"]
    assert lws.inputs["spec"]["leaderWorkerTemplate"]["size"] == 2
    [chart] = [c for c in rec.charts() if c.name == "lws"]
    assert chart.inputs["chart"] == "oci://registry.k8s.io/lws/charts/lws"
    assert chart.inputs["version"] == "0.9.0"
    assert chart.inputs["namespace"] == "llm-operators"
    values = chart.inputs["values"]
    assert values["image"]["manager"]["repository"] == "harbor.bank.internal/platform/lws/lws"
    assert values["securityContext"]["allowPrivilegeEscalation"] is False
    written = write_render(rec, tmp_path)
    assert tmp_path / "charts" / "lws.yaml" in written.charts


def test_autoscaling_brings_keda_with_restricted_values() -> None:
    doc = platform(models=[model(autoscaling={"enabled": True, "min_replicas": 1, "max_replicas": 3})])
    rec = render(doc)
    [keda] = [c for c in rec.charts() if c.name == "keda"]
    values = keda.inputs["values"]
    assert values["image"]["keda"] == {
        "registry": "harbor.bank.internal",
        "repository": "platform/kedacore/keda",
        "tag": "2.20.2",
    }
    assert all(v["runAsNonRoot"] for v in values["podSecurityContext"].values())
    [scaled] = kinds(rec)["ScaledObject"]
    assert scaled.inputs["spec"]["maxReplicaCount"] == 3
    # The controllers' namespace reaches the API server and Prometheus, nothing else.
    policies = {p.object_name: p.inputs["spec"] for p in kinds(rec)["NetworkPolicy"] if p.namespace == "llm-operators"}
    assert {"default-deny-all", "allow-dns-egress", "allow-api-server", "allow-same-namespace"} <= set(policies)
    assert policies["allow-egress-to-llm-monitoring"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 9090}]


def test_s3_store_from_secure_config() -> None:
    storage = {
        "type": "s3",
        "endpoint": "https://minio.bank.internal:9000",
        "bucket": "models",
        "prefix": "llama-3.1-8b",
        "access_key_id_secret": "modelStoreAccessKey",
        "secret_access_key_secret": "modelStoreSecretKey",
        "egress_cidrs": ["10.30.0.0/24"],
    }
    rec = render(
        platform(models=[model(storage=storage)]),
        **{"privatellm:modelStoreAccessKey": {"secure": "v1:a"}, "privatellm:modelStoreSecretKey": {"secure": "v1:b"}},
    )
    [secret] = [s for s in kinds(rec)["Secret"] if s.object_name == "llama-8b-s3-credentials"]
    assert masked_keys(secret) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert secret.inputs["stringData"]["AWS_SECRET_ACCESS_KEY"] == "[secure:privatellm:modelStoreSecretKey]"
    args = kinds(rec)["Deployment"][0].inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "s3://models/llama-3.1-8b"
    assert "runai_streamer" in args


def test_s3_credentials_must_be_secure_config() -> None:
    storage = {
        "type": "s3",
        "endpoint": "https://minio.bank.internal:9000",
        "bucket": "models",
        "access_key_id_secret": "ak",
        "secret_access_key_secret": "sk",
        "egress_cidrs": ["10.30.0.0/24"],
    }
    message = problems_of(
        platform(models=[model(storage=storage)]), **{"privatellm:ak": "plain", "privatellm:sk": "plain"}
    )
    assert "models[0].storage.access_key_id_secret names a config key that is stored in plain text" in message
    assert "'ak'" not in message


def test_custom_config_json_and_manifest_file(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": 4096,
                "intermediate_size": 14336,
                "num_attention_heads": 32,
                "num_hidden_layers": 32,
                "num_key_value_heads": 8,
                "vocab_size": 128256,
                "max_position_embeddings": 131072,
                "tie_word_embeddings": False,
                "torch_dtype": "bfloat16",
            }
        )
    )
    shard = hashlib.sha256(b"weights").hexdigest()
    (tmp_path / "models" / "sha256sums").write_text(f"{shard}  model.safetensors\n")
    doc = platform(
        profile="finance",
        models=[
            {
                "name": "bank-finetune",
                "config_path": "models/config.json",
                "pool": "h100",
                "max_model_len": 8192,
                "integrity": {"manifest_file": "models/sha256sums"},
            }
        ],
    )
    rec = render(doc, project=tmp_path)
    [cm] = [c for c in kinds(rec)["ConfigMap"] if c.object_name == "bank-finetune-integrity"]
    assert cm.inputs["data"]["sha256sums"] == f"{shard}  model.safetensors\n"
    init = kinds(rec)["Deployment"][0].inputs["spec"]["template"]["spec"]["initContainers"][0]
    assert init["name"] == "verify-weights"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            {
                "node_pools": [{"name": "l4", "gpu": "L4", "gpus_per_node": 1, "nodes": 1}],
                "models": [{"name": "llama-70b", "model": "Llama-3.1-70B", "pool": "l4", "max_model_len": 8192}],
            },
            "models[0] (llama-70b: Llama-3.1-70B on L4 x1/node): ",
            id="does-not-fit",
        ),
        pytest.param({"models": [model(model="Llama-9-1T")]}, "models[0].model: ", id="unknown-model"),
        pytest.param({"models": [model(tensor_parallel_size=3)]}, "does not divide", id="tp-not-dividing-heads"),
        pytest.param({"models": [model(tensor_parallel_size=16)]}, "16", id="tp-above-gpus-per-node"),
        pytest.param(
            {"models": [model(pool="a100")]},
            "models[0].pool='a100' is not a node pool of this stack (pools: h100)",
            id="unknown-pool",
        ),
        pytest.param(
            {"node_pools": [{"name": "h100", "gpu": "H800", "gpus_per_node": 8, "nodes": 1}]},
            "node_pools[0].gpu='H800'",
            id="unknown-gpu",
        ),
        pytest.param({"registry": None}, "privatellm:platform.registry is not set", id="no-registry"),
        pytest.param(
            {"profile": "finance"},
            "models[0].integrity is required by the finance profile",
            id="finance-needs-integrity",
        ),
        pytest.param(
            {"models": [model(extra_args=["--trust-remote-code"])]},
            "models[0].extra_args: --trust-remote-code is not allowed",
            id="trust-remote-code",
        ),
        pytest.param(
            {
                "models": [
                    model(name="a", replicas=2, tensor_parallel_size=8),
                    model(name="b", replicas=1, tensor_parallel_size=8),
                ]
            },
            "node pool 'h100' has 16 GPUs (2 nodes x 8 H100-80GB-SXM) but its models need 24",
            id="more-gpus-than-the-pool",
        ),
        pytest.param({"models": [model(max_model_len=1_000_000)]}, "max_model_len", id="context-beyond-model"),
        pytest.param(
            {"models": [model(), model()]}, "models[1].name='llama-8b' is used by another model", id="duplicate-model"
        ),
    ],
)
def test_refusals_come_before_anything_is_created(change: dict[str, Any], expected: str) -> None:
    doc = platform(**change)
    if doc.get("registry") is None:
        doc.pop("registry")
    message = problems_of(doc)
    assert expected in message, message


def test_refusal_carries_the_numbers() -> None:
    doc = platform(
        node_pools=[{"name": "l4", "gpu": "L4", "gpus_per_node": 1, "nodes": 1}],
        models=[{"name": "llama-70b", "model": "Llama-3.1-70B", "pool": "l4", "max_model_len": 8192}],
    )
    message = problems_of(doc)
    assert "GiB" in message and "L4" in message


@pytest.mark.parametrize("stack", ["dev", "finance-prod", "healthcare-prod"])
def test_shipped_stacks_with_models_pass_the_check(stack: str, crds: Path) -> None:
    config = load_stack_config(ROOT, stack)
    rec = run_program(config)
    report = check_recording(rec, spec_of(config), crds)
    assert report.ok, report.mandatory_failures
    assert kinds(rec)["Deployment"]
    for deployment in kinds(rec)["Deployment"]:
        image = deployment.inputs["spec"]["template"]["spec"]["containers"][0]["image"]
        assert not image.startswith("docker.io") and ":latest" not in image


def test_finance_prod_is_sized_by_the_planner() -> None:
    result = runner.invoke(app, ["plan", "--stack", "finance-prod", "--format", "json", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(result.stdout)}
    big = rows["llama-3-3-70b"]
    assert big["tensor_parallel_size"] in (4, 8) and big["fits"]
    assert rows["llama-3-1-8b"]["tensor_parallel_size"] == 1
    rec = run_program(load_stack_config(ROOT, "finance-prod"))
    args = {
        d.object_name: d.inputs["spec"]["template"]["spec"]["containers"][0]["args"] for d in kinds(rec)["Deployment"]
    }
    tp = args["llama-3-3-70b"][args["llama-3-3-70b"].index("--tensor-parallel-size") + 1]
    assert int(tp) == big["tensor_parallel_size"]


@pytest.mark.parametrize("name", sorted(MODEL_CATALOG))
def test_what_if_json_for_every_catalog_model(name: str) -> None:
    result = runner.invoke(
        app, ["plan", "--model", name, "--gpu", "H100-80GB-SXM", "--max-model-len", "8192", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= REQUIRED_JSON_KEYS
    assert data["model"] == name and isinstance(data["fits"], bool)


def test_what_if_infeasible_prints_fits_false_and_exits_0_in_json() -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--model",
            "Llama-3.1-70B",
            "--gpu",
            "L4",
            "--gpus-per-node",
            "1",
            "--tensor-parallel-size",
            "1",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["fits"] is False and data["reasons"]
    table = runner.invoke(
        app, ["plan", "--model", "Llama-3.1-70B", "--gpu", "L4", "--gpus-per-node", "1", "--tensor-parallel-size", "1"]
    )
    assert table.exit_code == 1


def test_what_if_from_a_config_json(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "architectures": ["ChatGLMModel"],
                "num_layers": 40,
                "hidden_size": 4096,
                "num_attention_heads": 32,
                "multi_query_group_num": 2,
                "kv_channels": 128,
                "ffn_hidden_size": 13696,
                "padded_vocab_size": 151552,
                "seq_length": 131072,
            }
        )
    )
    result = runner.invoke(
        app,
        ["plan", "--model-config", str(config), "--gpu", "A100-80GB", "--max-model-len", "32768", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["fits"] is True and data["tensor_parallel_size"] == 1
    # GLM KV: 2 x 40 layers x 2 kv heads x 128 x 2 bytes.
    assert data["kv_bytes_per_token_per_gpu"] == 2 * 40 * 2 * 128 * 2


@pytest.mark.parametrize("gpu", sorted(GPU_CATALOG))
def test_what_if_on_every_gpu(gpu: str) -> None:
    result = runner.invoke(
        app, ["plan", "--model", "Qwen3-8B", "--gpu", gpu, "--max-model-len", "4096", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["gpu"] == gpu


def test_plan_errors() -> None:
    assert runner.invoke(app, ["plan", "--model", "Nope-1B", "--gpu", "H100-80GB-SXM"]).exit_code == 2
    assert runner.invoke(app, ["plan", "--model", "Qwen3-8B"]).exit_code == 2
    bad_gpu = runner.invoke(app, ["plan", "--model", "Qwen3-8B", "--gpu", "H800"])
    assert bad_gpu.exit_code == 2 and "H800" in bad_gpu.output


def test_stack_check_cli_passes_for_finance_prod(crds: Path) -> None:
    result = runner.invoke(
        app, ["check", "--stack", "finance-prod", "--crd-schemas", str(crds), "--project-dir", str(ROOT)]
    )
    assert result.exit_code == 0, result.output


def test_dev_stack_document_is_valid_yaml_with_comments() -> None:
    for stack in ("dev", "finance-prod"):
        text = (ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text()
        assert text.startswith("#")
        assert "privatellm:platform" in yaml.safe_load(text)["config"]
