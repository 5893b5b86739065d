"""`infra.tools.doctor`: the real kubernetes client against a fake API server on 127.0.0.1, and boto3 against moto."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
from kubernetes.client import ApiClient, Configuration, CoreV1Api, StorageV1Api
from moto import mock_aws

from infra.config import POOL_LABEL, PlatformSpec, parse_platform
from infra.tools.doctor import DoctorCheck, format_results, run_doctor
from tests.conftest import fake_aws_environment

H100 = "NVIDIA-H100-80GB-HBM3"
GOOD_DRIVER = "580.95.05"
KMS = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
ROLE = "arn:aws:iam::123456789012:role/gpu-nodes"


# --------------------------------------------------------------------------------------------------------------
# A fake Kubernetes API server
# --------------------------------------------------------------------------------------------------------------


def node(
    name: str,
    labels: dict[str, str] | None = None,
    gpus: str | None = "8",
    product: str | None = H100,
    driver: str | None = GOOD_DRIVER,
    ready: str = "True",
    reason: str = "KubeletReady",
    unschedulable: bool = False,
) -> dict[str, Any]:
    all_labels = {"kubernetes.io/hostname": name, **(labels or {})}
    if product is not None:
        all_labels["nvidia.com/gpu.product"] = product
    if driver is not None:
        all_labels["nvidia.com/cuda.driver-version.full"] = driver
    allocatable = {"cpu": "96", "memory": "1Ti", "pods": "110"}
    if gpus is not None:
        allocatable["nvidia.com/gpu"] = gpus
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {"unschedulable": unschedulable},
        "status": {
            "allocatable": allocatable,
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "Ready", "status": ready, "reason": reason, "message": f"kubelet says {reason}"},
            ],
        },
    }


def storage_class(name: str, default: bool = False) -> dict[str, Any]:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {"metadata": {"name": name, "annotations": annotations}, "provisioner": "csi.example.com"}


class FakeCluster:
    """What the fake API server answers; tests edit it before running the doctor."""

    def __init__(self) -> None:
        self.minor = "33"
        self.nodes: dict[str, dict[str, Any]] = {}
        self.classes: list[dict[str, Any]] = []
        self.forbidden_node_list = False
        self.requests: list[str] = []
        self.host = ""

    def add(self, *nodes: dict[str, Any]) -> None:
        for n in nodes:
            self.nodes[n["metadata"]["name"]] = n

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        path = path.rstrip("/")  # the client asks for /version/
        self.requests.append(path)
        if path == "/version":
            return 200, {
                "major": "1",
                "minor": self.minor,
                "gitVersion": f"v1.{self.minor.rstrip('+')}.2",
                "gitCommit": "abc",
                "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.23",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if path == "/api/v1/nodes":
            if self.forbidden_node_list:
                return 403, status(403, "Forbidden", 'nodes is forbidden: User "deployer" cannot list resource')
            wanted = dict(term.split("=", 1) for term in query.get("labelSelector", [""])[0].split(",") if "=" in term)
            items = [
                n for n in self.nodes.values() if all(n["metadata"]["labels"].get(k) == v for k, v in wanted.items())
            ]
            return 200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": items}
        if path.startswith("/api/v1/nodes/"):
            name = path.rsplit("/", 1)[1]
            if name in self.nodes:
                return 200, self.nodes[name]
            return 404, status(404, "NotFound", f'nodes "{name}" not found')
        if path == "/apis/storage.k8s.io/v1/storageclasses":
            return 200, {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClassList", "items": self.classes}
        return 404, status(404, "NotFound", "the server could not find the requested resource")


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "code": code,
        "message": message,
    }


def _handler(cluster: FakeCluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            code, body = cluster.answer(url.path, parse_qs(url.query))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.host = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def apis(host: str) -> tuple[CoreV1Api, StorageV1Api]:
    api = ApiClient(Configuration(host=host))
    return CoreV1Api(api), StorageV1Api(api)


def doctor(spec: PlatformSpec, fake: FakeCluster, aws_session: Any = None) -> list[DoctorCheck]:
    core, storage = apis(fake.host)
    return run_doctor(spec, core_api=core, storage_api=storage, aws_session=aws_session)


def only(checks: list[DoctorCheck], check: str, target: str | None = None) -> DoctorCheck:
    found = [c for c in checks if c.check == check and (target is None or c.target == target)]
    assert len(found) == 1, f"{check} {target}: {found}"
    return found[0]


def failures(checks: list[DoctorCheck]) -> list[DoctorCheck]:
    return [c for c in checks if not c.passed]


# --------------------------------------------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------------------------------------------


def h100_pool(**extra: Any) -> dict[str, Any]:
    pool = {
        "name": "h100",
        "gpu": "H100-80GB-SXM",
        "gpus_per_node": 8,
        "nodes": 2,
        "onprem": {"node_names": ["gpu-01", "gpu-02"]},
    }
    pool.update(extra)
    return pool


def l40s_pool(**extra: Any) -> dict[str, Any]:
    pool = {"name": "l40s", "gpu": "L40S", "gpus_per_node": 4, "nodes": 2}
    pool.update(extra)
    return pool


def model(name: str, pool: str, **storage: Any) -> dict[str, Any]:
    return {"name": name, "model": "Llama-3.1-8B", "pool": pool, "storage": storage or {"type": "pvc"}}


def stack(pools: list[dict[str, Any]], models: list[dict[str, Any]] | None = None, **top: Any) -> PlatformSpec:
    return parse_platform({"node_pools": pools, "models": models or [], **top})


def healthy(fake: FakeCluster) -> PlatformSpec:
    """Two named H100 nodes, two L40S nodes found by the pool label, and the storage class the model asks for."""
    fake.add(node("gpu-01"), node("gpu-02"))
    l40s = {POOL_LABEL: "l40s"}
    fake.add(
        node("l40s-a", l40s, gpus="4", product="NVIDIA-L40S"), node("l40s-b", l40s, gpus="4", product="NVIDIA-L40S")
    )
    fake.add(node("cpu-01", gpus=None, product=None, driver=None))
    fake.classes = [storage_class("fast-nvme"), storage_class("standard", default=True)]
    return stack(
        [h100_pool(), l40s_pool()],
        [model("llama-70b", "h100", type="pvc", storage_class="fast-nvme", size="500Gi"), model("llama-8b", "l40s")],
    )


# --------------------------------------------------------------------------------------------------------------
# Kubernetes checks
# --------------------------------------------------------------------------------------------------------------


def test_all_green(cluster: FakeCluster) -> None:
    checks = doctor(healthy(cluster), cluster)
    assert failures(checks) == []
    assert all(c.fix == "" for c in checks)
    ids = [c.check for c in checks]
    # 2 named nodes + 1 selector check; 4 nodes x (ready, gpus, product, driver); 1 named class + the default one.
    assert ids.count("pool-nodes") == 3
    for per_node in ("pool-node-ready", "pool-gpus", "pool-gpu-product", "pool-driver"):
        assert ids.count(per_node) == 4
    assert ids.count("storage-class") == 2
    assert "Kubernetes v1.33.2" in only(checks, "kubernetes-api").message
    assert (
        "2 node(s) carry privatellm.io/gpu-pool=l40s (l40s-a, l40s-b)"
        in only(checks, "pool-nodes", "pool l40s").message
    )
    assert "allocatable nvidia.com/gpu=8" in only(checks, "pool-gpus", "pool h100 / node gpu-02").message
    assert "driver 580.95.05" in only(checks, "pool-driver", "pool h100 / node gpu-01").message
    assert (
        "default storage class standard serves models llama-8b"
        in only(checks, "storage-class", "default storage class").message
    )

    result = format_results(checks)
    assert result["summary"] == {"passed": len(checks), "failed": 0, "ok": True}
    assert result["checks"][0] == {
        "check": "kubernetes-api",
        "target": f"cluster {cluster.host}",
        "passed": True,
        "message": checks[0].message,
        "fix": "",
    }
    json.dumps(result)  # JSON-ready


def test_api_unreachable_stops_the_kubernetes_checks() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed now: connections are refused.
    core, storage = apis(f"http://127.0.0.1:{port}")
    checks = run_doctor(stack([h100_pool()]), core_api=core, storage_api=storage)
    assert len(checks) == 1
    (check,) = checks
    assert (check.check, check.passed) == ("kubernetes-api", False)
    assert f"127.0.0.1:{port}" in check.message and "no other Kubernetes check was run" in check.message
    assert "reaches the API server" in check.fix
    assert format_results(checks)["summary"] == {"passed": 0, "failed": 1, "ok": False}


def test_named_node_missing(cluster: FakeCluster) -> None:
    cluster.add(node("gpu-01"), node("gpu-02"))
    spec = stack([h100_pool(nodes=3, onprem={"node_names": ["gpu-01", "gpu-02", "gpu-03"]})])
    checks = doctor(spec, cluster)
    bad = failures(checks)
    assert len(bad) == 1
    assert bad[0].check == "pool-nodes" and bad[0].target == "pool h100 / node gpu-03"
    assert "node gpu-03 does not exist" in bad[0].message
    assert "join node gpu-03 to the cluster, or correct onprem.node_names of pool h100" in bad[0].fix
    # The nodes that exist were still checked.
    assert only(checks, "pool-gpus", "pool h100 / node gpu-02").passed


def test_node_not_ready(cluster: FakeCluster) -> None:
    cluster.add(node("gpu-01"), node("gpu-02", ready="False", reason="KubeletNotReady"))
    checks = doctor(stack([h100_pool()]), cluster)
    assert only(checks, "pool-node-ready", "pool h100 / node gpu-01").passed
    check = only(checks, "pool-node-ready", "pool h100 / node gpu-02")
    assert not check.passed
    assert "Ready=False: KubeletNotReady; kubelet says KubeletNotReady" in check.message
    assert "kubectl describe node gpu-02" in check.fix
    assert [c.target for c in failures(checks)] == ["pool h100 / node gpu-02"]


def test_cordoned_node(cluster: FakeCluster) -> None:
    cluster.add(node("gpu-01"), node("gpu-02", unschedulable=True))
    check = only(doctor(stack([h100_pool()]), cluster), "pool-node-ready", "pool h100 / node gpu-02")
    assert not check.passed and "cordoned" in check.message
    assert check.fix == "`kubectl uncordon gpu-02` once its maintenance is over"


def test_wrong_node_count_for_a_label_selector(cluster: FakeCluster) -> None:
    cluster.add(node("l40s-a", {POOL_LABEL: "l40s"}, gpus="4", product="NVIDIA-L40S"))
    cluster.add(node("other", {POOL_LABEL: "other"}, gpus="4", product="NVIDIA-L40S"))
    checks = doctor(stack([l40s_pool(nodes=3)]), cluster)
    check = only(checks, "pool-nodes", "pool l40s")
    assert not check.passed
    assert check.message == "1 node(s) carry privatellm.io/gpu-pool=l40s (l40s-a); the pool declares nodes=3"
    assert "label 2 more GPU node(s) with `kubectl label node <name> privatellm.io/gpu-pool=l40s`" in check.fix
    assert "set nodes: 1 on pool l40s" in check.fix
    assert "/api/v1/nodes" in cluster.requests


def test_too_many_nodes_for_onprem_node_labels(cluster: FakeCluster) -> None:
    labels = {"gpu": "l40s", "rack": "r7"}
    for name in ("a", "b", "c"):
        cluster.add(node(name, labels, gpus="4", product="NVIDIA-L40S"))
    cluster.add(node("d", {"gpu": "l40s"}, gpus="4", product="NVIDIA-L40S"))  # other rack: not selected
    check = only(doctor(stack([l40s_pool(onprem={"node_labels": labels})]), cluster), "pool-nodes")
    assert not check.passed
    assert check.message.startswith("3 node(s) carry gpu=l40s,rack=r7 (a, b, c)")
    assert "set nodes: 3 on pool l40s, or remove the labels from the 1 node(s)" in check.fix


def test_allocatable_gpus_differ(cluster: FakeCluster) -> None:
    cluster.add(node("gpu-01", gpus="7"), node("gpu-02", gpus=None))
    checks = doctor(stack([h100_pool()]), cluster)
    seven = only(checks, "pool-gpus", "pool h100 / node gpu-01")
    assert not seven.passed
    assert seven.message == "node gpu-01 has allocatable nvidia.com/gpu=7; the pool declares gpus_per_node=8"
    assert "1 GPU(s) are missing on gpu-01" in seven.fix and "gpus_per_node: 7" in seven.fix
    none = only(checks, "pool-gpus", "pool h100 / node gpu-02")
    assert not none.passed and "nvidia.com/gpu=0" in none.message
    assert "NVIDIA device plugin" in none.fix


def test_more_gpus_than_declared_is_a_failure_unless_partitioned(cluster: FakeCluster) -> None:
    cluster.add(node("gpu-01", gpus="16"), node("gpu-02", gpus="16"))
    plain = only(doctor(stack([h100_pool()]), cluster), "pool-gpus", "pool h100 / node gpu-01")
    assert not plain.passed and "set gpus_per_node: 16" in plain.fix

    sliced = stack([h100_pool(time_slicing={"replicas": 2})])
    check = only(doctor(sliced, cluster), "pool-gpus", "pool h100 / node gpu-01")
    assert check.passed
    assert "partitioned (time-slicing) and needs at least gpus_per_node=8" in check.message

    cluster.add(node("gpu-02", gpus="4"))
    short = only(doctor(sliced, cluster), "pool-gpus", "pool h100 / node gpu-02")
    assert not short.passed and "nvidia.com/gpu=4" in short.message


def test_wrong_gpu_product(cluster: FakeCluster) -> None:
    cluster.add(node("gpu-01"), node("gpu-02", product="NVIDIA-A100-SXM4-80GB"))
    check = only(doctor(stack([h100_pool()]), cluster), "pool-gpu-product", "pool h100 / node gpu-02")
    assert not check.passed
    assert "nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB (a A100-80GB)" in check.message
    assert "declares gpu=H100-80GB-SXM (NVIDIA-H100-80GB-HBM3)" in check.message
    assert check.fix == "set gpu: A100-80GB on pool h100, or take gpu-02 out of the pool"


def test_missing_gpu_product_label(cluster: FakeCluster) -> None:
    cluster.add(node("gpu-01"), node("gpu-02", product=None))
    spec = stack([h100_pool()], gpu_operator={"enabled": False})
    check = only(doctor(spec, cluster), "pool-gpu-product", "pool h100 / node gpu-02")
    assert not check.passed and "has no nvidia.com/gpu.product label" in check.message
    assert check.fix == (
        "install the GPU Operator (GPU Feature Discovery) or label the node: "
        "`kubectl label node gpu-02 nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3`"
    )
    # With the operator in the stack, the fix also says it will come with `pulumi up`.
    with_operator = only(doctor(stack([h100_pool()]), cluster), "pool-gpu-product", "pool h100 / node gpu-02")
    assert "run doctor again after it" in with_operator.fix


def test_gfd_suffixes_for_mig_and_time_slicing_are_accepted(cluster: FakeCluster) -> None:
    cluster.add(node("gpu-01", product=f"{H100}-MIG-1g.10gb", gpus="56"), node("gpu-02", product=f"{H100}-SHARED"))
    checks = doctor(stack([h100_pool(mig={"strategy": "single", "profile": "1g.10gb"})]), cluster)
    assert only(checks, "pool-gpu-product", "pool h100 / node gpu-01").passed
    assert only(checks, "pool-gpu-product", "pool h100 / node gpu-02").passed
    assert failures(checks) == []


def test_driver_too_old(cluster: FakeCluster) -> None:
    cluster.add(node("gpu-01", driver="570.172.08"), node("gpu-02"))
    spec = stack([h100_pool()], gpu_operator={"driver": "preinstalled", "driver_version": "570.172.08"})
    check = only(doctor(spec, cluster), "pool-driver", "pool h100 / node gpu-01")
    assert not check.passed
    assert "driver 570.172.08 (branch 570)" in check.message and "branch 580 or newer" in check.message
    assert check.fix.startswith("upgrade the NVIDIA driver on gpu-01 to branch 580 or newer")
    assert only(doctor(spec, cluster), "pool-driver", "pool h100 / node gpu-02").passed

    operator = only(doctor(stack([h100_pool()]), cluster), "pool-driver", "pool h100 / node gpu-01")
    assert "set gpu_operator.driver_version to a 580+ driver" in operator.fix


def test_driver_from_deprecated_labels_and_missing(cluster: FakeCluster) -> None:
    legacy = {
        "nvidia.com/cuda.driver.major": "550",
        "nvidia.com/cuda.driver.minor": "54",
        "nvidia.com/cuda.driver.rev": "15",
    }
    cluster.add(node("gpu-01", legacy, driver=None), node("gpu-02", driver=None))
    checks = doctor(stack([h100_pool()]), cluster)
    old = only(checks, "pool-driver", "pool h100 / node gpu-01")
    assert not old.passed and "driver 550.54.15 (branch 550)" in old.message
    unknown = only(checks, "pool-driver", "pool h100 / node gpu-02")
    assert not unknown.passed and "has no nvidia.com/cuda.driver-version.full label" in unknown.message
    assert "install the GPU Operator (GPU Feature Discovery) or label the node" in unknown.fix


def test_storage_class_missing(cluster: FakeCluster) -> None:
    cluster.add(node("gpu-01"), node("gpu-02"))
    cluster.classes = [storage_class("standard")]
    spec = stack(
        [h100_pool()],
        [
            model("a", "h100", type="pvc", storage_class="fast-nvme"),
            model("b", "h100", type="pvc", storage_class="fast-nvme"),
            model("c", "h100", type="pvc", storage_class="standard"),
            model("d", "h100"),
            model("e", "h100", type="pvc", existing_claim="weights"),  # needs no class
        ],
    )
    checks = doctor(spec, cluster)
    missing = only(checks, "storage-class", "storage class fast-nvme")
    assert not missing.passed
    assert missing.message == "storage class fast-nvme (used by models a, b) does not exist; the cluster has: standard"
    assert missing.fix == "create storage class fast-nvme, or set storage.storage_class of a, b to one of: standard"
    assert only(checks, "storage-class", "storage class standard").passed
    no_default = only(checks, "storage-class", "default storage class")
    assert not no_default.passed and "models d set no storage.storage_class" in no_default.message
    assert "storageclass.kubernetes.io/is-default-class=true" in no_default.fix
    assert len(failures(checks)) == 2


def test_cluster_older_than_the_stack(cluster: FakeCluster) -> None:
    cluster.minor = "32+"  # managed clusters write the minor with a '+'
    spec = stack([], cluster={"kubernetes_version": "1.33"})
    check = only(doctor(spec, cluster), "kubernetes-version")
    assert not check.passed and "runs Kubernetes 1.32" in check.message
    assert check.fix == 'set cluster.kubernetes_version: "1.32" or upgrade the cluster to 1.33'
    cluster.minor = "30"
    assert "needs 1.31 or newer" in only(doctor(spec, cluster), "kubernetes-version").message


def test_forbidden_node_list_is_a_failed_check(cluster: FakeCluster) -> None:
    cluster.forbidden_node_list = True
    check = only(doctor(stack([l40s_pool()]), cluster), "pool-nodes")
    assert not check.passed and "HTTP 403" in check.message
    assert "grant it get/list on nodes" in check.fix


def _kubeconfig(path: Path, host: str) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": host}}],
                "users": [{"name": "u", "user": {"token": "s3cr3t-token-value"}}],
                "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "prod",
            }
        )
    )


def test_default_clients_from_kubeconfig_path_and_secret(
    cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.add(node("gpu-01"), node("gpu-02"))
    path = tmp_path / "prod.kubeconfig"
    _kubeconfig(path, cluster.host)
    checks = run_doctor(stack([h100_pool()], cluster={"kubeconfig_path": str(path), "context": "prod"}))
    assert failures(checks) == []
    assert f"kubeconfig {path}, context prod" in only(checks, "kubernetes-api").message

    monkeypatch.setenv("KUBECONFIG", str(path))
    checks = run_doctor(stack([h100_pool()], cluster={"kubeconfig_secret": "kubeconfig"}))
    api = only(checks, "kubernetes-api")
    assert api.passed and "cannot decrypt offline" in api.message and str(path) in api.message
    assert not any("s3cr3t" in c.message or "s3cr3t" in c.fix for c in checks)

    bad = run_doctor(stack([h100_pool()], cluster={"kubeconfig_path": str(tmp_path / "absent")}))
    assert [(c.check, c.passed) for c in bad] == [("kubernetes-api", False)]
    assert "cluster.kubeconfig_path" in bad[0].fix


# --------------------------------------------------------------------------------------------------------------
# AWS checks (moto)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.Session]:
    fake_aws_environment(monkeypatch)
    with mock_aws():
        yield boto3.Session(region_name="us-east-1")


def subnets(session: boto3.Session, *zones: str) -> list[str]:
    ec2 = session.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    return [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
        for i, zone in enumerate(zones)
    ]


def eks_pool(name: str, gpu: str, instance_type: str, subnet_ids: list[str], **eks: Any) -> dict[str, Any]:
    return {
        "name": name,
        "gpu": gpu,
        "gpus_per_node": 8,
        "nodes": 1,
        "backend": "eks",
        "eks": {
            "cluster_name": "llm",
            "region": "us-east-1",
            "instance_types": [instance_type],
            "subnet_ids": subnet_ids,
            "node_role_arn": ROLE,
            "kms_key_arn": KMS,
            **eks,
        },
    }


def aws_checks(checks: list[DoctorCheck]) -> list[DoctorCheck]:
    return [c for c in checks if c.check.startswith(("eks-", "model-bucket", "aws-"))]


def test_instance_type_offered_and_not_offered(aws: boto3.Session, cluster: FakeCluster) -> None:
    # moto's offerings snapshot for us-east-1: p5.48xlarge is in us-east-1a..f, g6e.48xlarge only in us-east-1a..d.
    ids = subnets(aws, "us-east-1a", "us-east-1e")
    spec = stack([eks_pool("h100", "H100-80GB-SXM", "p5.48xlarge", ids), eks_pool("l40s", "L40S", "g6e.48xlarge", ids)])
    cluster.add(
        node("ip-10-0-0-1", {POOL_LABEL: "h100"}), node("ip-10-0-1-1", {POOL_LABEL: "l40s"}, product="NVIDIA-L40S")
    )
    checks = doctor(spec, cluster, aws_session=aws)
    p5 = only(checks, "eks-instance-offered", "pool h100 / p5.48xlarge")
    assert p5.passed and "offered in all 2 zone(s) of the subnets: us-east-1a, us-east-1e" in p5.message
    g6e = only(checks, "eks-instance-offered", "pool l40s / g6e.48xlarge")
    assert not g6e.passed
    assert "not offered in 1 of 2 zone(s) of the subnets: us-east-1e" in g6e.message
    assert "offered in us-east-1: us-east-1a, us-east-1b, us-east-1c, us-east-1d" in g6e.message
    assert g6e.fix == (
        "use subnets in zones where g6e.48xlarge is offered (us-east-1a, us-east-1b, us-east-1c, us-east-1d) "
        f"instead of {ids[1]}, or pick another instance type"
    )
    assert only(checks, "eks-subnets", "pool h100").passed
    # The node-side checks ran for EKS pools by their pool label.
    assert only(checks, "pool-nodes", "pool l40s").passed


def test_instance_type_offered_nowhere(aws: boto3.Session, cluster: FakeCluster) -> None:
    # moto's snapshot has no p5e.48xlarge offering in us-east-1 (p5en.48xlarge only in 1a and 1c).
    ids = subnets(aws, "us-east-1a")
    spec = stack([eks_pool("h200", "H200-141GB", "p5e.48xlarge", ids)])
    checks = doctor(spec, cluster, aws_session=aws)
    check = only(checks, "eks-instance-offered")
    assert not check.passed and "(offered in us-east-1: no zone)" in check.message
    assert check.fix == "p5e.48xlarge is not offered anywhere in us-east-1: pick another instance type or region"
    # The node group has not made its node yet: the fix points at the node group, not at labelling nodes by hand.
    nodes = only(checks, "pool-nodes", "pool h200")
    assert not nodes.passed and nodes.message.startswith("0 node(s) carry privatellm.io/gpu-pool=h200 (none)")
    assert "aws eks describe-nodegroup --cluster-name llm --region us-east-1" in nodes.fix


def test_subnet_does_not_exist(aws: boto3.Session, cluster: FakeCluster) -> None:
    ids = subnets(aws, "us-east-1a")
    ghost = "subnet-0123456789abcdef0"
    spec = stack([eks_pool("h100", "H100-80GB-SXM", "p5.48xlarge", [ids[0], ghost])])
    checks = doctor(spec, cluster, aws_session=aws)
    check = only(checks, "eks-subnets")
    assert not check.passed
    assert f"1 of 2 subnet(s) of eks.subnet_ids do not exist in us-east-1 for the current AWS account: {ghost}" in (
        check.message
    )
    assert f"found: {ids[0]} (us-east-1a)" in check.message
    assert check.fix.startswith("correct eks.subnet_ids of pool h100")
    # The zones of the subnets that exist are still checked.
    assert only(checks, "eks-instance-offered").passed

    none_exist = only(
        doctor(stack([eks_pool("h100", "H100-80GB-SXM", "p5.48xlarge", [ghost])]), cluster, aws_session=aws),
        "eks-instance-offered",
    )
    assert not none_exist.passed and none_exist.fix == "fix the eks-subnets failure of this pool first"


def test_model_bucket_missing(aws: boto3.Session, cluster: FakeCluster) -> None:
    ids = subnets(aws, "us-east-1a")
    spec = stack([eks_pool("h100", "H100-80GB-SXM", "p5.48xlarge", ids, model_bucket="bank-models")])
    checks = aws_checks(doctor(spec, cluster, aws_session=aws))
    bucket = [c for c in checks if c.target == "bucket bank-models"]
    assert len(bucket) == 1  # encryption and versioning are not asked of a bucket that does not exist
    assert bucket[0].check == "model-bucket" and not bucket[0].passed
    assert bucket[0].message == "bucket bank-models (used by pool h100 (eks.model_bucket)) does not exist"
    assert "aws s3api create-bucket --bucket bank-models --region us-east-1" in bucket[0].fix


def test_model_bucket_without_encryption_and_versioning(aws: boto3.Session, cluster: FakeCluster) -> None:
    ids = subnets(aws, "us-east-1a")
    aws.client("s3").create_bucket(Bucket="bank-models")
    spec = stack([eks_pool("h100", "H100-80GB-SXM", "p5.48xlarge", ids, model_bucket="bank-models")])
    checks = doctor(spec, cluster, aws_session=aws)
    assert only(checks, "model-bucket").passed
    enc = only(checks, "model-bucket-encryption")
    assert not enc.passed and enc.message == "bucket bank-models has no default encryption"
    assert "put-bucket-encryption --bucket bank-models" in enc.fix and KMS in enc.fix
    ver = only(checks, "model-bucket-versioning")
    assert not ver.passed and "versioning is never enabled" in ver.message
    assert ver.fix == (
        "`aws s3api put-bucket-versioning --bucket bank-models --region us-east-1 "
        "--versioning-configuration Status=Enabled`"
    )

    aws.client("s3").put_bucket_versioning(Bucket="bank-models", VersioningConfiguration={"Status": "Suspended"})
    assert "versioning is Suspended" in only(doctor(spec, cluster, aws_session=aws), "model-bucket-versioning").message


def test_model_buckets_encrypted_and_versioned(aws: boto3.Session, cluster: FakeCluster) -> None:
    ids = subnets(aws, "us-east-1a")
    s3 = aws.client("s3")
    for name in ("bank-models", "weights-s3"):
        s3.create_bucket(Bucket=name)
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KMS}}]
            },
        )
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3_storage = {
        "type": "s3",
        "bucket": "weights-s3",
        "access_key_id_secret": "s3-key-id",
        "secret_access_key_secret": "s3-secret",
        "egress_cidrs": ["52.216.0.0/15"],
    }
    spec = stack(
        [eks_pool("h100", "H100-80GB-SXM", "p5.48xlarge", ids, model_bucket="bank-models")],
        [
            model("aws", "h100", endpoint="https://s3.us-east-1.amazonaws.com", **s3_storage),
            # A custom (MinIO) endpoint is not AWS: its bucket is not looked up in AWS.
            model("minio", "h100", endpoint="https://minio.bank.internal", **{**s3_storage, "bucket": "on-prem"}),
        ],
    )
    checks = aws_checks(doctor(spec, cluster, aws_session=aws))
    assert failures(checks) == []
    targets = sorted({c.target for c in checks if c.check.startswith("model-bucket")})
    assert targets == ["bucket bank-models", "bucket weights-s3"]
    assert "encrypts by default with aws:kms" in only(checks, "model-bucket-encryption", "bucket weights-s3").message
    assert "(used by model aws)" in only(checks, "model-bucket", "bucket weights-s3").message
    assert only(checks, "model-bucket-versioning", "bucket bank-models").message.endswith("versioning Enabled")


def test_no_aws_credentials_is_a_failed_check(
    cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    # No file, no instance metadata: botocore gives up before sending anything.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for key in (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(key, raising=False)
    spec = stack([eks_pool("h100", "H100-80GB-SXM", "p5.48xlarge", ["subnet-0123456789abcdef0"])])
    check = only(doctor(spec, cluster), "eks-subnets")
    assert not check.passed and "no usable AWS credentials (NoCredentialsError)" in check.message
    assert "set AWS_PROFILE" in check.fix
    assert [c.check for c in aws_checks(doctor(spec, cluster))] == ["eks-subnets"]
