"""VllmService under mocks: single node and multi-node, both storage modes, integrity, TLS, scaling, hardening."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.vllm import (
    Autoscaling,
    Benchmark,
    GpuScheduling,
    ModelStore,
    ServingTls,
    VllmService,
    VllmServiceArgs,
    check_extra_args,
)
from components.vllm_flags import is_vllm_flag
from infra.offline import Recording
from infra.tools.checks import run_resource_rules, validate_schemas
from policies.base import pod_templates
from policies.pack import policy_config
from tests.conftest import masked_keys, run

SHA = "ab" * 32


def base(**kw: Any) -> VllmServiceArgs:
    args: dict[str, Any] = {
        "name": "llama-8b",
        "namespace": "llm-inference",
        "instance": "bank",
        "image": "harbor.bank.internal/platform/vllm/vllm-openai:v0.33.0",
        "served_model_name": "llama-8b",
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "replicas": 2,
        "max_model_len": 8192,
        "gpu_memory_utilization": 0.92,
        "max_num_seqs": 256,
        "scheduling": GpuScheduling(
            node_selector={"privatellm.io/gpu-pool": "h100"},
            tolerations=[
                {"key": "privatellm.io/gpu-pool", "operator": "Equal", "value": "h100", "effect": "NoSchedule"}
            ],
            gpus_per_node=8,
        ),
        "store": ModelStore(kind="pvc", path="llama-8b", claim_name="llama-8b-weights", size="40Gi"),
        "weight_bytes": 16 * 10**9,
        "gateway_namespace": "llm-gateway",
        "monitoring_namespace": "llm-monitoring",
        "integrity_manifest": f"{SHA}  model.safetensors\n",
    }
    args.update(kw)
    return VllmServiceArgs(**args)


def s3_store(**kw: Any) -> ModelStore:
    fields: dict[str, Any] = {
        "kind": "s3",
        "path": "s3://models/llama-70b",
        "s3_endpoint": "https://minio.bank.internal:9000",
        "s3_access_key_id": pulumi.Output.secret("AKIAEXAMPLE"),
        "s3_secret_access_key": pulumi.Output.secret("s3cr3t"),
        "s3_egress_cidrs": ["10.20.0.0/24"],
        "bandwidth_gbps": 2.0,
    }
    fields.update(kw)
    return ModelStore(**fields)


def multi(**kw: Any) -> VllmServiceArgs:
    return base(
        name="llama-405b",
        served_model_name="llama-405b",
        tensor_parallel_size=8,
        pipeline_parallel_size=2,
        replicas=1,
        weight_bytes=810 * 10**9,
        store=s3_store(),
        **kw,
    )


TLS = ServingTls(secret_name="llama-tls", probe_client_secret="llama-probe-tls", metrics_client_secret="prom-client")


def record(args: VllmServiceArgs) -> Recording:
    return run(program=lambda: VllmService(args.name, args))


def server(pod_spec: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in pod_spec["containers"] if c["name"] == "vllm"]
    return container


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_single_node_deployment() -> None:
    rec = record(base())
    deployment = rec.one("Deployment").inputs
    assert not rec.of_kind("LeaderWorkerSet")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    c = server(pod)
    args = c["args"]
    assert c["command"] == ["vllm", "serve"]
    assert args[0] == "/models/llama-8b"
    assert flag(args, "--tensor-parallel-size") == "1"
    assert flag(args, "--pipeline-parallel-size") == "1"
    assert flag(args, "--max-model-len") == "8192"
    assert flag(args, "--gpu-memory-utilization") == "0.92"
    assert flag(args, "--served-model-name") == "llama-8b"
    assert "--enable-prefix-caching" in args and "--trust-remote-code" not in args
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"privatellm.io/gpu-pool": "h100"}
    assert pod["tolerations"][0]["key"] == "privatellm.io/gpu-pool"
    # A full pool: roll one pod at a time, never ask for a surge GPU.
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert rec.one("Service").inputs["spec"]["ports"][0]["port"] == 8000
    assert rec.one("PodDisruptionBudget").inputs["spec"]["maxUnavailable"] == 1


def test_surge_when_the_pool_has_room() -> None:
    spec = record(base(surge_allowed=True)).one("Deployment").inputs["spec"]
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_every_rendered_flag_exists_in_the_pinned_release() -> None:
    for args in (base(tls=TLS, kv_cache_dtype="fp8", quantization="fp8", prefix_caching=False), multi(tls=TLS)):
        rec = record(args)
        for r in rec.kubernetes_objects():
            for template in pod_templates(r.type, r.inputs):
                for c in template.spec["containers"]:
                    if c["command"] != ["vllm", "serve"]:
                        continue
                    flags = [a for a in c["args"] if a.startswith("--")]
                    assert flags and all(is_vllm_flag(f) for f in flags), flags
                    assert ("--disable-prefix-caching" in flags) == (not args.prefix_caching)


def test_pod_is_hardened_and_passes_every_pod_security_rule() -> None:
    rec = record(base(tls=TLS, benchmark=Benchmark([1, 8], 100, 512, 128)))
    config = policy_config(
        "1.31",
        allowed_registries=["harbor.bank.internal"],
        immutable_repositories=["harbor.bank.internal/platform"],
    )
    results = run_resource_rules(rec, config)
    assert results and all(r.passed for r in results), [r for r in results if not r.passed]
    pod = rec.one("Deployment").inputs["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] >= 10000
    for c in [*pod["containers"], *pod["initContainers"]]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["runAsUser"] >= 10000
        assert "limits" in c["resources"] and "requests" in c["resources"]
    env = {e["name"]: e.get("value") for e in server(pod)["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert all("hostPath" not in v for v in pod["volumes"])
    mounts = {m["mountPath"] for m in server(pod)["volumeMounts"]}
    assert {"/home/vllm", "/tmp", "/dev/shm"} <= mounts
    assert rec.one("ServiceAccount").inputs["automountServiceAccountToken"] is False


def test_shm_grows_with_tensor_parallelism() -> None:
    pod = record(base(tensor_parallel_size=4)).one("Deployment").inputs["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]["sizeLimit"] == "8Gi"
    assert server(pod)["resources"]["limits"]["nvidia.com/gpu"] == "4"


def test_pvc_cache_is_retained_on_delete_and_mounted_read_only() -> None:
    rec = record(base())
    [pvc] = rec.of_kind("PersistentVolumeClaim")
    assert pvc.options["retainOnDelete"] is True
    assert pvc.inputs["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert pvc.inputs["spec"]["resources"]["requests"]["storage"] == "40Gi"
    pod = rec.one("Deployment").inputs["spec"]["template"]["spec"]
    weights = next(v for v in pod["volumes"] if v["name"] == "weights")
    assert weights["persistentVolumeClaim"] == {"claimName": "llama-8b-weights", "readOnly": True}
    assert next(m for m in server(pod)["volumeMounts"] if m["name"] == "weights")["readOnly"] is True


def test_existing_claim_is_used_not_created() -> None:
    rec = record(base(store=ModelStore(kind="pvc", path="m", claim_name="shared-models", create_claim=False)))
    assert not rec.of_kind("PersistentVolumeClaim")
    pod = rec.one("Deployment").inputs["spec"]["template"]["spec"]
    assert (
        next(v for v in pod["volumes"] if v["name"] == "weights")["persistentVolumeClaim"]["claimName"]
        == "shared-models"
    )


def test_s3_store_streams_with_runai_and_keeps_credentials_in_a_secret() -> None:
    rec = record(base(store=s3_store(path="s3://models/llama-8b")))
    assert not rec.of_kind("PersistentVolumeClaim")
    [secret] = rec.of_kind("Secret")
    assert masked_keys(secret) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    pod = rec.one("Deployment").inputs["spec"]["template"]["spec"]
    c = server(pod)
    assert c["args"][0] == "s3://models/llama-8b"
    assert flag(c["args"], "--load-format") == "runai_streamer"
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "https://minio.bank.internal:9000"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[key]
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "llama-8b-s3-credentials", "key": key}
    # Egress only to the model store (DNS comes from the namespace's own allow rule).
    serving = next(p for p in rec.of_kind("NetworkPolicy") if p.object_name == "llama-8b-serving").inputs["spec"]
    assert serving["policyTypes"] == ["Ingress", "Egress"]
    [egress] = serving["egress"]
    assert egress["to"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    assert egress["ports"] == [{"protocol": "TCP", "port": 9000}]


def test_integrity_init_container_verifies_before_the_server_starts() -> None:
    rec = record(base())
    [cm] = [r for r in rec.of_kind("ConfigMap") if r.object_name == "llama-8b-integrity"]
    assert cm.inputs["data"]["sha256sums"] == f"{SHA}  model.safetensors\n"
    pod = rec.one("Deployment").inputs["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["name"] == "verify-weights"
    assert init["command"] == [
        "python3",
        "/opt/privatellm/verify_weights.py",
        "--manifest",
        "/etc/privatellm/integrity/sha256sums",
        "--root",
        "/models/llama-8b",
    ]
    scripts = next(r for r in rec.of_kind("ConfigMap") if r.object_name == "llama-8b-scripts")
    assert "INTEGRITY FAILURE" in scripts.inputs["data"]["verify_weights.py"]


def test_no_manifest_no_init_container() -> None:
    pod = record(base(integrity_manifest=None)).one("Deployment").inputs["spec"]["template"]["spec"]
    assert "initContainers" not in pod


def test_network_policy_admits_only_gateway_and_monitoring() -> None:
    rec = record(base())
    [serving] = rec.of_kind("NetworkPolicy")
    spec = serving.inputs["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    peers = spec["ingress"][0]["from"]
    assert [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers] == [
        "llm-gateway",
        "llm-monitoring",
    ]
    assert spec["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]


def test_network_policy_admits_only_the_clients_the_stack_has() -> None:
    """No gateway: only monitoring. Neither: no ingress rule at all (a rule without `from` admits every source)."""
    [serving] = record(base(gateway_namespace=None)).of_kind("NetworkPolicy")
    [rule] = serving.inputs["spec"]["ingress"]
    assert [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["from"]] == [
        "llm-monitoring"
    ]
    [closed] = record(base(gateway_namespace=None, monitoring_namespace=None)).of_kind("NetworkPolicy")
    assert closed.inputs["spec"]["policyTypes"] == ["Ingress"]
    assert not closed.inputs["spec"].get("ingress")


def test_tls_flags_and_probes_that_work_with_client_certificates() -> None:
    rec = record(base(tls=TLS))
    pod = rec.one("Deployment").inputs["spec"]["template"]["spec"]
    c = server(pod)
    args = c["args"]
    assert flag(args, "--ssl-certfile") == "/etc/vllm/tls/tls.crt"
    assert flag(args, "--ssl-keyfile") == "/etc/vllm/tls/tls.key"
    assert flag(args, "--ssl-ca-certs") == "/etc/vllm/tls/ca.crt"
    assert flag(args, "--ssl-cert-reqs") == "2"
    assert "--enable-ssl-refresh" in args
    # kubelet HTTPS probes present no client certificate: readiness/startup run the probe with one.
    assert "--cert" in c["readinessProbe"]["exec"]["command"]
    assert c["startupProbe"]["exec"]["command"] == c["readinessProbe"]["exec"]["command"]
    assert c["livenessProbe"] == {
        "tcpSocket": {"port": 8000},
        "periodSeconds": 20,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    monitor = rec.one("ServiceMonitor").inputs["spec"]["endpoints"][0]
    assert monitor["scheme"] == "https"
    assert monitor["tlsConfig"]["cert"]["secret"]["name"] == "prom-client"


def test_startup_probe_is_sized_from_weights_and_bandwidth() -> None:
    small = record(base(weight_bytes=16 * 10**9)).one("Deployment").inputs
    big = record(base(weight_bytes=160 * 10**9)).one("Deployment").inputs
    threshold = lambda d: server(d["spec"]["template"]["spec"])["startupProbe"]["failureThreshold"]  # noqa: E731
    # 16 GB at 1 GB/s: 2*16 + 180 s = 212 s → 22 periods of 10 s; 160 GB: 2*160 + 180 = 500 s → 50.
    assert threshold(small) == 22
    assert threshold(big) == 50


def test_multi_node_leader_worker_set() -> None:
    rec = record(multi())
    assert not rec.of_kind("Deployment")
    lws = rec.one("LeaderWorkerSet").inputs["spec"]
    group = lws["leaderWorkerTemplate"]
    assert group["size"] == 2
    assert group["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = server(group["leaderTemplate"]["spec"])["args"]
    worker = server(group["workerTemplate"]["spec"])["args"]
    assert flag(leader, "--nnodes") == "2" and flag(leader, "--node-rank") == "0"
    assert flag(leader, "--master-addr") == "$(LWS_LEADER_ADDRESS)"
    assert flag(worker, "--node-rank") == "$(LWS_WORKER_INDEX)" and "--headless" in worker
    assert "--headless" not in leader
    assert flag(leader, "--tensor-parallel-size") == "8" and flag(leader, "--pipeline-parallel-size") == "2"
    env = {e["name"]: e for e in server(group["workerTemplate"]["spec"])["env"]}
    assert env["VLLM_HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    # Only the leader serves the API.
    assert rec.one("Service").inputs["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"
    group_policy = next(p for p in rec.of_kind("NetworkPolicy") if p.object_name == "llama-405b-group").inputs["spec"]
    selector = {"podSelector": {"matchLabels": {"leaderworkerset.sigs.k8s.io/name": "llama-405b"}}}
    assert group_policy["ingress"] == [{"from": [selector]}]
    assert group_policy["egress"] == [{"to": [selector]}]


def test_custom_resources_validate_against_upstream_schemas(crds: Path) -> None:
    auto = Autoscaling(min_replicas=1, max_replicas=2, waiting_threshold=5, prometheus_url="http://prometheus:9090")
    for args in (multi(tls=TLS, autoscaling=auto), base(autoscaling=auto, tls=TLS)):
        results = validate_schemas(record(args), "1.31", crds)
        failed = [r for r in results if not r.passed]
        assert not failed, failed
        assert {r.resource.split("/")[0] for r in results if r.policy == "crd-schema"} >= {
            "ServiceMonitor",
            "ScaledObject",
        }


def test_keda_scales_on_queued_requests() -> None:
    auto = Autoscaling(min_replicas=1, max_replicas=4, waiting_threshold=5, prometheus_url="http://prom:9090")
    rec = record(base(autoscaling=auto))
    scaled = rec.one("ScaledObject").inputs["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-8b"}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 4)
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    assert (
        trigger["metadata"]["query"]
        == 'sum(vllm:num_requests_waiting{namespace="llm-inference",model_name="llama-8b"})'
    )
    assert trigger["metadata"]["threshold"] == "5"
    # KEDA owns the replica count: the program never sets (and so never resets) spec.replicas
    assert "replicas" not in rec.one("Deployment").inputs["spec"]
    assert "replicas" not in record(multi(autoscaling=auto)).one("LeaderWorkerSet").inputs["spec"]
    assert not [r for r in rec.resources if "HorizontalPodAutoscaler" in r.type]
    lws_scaled = record(multi(autoscaling=auto)).one("ScaledObject").inputs["spec"]["scaleTargetRef"]
    assert lws_scaled["kind"] == "LeaderWorkerSet"


def test_benchmark_job_runs_vllm_bench_serve_for_each_concurrency() -> None:
    rec = record(base(benchmark=Benchmark([1, 16], 100, 512, 128), tls=TLS))
    job = rec.one("Job").inputs["spec"]["template"]["spec"]
    script = job["containers"][0]["command"][2]
    assert script.count("vllm bench serve") == 2
    assert "--max-concurrency 1 " in script and "--max-concurrency 16 " in script
    assert "--dataset-name random" in script and "--metric-percentiles 50,95,99" in script
    # mTLS: the tool goes through the loopback forwarder holding the client certificate.
    assert "tls_forward.py" in script and "--base-url http://127.0.0.1:18000" in script
    bench_policy = next(p for p in rec.of_kind("NetworkPolicy") if p.object_name == "llama-8b-bench").inputs["spec"]
    assert bench_policy["egress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]


@pytest.mark.parametrize(
    ("extra", "trust", "message"),
    [
        (["--trust-remote-code"], False, "--trust-remote-code is not allowed"),
        (["--api-key=abc"], False, "--api-key is not allowed"),
        (["--ssl-cert-reqs", "0"], False, "--ssl-cert-reqs is not allowed"),
        (["--tensor-parallel-size", "2"], False, "--tensor-parallel-size is set by the platform"),
        (["--swap-space", "4"], False, "--swap-space is not an option of vLLM v0.33.0"),
        (["-tp", "2"], False, "-tp: use the long form"),
    ],
)
def test_extra_args_escape_hatch_refuses_what_breaks_the_baseline(extra: list[str], trust: bool, message: str) -> None:
    assert any(message in p for p in check_extra_args(extra, trust))
    with pytest.raises(ValueError, match="extra_args"):
        base(extra_args=extra, trust_remote_code=trust)


def test_extra_args_that_are_fine() -> None:
    assert check_extra_args(["--max-num-batched-tokens", "8192", "--enable-chunked-prefill"], False) == []
    assert check_extra_args(["--compilation-config.level=3", "--no-enable-chunked-prefill"], False) == []
    assert check_extra_args(["--trust-remote-code"], True) == []
    args = record(base(trust_remote_code=True)).one("Deployment").inputs["spec"]["template"]["spec"]
    assert "--trust-remote-code" in server(args)["args"]


def test_max_output_tokens_caps_every_request_at_the_server() -> None:
    args = server(record(base(max_output_tokens=2048)).one("Deployment").inputs["spec"]["template"]["spec"])["args"]
    assert json.loads(flag(args, "--override-generation-config") or "{}") == {"max_new_tokens": 2048}
    uncapped = server(record(base()).one("Deployment").inputs["spec"]["template"]["spec"])["args"]
    assert "--override-generation-config" not in uncapped
    with pytest.raises(ValueError, match="set by the platform to cap max_tokens"):
        base(max_output_tokens=2048, extra_args=["--override-generation-config", '{"temperature": 0.2}'])
    with pytest.raises(ValueError, match="max_output_tokens=0 must be at least 1"):
        base(max_output_tokens=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tensor_parallel_size": 16}, "exceeds the pool's 8 GPUs per node"),
        ({"image": "harbor.bank.internal/platform/vllm/vllm-openai:latest"}, "pinned tag"),
        ({"name": "Llama"}, "not a DNS-1123 label"),
        ({"store": ModelStore(kind="pvc", path="m", create_claim=False)}, "needs claim_name"),
        ({"store": s3_store(s3_egress_cidrs=[])}, "needs s3_egress_cidrs"),
        ({"gpu_memory_utilization": 1.2}, "between 0 and 1"),
    ],
)
def test_bad_args_fail_before_anything_is_registered(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(base(), **change)
