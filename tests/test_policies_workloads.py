"""Workload (CIS/NSA/OWASP beyond PSS) and model-server rules: a passing and a violating fixture per pod kind, unrelated
types, exemptions, and the stack rules (PDB per serving workload, quota per namespace)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pulumi_policy import PolicyResource, StackValidationArgs

from policies.inference import INFERENCE_RULES, INFERENCE_STACK_RULES, RETAIN_ANNOTATION
from policies.namespaces import STACK_RULES
from policies.pack import RESOURCE_RULES, policy_config
from policies.workloads import NAMESPACED_TYPES, SERVER_TYPES, WORKLOAD_RULES
from tests.policy_fixtures import POD_KINDS, good_template, violations, vllm_template, wrap
from tests.policy_fixtures import policy_resource as resource

RULES = {r.name: r for r in [*WORKLOAD_RULES, *INFERENCE_RULES]}


def main(t: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = t["spec"]["containers"][0]
    return container


def init(t: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = t["spec"]["initContainers"][0]
    return container


def env(t: dict[str, Any], name: str, value: str) -> None:
    main(t).setdefault("env", []).append({"name": name, "value": value})


Base = Callable[[], dict[str, Any]]
# (rule, what, base template, mutation, fails)
CASES: list[tuple[str, str, Base, Callable[[dict[str, Any]], Any], bool]] = [
    ("no-secret-env-values", "password as a value", good_template, lambda t: env(t, "DB_PASSWORD", "hunter2"), True),
    ("no-secret-env-values", "HF token as a value", good_template, lambda t: env(t, "HF_TOKEN", "x" * 12), True),
    (
        "no-secret-env-values",
        "a private key under any name",
        good_template,
        lambda t: env(t, "CONFIG", "-----BEGIN RSA PRIVATE KEY-----\nMII"),
        True,
    ),
    (
        "no-secret-env-values",
        "an AWS access key id under any name",
        good_template,
        lambda t: env(t, "SETTINGS", "AKIAIOSFODNN7EXAMPLE"),
        True,
    ),
    (
        "no-secret-env-values",
        "a password file path",
        good_template,
        lambda t: env(t, "DB_PASSWORD_FILE", "/secrets/db"),
        False,
    ),
    (
        "no-secret-env-values",
        "secretKeyRef",
        good_template,
        lambda t: (
            main(t)
            .setdefault("env", [])
            .append({"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
        ),
        False,
    ),
    ("no-secret-env-values", "a user name", good_template, lambda t: env(t, "ES_USER", "elastic"), False),
    (
        "service-account-token-off",
        "token left to the default",
        good_template,
        lambda t: t["spec"].pop("automountServiceAccountToken"),
        True,
    ),
    (
        "service-account-token-off",
        "token mounted",
        good_template,
        lambda t: t["spec"].update(automountServiceAccountToken=True),
        True,
    ),
    ("container-resources", "no cpu limit", good_template, lambda t: main(t)["resources"]["limits"].pop("cpu"), True),
    (
        "container-resources",
        "init container without requests",
        good_template,
        lambda t: init(t)["resources"].pop("requests"),
        True,
    ),
    (
        "container-resources",
        "GPU requested without a limit",
        good_template,
        lambda t: main(t)["resources"]["requests"].update({"nvidia.com/gpu": "1"}),
        True,
    ),
    ("container-resources", "no resources at all", good_template, lambda t: main(t).pop("resources"), True),
    (
        "read-only-root-filesystem",
        "writable root",
        good_template,
        lambda t: main(t)["securityContext"].update(readOnlyRootFilesystem=False),
        True,
    ),
    (
        "read-only-root-filesystem",
        "init container unset",
        good_template,
        lambda t: init(t)["securityContext"].pop("readOnlyRootFilesystem"),
        True,
    ),
    (
        "run-as-high-uid",
        "UID 1000",
        good_template,
        lambda t: t["spec"]["securityContext"].update(runAsUser=1000),
        True,
    ),
    ("run-as-high-uid", "no UID", good_template, lambda t: t["spec"]["securityContext"].pop("runAsUser"), True),
    (
        "run-as-high-uid",
        "container raises a low pod UID",
        good_template,
        lambda t: (
            t["spec"]["securityContext"].update(runAsUser=1000),
            main(t)["securityContext"].update(runAsUser=20000),
            init(t)["securityContext"].update(runAsUser=20000),
        ),
        False,
    ),
    ("no-root-group", "no runAsGroup", good_template, lambda t: t["spec"]["securityContext"].pop("runAsGroup"), True),
    (
        "no-root-group",
        "container group 0",
        good_template,
        lambda t: main(t)["securityContext"].update(runAsGroup=0),
        True,
    ),
    ("no-root-group", "fsGroup 0", good_template, lambda t: t["spec"]["securityContext"].update(fsGroup=0), True),
    (
        "no-root-group",
        "supplemental group 0",
        good_template,
        lambda t: t["spec"]["securityContext"].update(supplementalGroups=[0]),
        True,
    ),
    (
        "no-shared-process-namespace",
        "shared",
        good_template,
        lambda t: t["spec"].update(shareProcessNamespace=True),
        True,
    ),
    (
        "no-shared-process-namespace",
        "explicitly not shared",
        good_template,
        lambda t: t["spec"].update(shareProcessNamespace=False),
        False,
    ),
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
POD_RULES = sorted(r for r in RULES if r not in ("server-probes", "data-volumes-retained", "no-system-namespaces"))


def test_every_pod_rule_has_a_violating_fixture() -> None:
    assert {rule for rule, *_, fails in CASES if fails} == set(POD_RULES)


@pytest.mark.parametrize("kind", POD_KINDS)
@pytest.mark.parametrize("rule_id", sorted(RULES))
@pytest.mark.parametrize("base", [good_template, vllm_template], ids=["app", "vllm"])
def test_compliant_templates_pass(rule_id: str, kind: str, base: Base) -> None:
    resource_type, props = wrap(kind, base())
    assert violations(RULES[rule_id], resource_type, props) == []


@pytest.mark.parametrize("kind", POD_KINDS)
@pytest.mark.parametrize(
    ("rule_id", "what", "base", "mutation", "fails"), CASES, ids=[f"{r}:{w}" for r, w, *_ in CASES]
)
def test_fixture(rule_id: str, what: str, base: Base, mutation: Any, fails: bool, kind: str) -> None:
    template = base()
    mutation(template)
    resource_type, props = wrap(kind, template)
    found = violations(RULES[rule_id], resource_type, props)
    if fails:
        assert found, f"{rule_id} should reject {what} on {kind}"
        if kind == "LeaderWorkerSet":
            assert any(m.startswith("leaderTemplate: ") for m in found)
            assert any(m.startswith("workerTemplate: ") for m in found)
    else:
        assert found == [], f"{rule_id} should accept {what} on {kind}: {found}"


@pytest.mark.parametrize("kind", POD_KINDS)
def test_server_probes_on_long_running_kinds_only(kind: str) -> None:
    template = good_template()
    main(template).pop("livenessProbe")
    resource_type, props = wrap(kind, template)
    found = violations(RULES["server-probes"], resource_type, props)
    if resource_type in SERVER_TYPES:
        assert found and "has no livenessProbe" in found[0]
    else:
        assert found == []  # Pods, Jobs and CronJobs run to completion or are managed by something else


def test_secret_env_message_names_container_and_variable() -> None:
    template = good_template()
    env(template, "OPENAI_API_KEY", "sk-" + "a" * 40)
    resource_type, props = wrap("Deployment", template)
    assert violations(RULES["no-secret-env-values"], resource_type, props) == [
        "container 'app' env OPENAI_API_KEY holds a literal credential"
    ]


@pytest.mark.parametrize("namespace", ["default", "kube-system", "kube-public", None])
@pytest.mark.parametrize("resource_type", sorted(NAMESPACED_TYPES))
def test_no_system_namespaces(resource_type: str, namespace: str | None) -> None:
    assert resource_type in NAMESPACED_TYPES
    metadata: dict[str, Any] = {"name": "x"}
    if namespace:
        metadata["namespace"] = namespace
    found = violations(RULES["no-system-namespaces"], resource_type, {"metadata": metadata})
    assert len(found) == 1
    assert (
        violations(RULES["no-system-namespaces"], resource_type, {"metadata": {"name": "x", "namespace": "llm"}}) == []
    )


def test_cluster_scoped_kinds_have_no_namespace_to_check() -> None:
    props = {"metadata": {"name": "x"}}
    assert violations(RULES["no-system-namespaces"], "kubernetes:core/v1:Namespace", props) == []
    assert violations(RULES["no-system-namespaces"], "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", props) == []


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


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_unrelated_types_are_ignored(rule_id: str) -> None:
    props = {"metadata": {"name": "x", "namespace": "llm"}, "spec": {"shareProcessNamespace": True}}
    assert violations(RULES[rule_id], "kubernetes:core/v1:ConfigMap", props) == []


def test_exempt_namespace_is_skipped() -> None:
    template = good_template()
    template["spec"]["automountServiceAccountToken"] = True
    resource_type, props = wrap("Deployment", template)
    rule = RULES["service-account-token-off"]
    assert violations(rule, resource_type, props)
    assert violations(rule, resource_type, props, exempt={"tenant-demo": "operator calls the API"}) == []


def test_partial_props_during_preview_do_not_crash() -> None:
    for rule in RULES.values():
        for props in (
            {"spec": {"template": {"spec": {"containers": [None, {}, {"resources": None, "securityContext": None}]}}}},
            {"spec": None},
            {},
        ):
            violations(rule, "kubernetes:apps/v1:Deployment", props)


def test_rules_are_in_the_pack_with_report_metadata() -> None:
    names = {r.name for r in RESOURCE_RULES}
    for rule in RULES.values():
        assert rule.name in names
        assert rule.description and rule.remediation_steps and rule.severity is not None
        assert rule.framework is not None and rule.tags


# ---------------------------------------------------------------------------------------------------------------
# Stack rules
# ---------------------------------------------------------------------------------------------------------------


def stack_violations(rule_name: str, resources: list[PolicyResource], **config: Any) -> list[str]:
    rule = {r.name: r for r in [*STACK_RULES, *INFERENCE_STACK_RULES]}[rule_name]
    found: list[str] = []
    args = StackValidationArgs(resources=resources, config=policy_config(**config))
    rule.validate(args, lambda message, urn=None: found.append(message))
    return found


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


def namespace(name: str) -> PolicyResource:
    return resource("kubernetes:core/v1:Namespace", {"metadata": {"name": name}}, name)


def in_namespace(kind: str, ns: str) -> PolicyResource:
    return resource(f"kubernetes:core/v1:{kind}", {"metadata": {"name": "x", "namespace": ns}}, f"{ns}-{kind}")


def test_namespace_quota() -> None:
    complete = [namespace("a"), in_namespace("ResourceQuota", "a"), in_namespace("LimitRange", "a")]
    assert stack_violations("namespace-quota", complete) == []
    found = stack_violations("namespace-quota", [namespace("a"), in_namespace("ResourceQuota", "a")])
    assert found == ["namespace 'a' has no LimitRange: its pods' consumption is unbounded"]
    found = stack_violations("namespace-quota", [namespace("b"), in_namespace("ResourceQuota", "a")])
    assert found == ["namespace 'b' has no ResourceQuota and no LimitRange: its pods' consumption is unbounded"]
    assert stack_violations("namespace-quota", [namespace("b")], exempt_namespaces={"b": "reason"}) == []


def test_components_mark_retained_volumes_the_way_the_rule_reads_them() -> None:
    from components.labels import RETAIN_ANNOTATION as COMPONENT_MARK
    from components.labels import RETAINED

    assert COMPONENT_MARK == RETAIN_ANNOTATION and RETAINED == {RETAIN_ANNOTATION: "true"}
