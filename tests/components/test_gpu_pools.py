"""GPU node pools and the GPU Operator: what is rendered for each backend, and the pool refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components.gpu_pools import EksNodeGroup, GpuNodePool, GpuNodePoolArgs, Taint
from infra.builders.gpu import GpuPoolSettings, gpu_operator_values
from infra.config import RegistrySpec, parse_platform
from infra.gpu_stack import driver_problem, instance_problem, mig_problem, required_driver_branch
from infra.offline import OfflineError, Recording, run_program
from infra.tools.checks import check_recording, run_resource_rules
from policies.pack import policy_config
from tests.conftest import ROOT, run
from tests.platforms import bank, render

REGISTRY = RegistrySpec(host="harbor.bank.internal")


def onprem(**kw: Any) -> GpuNodePoolArgs:
    args: dict[str, Any] = {
        "name": "h100",
        "instance": "bank",
        "gpu_type": "H100-80GB-SXM",
        "gpus_per_node": 8,
        "nodes": 2,
        "labels": {"privatellm.io/gpu-pool": "h100"},
        "taint": Taint("privatellm.io/gpu-pool", "h100"),
        "node_selector": {"privatellm.io/gpu-pool": "h100"},
        "node_names": ["gpu-01", "gpu-02"],
    }
    args.update(kw)
    return GpuNodePoolArgs(**args)


EKS = EksNodeGroup(
    cluster_name="llm-prod",
    instance_types=["p5.48xlarge"],
    subnet_ids=["subnet-0a1b2c3d4e5f60718"],
    node_role_arn="arn:aws:iam::123456789012:role/gpu",
    kms_key_arn="arn:aws:kms:eu-central-1:123456789012:key/abc",
    min_size=1,
    max_size=4,
)


def by_type(rec: Recording, suffix: str) -> list[Any]:
    return [r for r in rec.resources if r.type.endswith(suffix)]


def test_onprem_pool_patches_labels_and_taint_on_named_nodes() -> None:
    rec = run(program=lambda: GpuNodePool("pool", onprem(keep_taints=[Taint("dedicated", "gpu", "NoExecute")])))
    patches = by_type(rec, ":NodePatch")
    assert sorted(p.inputs["metadata"]["name"] for p in patches) == ["gpu-01", "gpu-02"]
    for p in patches:
        assert p.type == "kubernetes:core/v1:NodePatch"
        assert p.inputs["metadata"]["labels"] == {"privatellm.io/gpu-pool": "h100"}
        # Taints are one atomic list under server-side apply: the node's own taints are restated, ours added.
        assert p.inputs["spec"]["taints"] == [
            {"key": "dedicated", "value": "gpu", "effect": "NoExecute"},
            {"key": "privatellm.io/gpu-pool", "value": "h100", "effect": "NoSchedule"},
        ]
    # Nothing but patches: the pool never creates or deletes nodes.
    assert {r.type for r in rec.resources if r.custom} == {"kubernetes:core/v1:NodePatch"}


def test_pool_found_by_existing_labels_patches_nothing() -> None:
    args = onprem(node_names=[], node_selector={"node-role/gpu": "h100"}, taint=None)
    rec = run(program=lambda: GpuNodePool("pool", args))
    assert not by_type(rec, ":NodePatch")


def test_scheduling_contract() -> None:
    captured: dict[str, Any] = {}

    def program() -> None:
        captured["pool"] = GpuNodePool("pool", onprem())

    run(program=program)
    contract = captured["pool"].contract
    assert contract.node_selector == {"privatellm.io/gpu-pool": "h100"}
    assert contract.tolerations == [
        {"key": "privatellm.io/gpu-pool", "operator": "Equal", "value": "h100", "effect": "NoSchedule"}
    ]
    assert (contract.gpu_resource, contract.gpu_type, contract.gpus_per_node, contract.nodes) == (
        "nvidia.com/gpu",
        "H100-80GB-SXM",
        8,
        2,
    )


def test_eks_node_group_with_hardened_launch_template() -> None:
    rec = run(program=lambda: GpuNodePool("pool", onprem(node_names=[], eks=EKS)))
    [template] = by_type(rec, "ec2/launchTemplate:LaunchTemplate")
    meta = template.inputs["metadataOptions"]
    assert meta["httpTokens"] == "required" and meta["httpPutResponseHopLimit"] == 1
    [disk] = template.inputs["blockDeviceMappings"]
    assert disk["ebs"]["encrypted"] == "true"
    assert disk["ebs"]["kmsKeyId"] == EKS.kms_key_arn
    assert "instanceMarketOptions" not in template.inputs
    [group] = by_type(rec, "eks/nodeGroup:NodeGroup")
    inputs = group.inputs
    assert inputs["amiType"] == "AL2023_x86_64_NVIDIA"
    assert inputs["instanceTypes"] == ["p5.48xlarge"]
    assert inputs["scalingConfig"] == {"minSize": 1, "desiredSize": 2, "maxSize": 4}
    assert inputs["labels"] == {"privatellm.io/gpu-pool": "h100"}
    assert inputs["taints"] == [{"key": "privatellm.io/gpu-pool", "value": "h100", "effect": "NO_SCHEDULE"}]
    assert inputs["capacityType"] == "ON_DEMAND"
    assert not by_type(rec, ":NodePatch")


def test_eks_capacity_block() -> None:
    eks = EksNodeGroup(
        **{**EKS.__dict__, "capacity_type": "CAPACITY_BLOCK", "capacity_reservation_id": "cr-0123456789abcdef0"}
    )
    rec = run(program=lambda: GpuNodePool("pool", onprem(node_names=[], eks=eks)))
    [template] = by_type(rec, "ec2/launchTemplate:LaunchTemplate")
    assert template.inputs["instanceMarketOptions"] == {"marketType": "capacity-block"}
    target = template.inputs["capacityReservationSpecification"]["capacityReservationTarget"]
    assert target == {"capacityReservationId": "cr-0123456789abcdef0"}
    assert by_type(rec, "eks/nodeGroup:NodeGroup")[0].inputs["capacityType"] == "CAPACITY_BLOCK"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "H100"}, "not a DNS-1123 label"),
        ({"node_names": ["gpu-01"]}, "nodes=2 but 1 node_names"),
        ({"eks": EKS}, "node_names only apply"),
        ({"node_selector": {}}, "node_selector is empty"),
    ],
)
def test_bad_pool_args(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        onprem(**change)


def test_gpu_operator_values() -> None:
    pools = [
        GpuPoolSettings("h100", "none", None, "privatellm.io/gpu-pool"),
        GpuPoolSettings("l40s", "none", 4, "privatellm.io/gpu-pool"),
    ]
    values = gpu_operator_values(REGISTRY, install_driver=False, driver_version="580.95.05", pools=pools)
    assert values["driver"]["enabled"] is False
    assert values["operator"]["repository"] == "harbor.bank.internal/platform/nvidia"
    assert values["operator"]["image"] == "gpu-operator" and values["operator"]["version"] == "v26.7.0"
    assert values["toolkit"]["repository"] == "harbor.bank.internal/platform/nvidia/k8s"
    assert values["dcgmExporter"]["serviceMonitor"]["enabled"] is True
    assert values["migManager"]["enabled"] is False and values["mig"]["strategy"] == "none"
    assert {"key": "privatellm.io/gpu-pool", "operator": "Exists", "effect": "NoSchedule"} in values["daemonsets"][
        "tolerations"
    ]
    config = values["devicePlugin"]["config"]
    assert config["create"] is True and "replicas: 4" in config["data"]["l40s"]
    assert (
        values["node-feature-discovery"]["image"]["repository"]
        == "harbor.bank.internal/platform/nfd/node-feature-discovery"
    )
    for key in ("operator", "validator", "toolkit", "devicePlugin", "gfd", "dcgmExporter", "migManager"):
        assert values[key]["repository"].startswith("harbor.bank.internal/"), key
    mig = gpu_operator_values(REGISTRY, True, "595.91.07", [GpuPoolSettings("a100", "single", None, None)])
    assert mig["mig"]["strategy"] == "single" and mig["migManager"]["enabled"] is True
    assert mig["driver"]["enabled"] is True and mig["driver"]["version"] == "595.91.07"


def test_driver_matrix() -> None:
    assert required_driver_branch() == 580
    assert driver_problem("580.95.05") is None and driver_problem("595.91.07") is None
    problem = driver_problem("570.172.08")
    assert problem is not None and "CUDA 13.x" in problem and "580" in problem
    assert driver_problem("latest") is not None


def test_mig_and_instance_facts() -> None:
    assert mig_problem("A100-80GB", "3g.40gb") is None
    assert "does not exist on A100-80GB" in str(mig_problem("A100-80GB", "3g.20gb"))
    assert "does not support MIG" in str(mig_problem("L40S", None))
    assert instance_problem("p5.48xlarge", "H100-80GB-SXM", 8) is None
    assert "carries H100-80GB-SXM, not A100-80GB" in str(instance_problem("p5.48xlarge", "A100-80GB", 8))
    assert "has 8 GPUs per node" in str(instance_problem("p5.48xlarge", "H100-80GB-SXM", 4))


def platform(**kw: Any) -> dict[str, Any]:
    return bank("baseline", **kw)


def pool(**kw: Any) -> dict[str, Any]:
    return {"name": "h100", "gpu": "H100-80GB-SXM", "gpus_per_node": 8, "nodes": 2, **kw}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"node_pools": [pool(gpu="H800")]}, "node_pools[0].gpu='H800'", id="unknown-gpu-product"),
        pytest.param(
            {"node_pools": [pool(gpu="L40S", mig={"strategy": "single", "profile": "1g.10gb"})], "models": []},
            "node_pools[0].mig: L40S does not support MIG",
            id="mig-on-gpu-without-mig",
        ),
        pytest.param(
            {"node_pools": [pool(mig={"strategy": "single", "profile": "1g.5gb"})], "models": []},
            "node_pools[0].mig: MIG profile '1g.5gb' does not exist on H100-80GB-SXM",
            id="mig-profile-not-on-gpu",
        ),
        pytest.param(
            {"gpu_operator": {"driver": "preinstalled", "driver_version": "550.163.01"}},
            "gpu_operator.driver_version: driver 550.163.01 (branch 550) cannot run vLLM v0.33.0",
            id="incompatible-driver",
        ),
        pytest.param(
            {"gpu_operator": {"driver": "preinstalled"}},
            "gpu_operator.driver_version is required with driver: preinstalled",
            id="preinstalled-without-version",
        ),
        pytest.param(
            {"node_pools": [pool(gpu_memory_gib=40)]},
            "node_pools[0].gpu_memory_gib=40.0 does not match H100-80GB-SXM",
            id="gpu-memory-mismatch",
        ),
        pytest.param(
            {"node_pools": [pool(time_slicing={"replicas": 4})]},
            "models[0].pool='h100' partitions its GPUs",
            id="model-on-time-sliced-pool",
        ),
        pytest.param(
            {
                "node_pools": [
                    pool(
                        backend="eks",
                        eks={
                            "cluster_name": "c",
                            "region": "eu-central-1",
                            "instance_types": ["p4d.24xlarge"],
                            "subnet_ids": ["subnet-0a1b2c3d"],
                            "node_role_arn": "arn:aws:iam::123456789012:role/r",
                            "kms_key_arn": "arn:aws:kms:eu-central-1:123456789012:key/k",
                            "max_size": 2,
                        },
                    )
                ]
            },
            "node_pools[0].eks.instance_types[0]: p4d.24xlarge carries A100-40GB, not H100-80GB-SXM",
            id="eks-instance-type-mismatch",
        ),
        pytest.param(
            {
                "node_pools": [pool(nodes=1, onprem={"node_names": ["a"]})],
                "models": [
                    {"name": "big", "model": "Llama-3.1-70B", "pool": "h100", "max_model_len": 32768, "replicas": 3}
                ],
            },
            "node pool 'h100' has 8 GPUs (1 nodes x 8 H100-80GB-SXM) but its models need 12",
            id="pool-smaller-than-plan",
        ),
    ],
)
def test_pool_refusals(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(OfflineError) as info:
        render(platform(**change))
    assert expected in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("pool_doc", "message"),
    [
        (pool(onprem={"node_names": ["a"]}), "nodes=2 but onprem.node_names lists 1 nodes"),
        (pool(onprem={"node_names": ["a", "b"], "node_labels": {"x": "y"}}), "give node_names"),
        (pool(backend="eks"), "backend eks needs an eks section"),
        (pool(mig={"strategy": "single"}), "strategy single needs profile"),
        (pool(onprem={"node_names": ["A_1", "b"]}), "is not a Kubernetes node name"),
    ],
)
def test_pool_schema_errors(pool_doc: dict[str, Any], message: str) -> None:
    from infra.config import StackConfigError

    with pytest.raises(StackConfigError) as info:
        parse_platform({"node_pools": [pool_doc]})
    assert any(message in p for p in info.value.problems), info.value.problems


def test_gpu_operator_namespace_is_the_documented_exception(crds: Path) -> None:
    doc = platform()
    rec = render(doc)
    spec = parse_platform(doc)
    report = check_recording(rec, spec, crds)
    assert report.ok, report.mandatory_failures
    exempt = [r for r in report.results if r.message.startswith("exempt: NVIDIA GPU Operator")]
    assert exempt and all(r.passed for r in exempt)
    # Without the declared exception the privileged namespace fails the pack: the exemption is what passes it.
    strict = run_resource_rules(rec, policy_config("1.31"))
    assert any(not r.passed and r.resource == "Namespace/gpu-operator" for r in strict)
    [chart] = [c for c in rec.charts() if c.name == "gpu-operator"]
    assert chart.inputs["namespace"] == "gpu-operator" and chart.inputs["version"] == "v26.7.0"
    assert chart.inputs["repositoryOpts"] == {"repo": "https://helm.ngc.nvidia.com/nvidia"}
    patches = [r for r in rec.resources if r.type == "kubernetes:core/v1:NodePatch"]
    assert sorted(p.inputs["metadata"]["name"] for p in patches) == ["a", "b"]
    # The model is scheduled through the pool's contract.
    [deployment] = [r for r in rec.kubernetes_objects() if r.kind == "Deployment" and r.namespace == "llm-inference"]
    pod = deployment.inputs["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"privatellm.io/gpu-pool": "h100"}
    assert pod["tolerations"] == [
        {"key": "privatellm.io/gpu-pool", "operator": "Equal", "value": "h100", "effect": "NoSchedule"}
    ]


def test_eks_stack_renders_aws_resources_with_a_regional_provider() -> None:
    from infra.offline import load_stack_config

    rec = run_program(load_stack_config(ROOT, "eks-prod"))
    providers = [r for r in rec.resources if r.type == "pulumi:providers:aws"]
    assert [p.inputs["region"] for p in providers] == ["eu-central-1"]
    [group] = [r for r in rec.resources if r.type.endswith("eks/nodeGroup:NodeGroup")]
    assert group.provider == providers[0].urn
