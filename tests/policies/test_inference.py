"""Model-server rules: a passing and a violating fixture per pod kind, retained data volumes, unrelated types, and
the PDB per serving workload."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import PolicyResource

from components.vllm import APPROVED_BY_ANNOTATION, REVISION_LABEL, REVISION_WEIGHT_ANNOTATION
from policies.inference import INFERENCE_RULES, INFERENCE_STACK_RULES, RETAIN_ANNOTATION
from policies.pack import policy_config, profile_pack_config
from tests.policies.fixtures import (
    Case,
    good_template,
    init,
    main,
    violations,
    vllm_template,
    wrap,
)
from tests.policies.fixtures import policy_resource as resource
from tests.policies.fixtures import stack_violations as rule_violations
from tests.policies.mutations import (
    Mutation,
    StackMutation,
    drop_flag,
    is_chart,
    is_kind,
    is_vllm_workload,
    pod,
    server,
    vllm_container,
)

RULES = {r.name: r for r in INFERENCE_RULES}
STACK_RULES = {r.name: r for r in INFERENCE_STACK_RULES}

CASES: list[Case] = [
    (
        "vllm-no-trust-remote-code",
        "--trust-remote-code",
        vllm_template,
        lambda t: main(t)["args"].append("--trust-remote-code"),
        True,
    ),
    (
        "vllm-no-trust-remote-code",
        "--trust-remote-code=true",
        vllm_template,
        lambda t: main(t)["args"].append("--trust-remote-code=true"),
        True,
    ),
    (
        "vllm-no-trust-remote-code",
        "on a container that is not vLLM",
        good_template,
        lambda t: main(t).update(args=["--trust-remote-code"]),
        False,
    ),
    ("vllm-telemetry-off", "no telemetry env", vllm_template, lambda t: main(t).pop("env"), True),
    (
        "vllm-telemetry-off",
        "usage stats on",
        vllm_template,
        lambda t: main(t)["env"][0].update(value="0"),
        True,
    ),
    (
        "vllm-request-logging-off",
        "--enable-log-requests",
        vllm_template,
        lambda t: main(t)["args"].append("--enable-log-requests"),
        True,
    ),
    (
        "vllm-request-logging-off",
        "--enable-log-outputs",
        vllm_template,
        lambda t: main(t)["args"].append("--enable-log-outputs"),
        True,
    ),
    (
        "model-weights-verified",
        "no verifying init container",
        vllm_template,
        lambda t: t["spec"].pop("initContainers"),
        True,
    ),
    (
        "model-weights-verified",
        "an init container that verifies nothing",
        vllm_template,
        lambda t: init(t).update(command=["sh", "-c", "true"]),
        True,
    ),
    (
        "model-weights-verified",
        "not a model server",
        good_template,
        lambda t: t["spec"].pop("initContainers"),
        False,
    ),
    (
        "vllm-max-model-len",
        "no --max-model-len",
        vllm_template,
        lambda t: main(t).update(args=[a for a in main(t)["args"] if a not in ("--max-model-len", "8192")]),
        True,
    ),
    (
        "vllm-max-model-len",
        "--max-model-len=4096",
        vllm_template,
        lambda t: main(t).update(
            args=[a for a in main(t)["args"] if a not in ("--max-model-len", "8192")] + ["--max-model-len=4096"]
        ),
        False,
    ),
    (
        "vllm-max-model-len",
        "a headless worker takes the leader's bound",
        vllm_template,
        lambda t: main(t).update(
            args=[a for a in main(t)["args"] if a not in ("--max-model-len", "8192")] + ["--headless"]
        ),
        False,
    ),
]
POD_RULES = sorted(r for r in RULES if r not in ("data-volumes-retained", "canary-approval"))  # pod templates


def test_every_pod_rule_has_a_violating_fixture() -> None:
    assert {rule for rule, *_, fails in CASES if fails} == set(POD_RULES)


def pvc(annotations: dict[str, str] | None) -> dict[str, Any]:
    return {"metadata": {"name": "weights", "namespace": "llm", "annotations": annotations or {}}, "spec": {}}


@pytest.mark.parametrize(
    ("resource_type", "props", "fails"),
    [
        ("kubernetes:core/v1:PersistentVolumeClaim", pvc({RETAIN_ANNOTATION: "true"}), False),
        ("kubernetes:core/v1:PersistentVolumeClaim", pvc(None), True),
        ("kubernetes:core/v1:PersistentVolumeClaim", pvc({RETAIN_ANNOTATION: "false"}), True),
        (
            "kubernetes:apps/v1:StatefulSet",
            {"spec": {"volumeClaimTemplates": [{}], "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"}}},
            True,
        ),
        (
            "kubernetes:apps/v1:StatefulSet",
            {"spec": {"volumeClaimTemplates": [{}], "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain"}}},
            False,
        ),
        ("kubernetes:apps/v1:StatefulSet", {"spec": {"volumeClaimTemplates": [{}]}}, False),
        (
            "kubernetes:elasticsearch.k8s.elastic.co/v1:Elasticsearch",
            {"spec": {"volumeClaimDeletePolicy": "DeleteOnScaledownOnly"}},
            False,
        ),
        ("kubernetes:elasticsearch.k8s.elastic.co/v1:Elasticsearch", {"spec": {}}, True),
        (
            "kubernetes:elasticsearch.k8s.elastic.co/v1:Elasticsearch",
            {"spec": {"volumeClaimDeletePolicy": "DeleteOnScaledownAndClusterDeletion"}},
            True,
        ),
        ("kubernetes:helm.sh/v4:Chart", {"chart": "harbor", "values": {"persistence": {"enabled": True}}}, True),
        (
            "kubernetes:helm.sh/v4:Chart",
            {"chart": "oci://h/charts/harbor", "values": {"persistence": {"resourcePolicy": "keep"}}},
            False,
        ),
        ("kubernetes:helm.sh/v4:Chart", {"chart": "harbor", "values": {"persistence": {"enabled": False}}}, False),
        (
            "kubernetes:helm.sh/v4:Chart",
            {
                "chart": "kube-prometheus-stack",
                "values": {
                    "prometheus": {
                        "prometheusSpec": {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"}}
                    }
                },
            },
            True,
        ),
        ("kubernetes:helm.sh/v4:Chart", {"chart": "kube-prometheus-stack", "values": {}}, False),
        ("kubernetes:helm.sh/v3:Chart", {"chart": "harbor", "values": {"persistence": {"resourcePolicy": ""}}}, True),
        (
            "kubernetes:helm.sh/v3:Chart",
            {"chart": "harbor", "values": {"persistence": {"resourcePolicy": "keep"}}},
            False,
        ),
        ("kubernetes:core/v1:ConfigMap", {"metadata": {"name": "x"}}, False),
    ],
)
def test_data_volumes_retained(resource_type: str, props: dict[str, Any], fails: bool) -> None:
    assert bool(violations(RULES["data-volumes-retained"], resource_type, props)) is fails


# ---------------------------------------------------------------------------------------------------------------
# Stack rules
# ---------------------------------------------------------------------------------------------------------------


def stack_violations(rule_name: str, resources: list[PolicyResource], **config: Any) -> list[str]:
    return rule_violations(STACK_RULES[rule_name], resources, **config)


def serving(kind: str = "Deployment", labels: dict[str, str] | None = None) -> PolicyResource:
    template = vllm_template()
    template["metadata"]["labels"] = labels or {"app": "llama", "tier": "server"}
    resource_type, props = wrap(kind, template)
    props["metadata"]["namespace"] = "llm"
    return resource(resource_type, props, "llama")


def pdb(selector: dict[str, Any], namespace: str = "llm") -> PolicyResource:
    props = {"metadata": {"name": "llama", "namespace": namespace}, "spec": {"maxUnavailable": 1, "selector": selector}}
    return resource("kubernetes:policy/v1:PodDisruptionBudget", props, "llama-pdb")


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "LeaderWorkerSet"])
def test_pdb_per_serving_workload(kind: str) -> None:
    assert stack_violations("pdb-per-serving-workload", [serving(kind)])
    assert stack_violations("pdb-per-serving-workload", [serving(kind), pdb({"matchLabels": {"app": "llama"}})]) == []
    # a PDB in another namespace or selecting other pods does not count
    assert stack_violations("pdb-per-serving-workload", [serving(kind), pdb({"matchLabels": {"app": "llama"}}, "x")])
    assert stack_violations("pdb-per-serving-workload", [serving(kind), pdb({"matchLabels": {"app": "qwen"}})])
    expression = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["server"]}]}
    assert stack_violations("pdb-per-serving-workload", [serving(kind), pdb(expression)]) == []
    not_in = {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["server"]}]}
    assert stack_violations("pdb-per-serving-workload", [serving(kind), pdb(not_in)])


def test_pdb_rule_ignores_workloads_that_serve_no_model() -> None:
    resource_type, props = wrap("Deployment", good_template())
    assert stack_violations("pdb-per-serving-workload", [resource(resource_type, props, "app")]) == []


def test_pdb_rule_honours_exemptions() -> None:
    assert stack_violations("pdb-per-serving-workload", [serving()], exempt_namespaces={"llm": "lab cluster"}) == []


def test_components_mark_retained_volumes_the_way_the_rule_reads_them() -> None:
    from components.labels import RETAIN_ANNOTATION as COMPONENT_MARK
    from components.labels import RETAINED

    assert COMPONENT_MARK == RETAIN_ANNOTATION and RETAINED == {RETAIN_ANNOTATION: "true"}


# ---------------------------------------------------------------------------------------------------------------
# Mutations: each a violation injected into every shipped stack's render (tests/stacks/test_mutations.py)
# ---------------------------------------------------------------------------------------------------------------


def served_revision(kind: str, revision: str | None, weight: str | None, approved_by: str | None) -> dict[str, Any]:
    resource_type, props = wrap(kind, vllm_template())
    props["metadata"]["labels"] = {} if revision is None else {REVISION_LABEL: revision}
    props["metadata"]["annotations"] = {
        **({REVISION_WEIGHT_ANNOTATION: weight} if weight is not None else {}),
        **({APPROVED_BY_ANNOTATION: approved_by} if approved_by is not None else {}),
    }
    return {"type": resource_type, "props": props}


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "LeaderWorkerSet"])
@pytest.mark.parametrize(
    ("revision", "weight", "approved_by", "fails"),
    [
        ("r2", "10", None, False),
        ("r2", "50", None, False),
        ("r2", "51", None, True),
        ("r2", "100", None, True),
        ("r2", "100", "  ", True),
        ("r2", "100", "change CHG-1042, model risk committee", False),
        ("base", "100", None, False),  # the revision that was there before needs no approval
        (None, None, None, False),  # a model without revisions
        ("r2", "ninety", None, True),
    ],
)
def test_canary_approval(
    kind: str, revision: str | None, weight: str | None, approved_by: str | None, fails: bool
) -> None:
    r = served_revision(kind, revision, weight, approved_by)
    found = violations(RULES["canary-approval"], r["type"], r["props"])
    assert bool(found) == fails, found
    if fails and weight and weight.isdigit():
        assert f"candidate revision {revision} takes {weight}%" in found[0]


def test_canary_approval_is_advisory_only_in_the_baseline_profile() -> None:
    for profile in ("baseline", "finance", "healthcare", "government"):
        level = profile_pack_config(profile, policy_config(profile=profile))["canary-approval"].get(
            "enforcementLevel", "mandatory"
        )
        assert level == ("advisory" if profile == "baseline" else "mandatory")


MUTATIONS: list[Mutation] = [
    Mutation(
        "canary-approval",
        "candidate above 50 without approval",
        lambda r: (
            r.kind in ("Deployment", "LeaderWorkerSet")
            and r.inputs["metadata"].get("labels", {}).get(REVISION_LABEL) not in (None, "base")
        ),
        lambda props: (
            props["metadata"]["annotations"].update({REVISION_WEIGHT_ANNOTATION: "60"}),
            props["metadata"]["annotations"].pop(APPROVED_BY_ANNOTATION, None),
        ),
    ),
    Mutation(
        "vllm-no-trust-remote-code",
        "trust remote code",
        is_vllm_workload,
        server(lambda c: c.update(args=[*c["args"], "--trust-remote-code"])),
    ),
    Mutation(
        "vllm-telemetry-off",
        "usage stats on",
        is_vllm_workload,
        server(lambda c: c.update(env=[e for e in c["env"] if e["name"] != "VLLM_NO_USAGE_STATS"])),
    ),
    Mutation(
        "vllm-request-logging-off",
        "request logging",
        is_vllm_workload,
        server(lambda c: c.update(args=[*c["args"], "--enable-log-requests"])),
    ),
    Mutation(
        "vllm-max-model-len",
        "unbounded context",
        lambda r: is_vllm_workload(r) and "--headless" not in vllm_container(r.inputs)["args"],
        server(lambda c: drop_flag(c, "--max-model-len")),
    ),
    Mutation(
        "model-weights-verified",
        "weights not verified",
        is_vllm_workload,
        pod(
            lambda p: p.update(initContainers=[c for c in p.get("initContainers", []) if c["name"] != "verify-weights"])
        ),
    ),
    Mutation(
        "data-volumes-retained",
        "PVC without the retain mark",
        is_kind("PersistentVolumeClaim"),
        lambda props: props["metadata"].pop("annotations"),
    ),
    Mutation(
        "data-volumes-retained",
        "Elasticsearch deletes its volumes",
        is_kind("Elasticsearch"),
        lambda props: props["spec"].update(volumeClaimDeletePolicy="DeleteOnScaledownAndClusterDeletion"),
    ),
    Mutation(
        "data-volumes-retained",
        "Harbor volumes deleted with the release",
        is_chart("harbor"),
        lambda props: props["values"]["persistence"].update(resourcePolicy=""),
    ),
]

STACK_MUTATIONS: dict[str, StackMutation] = {
    "pdb-per-serving-workload": lambda r: r.kind == "PodDisruptionBudget",
}
