"""AdmissionGuardrails: Args validation, the rendered policies under mocks, their CEL evaluated with cel-python
against good and bad objects of every kind they match, schema validation, and every shipped stack admitted."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import celpy
import pulumi
import pytest
from celpy import celtypes

from components.guardrails import (
    ARGV_LIMIT,
    NAME_LABEL,
    AdmissionGuardrails,
    AdmissionGuardrailsArgs,
    cel_string,
)
from components.vllm import VllmService
from infra.builders.guardrails import guardrails_args
from infra.builders.namespaces import TENANT_NAMESPACE_LABEL
from infra.config import PlatformSpec
from infra.offline import RecordedResource, Recording, available_stacks, load_stack_config, run_program
from infra.pack_config import stack_policy_config
from infra.tools.checks import spec_of
from infra.tools.schemas import validate_builtin
from tests.components.test_vllm import TLS, base, multi
from tests.conftest import ROOT, run

REGISTRY = "harbor.bank.internal"
BOOTSTRAP = "bootstrap.bank.internal:5000"
GOOD_IMAGE = f"{REGISTRY}/platform/app:v1.2.3"
DIGEST = "sha256:" + "0123456789abcdef" * 4
CONTROLS = (
    "images-from-internal-registry",
    "images-pinned",
    "vllm-client-certificates",
    "no-external-services",
    "workload-labels",
)
POD_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "LeaderWorkerSet")
# One kind per path to a pod spec in the policies (Deployment stands for every `spec.template` kind): the case
# matrices use these, and `test_container_controls_reach_every_kind` covers the other kinds.
SHAPES = ("Pod", "Deployment", "CronJob", "LeaderWorkerSet")


def args(**kw: Any) -> AdmissionGuardrailsArgs:
    base_args: dict[str, Any] = {
        "instance": "bank-llm",
        "allowed_registries": [REGISTRY, BOOTSTRAP],
        "gateway_namespaces": ["llm-gateway"],
    }
    base_args.update(kw)
    return AdmissionGuardrailsArgs(**base_args)


def record(a: AdmissionGuardrailsArgs, opts: pulumi.ResourceOptions | None = None) -> Recording:
    return run(program=lambda: AdmissionGuardrails("guardrails", a, opts=opts))


@dataclass(frozen=True)
class Rendered:
    policies: dict[str, dict[str, Any]]
    """Control name → the ValidatingAdmissionPolicy object as recorded."""
    bindings: dict[str, dict[str, Any]]


def rendered_of(recording: Recording, instance: str = "bank-llm") -> Rendered:
    def by_kind(kind: str) -> dict[str, dict[str, Any]]:
        return {r.object_name.removeprefix(f"{instance}-"): r.inputs for r in recording.of_kind(kind)}

    return Rendered(by_kind("ValidatingAdmissionPolicy"), by_kind("ValidatingAdmissionPolicyBinding"))


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return rendered_of(record(args()))


# ------------------------------------------------------------------------------------------------ CEL with celpy


class CelError(Exception):
    pass


_ENV = celpy.Environment()


@functools.cache
def _program(expression: str) -> Any:
    return _ENV.program(_ENV.compile(expression))


def _value(expression: str, activation: dict[str, Any]) -> Any:
    result = _program(expression).evaluate(activation)
    if isinstance(result, celpy.CELEvalError):
        raise CelError(f"{expression[:120]}...: {result}")
    return result


@dataclass(frozen=True)
class Failure:
    expression: str
    message: str


def evaluate(
    policy: Mapping[str, Any],
    obj: Mapping[str, Any],
    namespace: str | None = None,
    old: Mapping[str, Any] | None = None,
) -> list[Failure]:
    """Run one rendered policy on `obj` (an UPDATE from `old` when given) the way the API server does: match
    conditions, variables in order, then every validation; returns the failed validations with their evaluated
    messageExpression. An evaluation error raises (with failurePolicy Fail the API server would deny: for a good
    object that is a bug, for a bad one it is not the clean rejection with a message we want)."""
    spec = policy["spec"]
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    request = {
        "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "namespace": namespace if namespace is not None else obj["metadata"].get("namespace", "default"),
        "operation": "CREATE" if old is None else "UPDATE",
        "name": obj["metadata"].get("name", ""),
    }
    activation: dict[str, Any] = {
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(old),
        "request": celpy.json_to_cel(request),
    }
    for condition in spec.get("matchConditions") or []:
        if not _value(condition["expression"], activation):
            return []
    variables: dict[celtypes.StringType, Any] = {}
    for variable in spec.get("variables") or []:
        activation["variables"] = celtypes.MapType(variables)
        variables[celtypes.StringType(variable["name"])] = _value(variable["expression"], activation)
    activation["variables"] = celtypes.MapType(variables)
    failures = []
    for validation in spec["validations"]:
        result = _value(validation["expression"], activation)
        assert isinstance(result, celtypes.BoolType), f"{validation['expression']} gave {result!r}, not a bool"
        if not result:
            message = validation.get("message", "")
            if validation.get("messageExpression"):
                message = str(_value(validation["messageExpression"], activation))
            failures.append(Failure(validation["expression"], message))
    return failures


def matches(policy: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
    """Whether the policy's matchConstraints select `obj`'s resource (the plural of its kind, in its API group)."""
    group = str(obj["apiVersion"]).rpartition("/")[0]
    resource = str(obj["kind"]).lower() + "s"
    return any(
        group in rule["apiGroups"] and resource in rule["resources"]
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
    )


def admitted(rendered: Rendered, control: str, obj: Mapping[str, Any], namespace: str | None = None) -> bool:
    return not evaluate(rendered.policies[control], obj, namespace)


def rejection(rendered: Rendered, control: str, obj: Mapping[str, Any], namespace: str | None = None) -> str:
    failures = evaluate(rendered.policies[control], obj, namespace)
    assert failures, f"{control} admitted {obj['kind']} {obj['metadata'].get('name')}"
    return failures[0].message


# ----------------------------------------------------------------------------------------------- object fixtures


def container(name: str = "app", image: str = GOOD_IMAGE, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, **extra}


def pod_spec(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers or [container()])}
    if init:
        spec["initContainers"] = init
    return spec


APP_LABELS = {"app.kubernetes.io/name": "scoring"}
API = {
    "Pod": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "ReplicaSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "LeaderWorkerSet": "leaderworkerset.x-k8s.io/v1",
}


def workload(
    kind: str,
    spec: dict[str, Any],
    namespace: str = "llm-inference",
    labels: dict[str, str] | None = None,
    leader: dict[str, Any] | None = None,
    leader_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A `kind` object whose pod spec (worker spec for a LeaderWorkerSet) is `spec`; `labels` on its pod template."""
    labels = dict(APP_LABELS if labels is None else labels)
    meta = {"name": "scoring", "namespace": namespace}
    template = {"metadata": {"labels": labels}, "spec": spec}
    selector = {"matchLabels": labels}
    body: dict[str, Any]
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {**meta, "labels": labels}, "spec": spec}
    if kind in ("Deployment", "ReplicaSet", "DaemonSet"):
        body = {"selector": selector, "template": template}
    elif kind == "StatefulSet":
        body = {"selector": selector, "serviceName": "scoring", "template": template}
    elif kind == "Job":
        body = {"template": {**template, "spec": {**spec, "restartPolicy": "Never"}}}
    elif kind == "CronJob":
        job_template = {**template, "spec": {**spec, "restartPolicy": "Never"}}
        body = {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": job_template}}}
    elif kind == "LeaderWorkerSet":
        lwt: dict[str, Any] = {"size": 2, "workerTemplate": template}
        if leader is not None:
            lwt["leaderTemplate"] = {
                "metadata": {"labels": dict(labels if leader_labels is None else leader_labels)},
                "spec": leader,
            }
        body = {"replicas": 1, "leaderWorkerTemplate": lwt}
    else:
        raise AssertionError(kind)
    return {"apiVersion": API[kind], "kind": kind, "metadata": meta, "spec": body}


def service(service_type: str | None, namespace: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": APP_LABELS, "ports": [{"port": 443, "targetPort": 8443}]}
    if service_type is not None:
        spec["type"] = service_type
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "entry", "namespace": namespace}, "spec": spec}


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req["key"], req["operator"], req.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


# ------------------------------------------------------------------------------------------------ Args validation


def test_defaults() -> None:
    a = args()
    assert a.validation_actions == ("Deny", "Audit")
    assert a.required_labels == ("app.kubernetes.io/name",)
    assert a.guarded_namespace_labels == {
        "app.kubernetes.io/part-of": "private-llm",
        "app.kubernetes.io/instance": "bank-llm",
    }
    assert a.never_matched == ["kube-system", "kube-public", "kube-node-lease"]
    assert args(excluded_namespaces=["legacy", "kube-system"]).never_matched == [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "legacy",
    ]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"instance": "Bank_LLM"}, "instance='Bank_LLM' is not a DNS-1123 label"),
        ({"allowed_registries": []}, "allowed_registries is empty"),
        ({"allowed_registries": "harbor.bank.internal"}, "allowed_registries must be a list"),
        ({"allowed_registries": ["https://harbor.bank.internal"]}, "allowed_registries[0]='https://harbor"),
        ({"allowed_registries": [REGISTRY, "harbor"]}, "allowed_registries[1]='harbor' is not a registry host"),
        ({"allowed_registries": [REGISTRY, f"{REGISTRY}/platform"]}, "allowed_registries[1]="),
        ({"allowed_registries": ['harbor".bank']}, "allowed_registries[0]="),
        ({"allowed_registries": ["docker.io"]}, "allowed_registries[0]='docker.io' is a public registry"),
        ({"allowed_registries": [REGISTRY, REGISTRY]}, "allowed_registries repeats a host"),
        ({"gateway_namespaces": "llm-gateway"}, "gateway_namespaces must be a list"),
        ({"gateway_namespaces": ["LLM Gateway"]}, "gateway_namespaces[0]='LLM Gateway' is not a DNS-1123 label"),
        ({"namespace_labels": {}}, "namespace_labels is empty"),
        ({"namespace_labels": {"bad key!": "x"}}, "namespace_labels key='bad key!'"),
        ({"namespace_labels": {"team": "a b"}}, "namespace_labels['team']='a b' is not a Kubernetes label value"),
        ({"tenant_namespace_label": ""}, "tenant_namespace_label=''"),
        ({"required_labels": "app.kubernetes.io/name"}, "required_labels must be a list"),
        ({"required_labels": ["app.kubernetes.io/"]}, "required_labels[0]='app.kubernetes.io/'"),
        ({"excluded_namespaces": ["Legacy"]}, "excluded_namespaces[0]='Legacy'"),
        ({"excluded_namespaces": ["llm-gateway"]}, "excluded_namespaces[0]='llm-gateway' is also a gateway"),
        ({"validation_actions": []}, "validation_actions must be a non-empty list"),
        ({"validation_actions": ["Deny", "Block"]}, "validation_actions has ['Block']"),
        ({"validation_actions": ["Deny", "Deny"]}, "validation_actions repeats an action"),
        ({"validation_actions": ["Deny", "Warn"]}, "Deny and Warn together are not allowed"),
    ],
)
def test_bad_args_name_the_field(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        args(**kw)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "registries", [[REGISTRY], [BOOTSTRAP], ["localhost:5000"], ["registry:5000"], ["10.0.0.5:5000"]]
)
def test_registry_hosts_accepted(registries: list[str]) -> None:
    assert list(args(allowed_registries=registries).allowed_registries) == registries


def test_dry_run_actions_are_allowed() -> None:
    assert args(validation_actions=["Warn", "Audit"]).validation_actions == ["Warn", "Audit"]


@pytest.mark.parametrize(
    "value", ["plain", 'with "quotes"', "back\\slash", "new\nline\ttab", "ünïcødé", "ctrl\x01", "'single'"]
)
def test_cel_string_round_trips(value: str) -> None:
    assert _value(cel_string(value), {}) == value


# ------------------------------------------------------------------------------------------ component under mocks


def test_one_policy_and_binding_per_control(rendered: Rendered) -> None:
    assert sorted(rendered.policies) == sorted(CONTROLS)
    assert sorted(rendered.bindings) == sorted(CONTROLS)
    for name, policy in rendered.policies.items():
        assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert policy["metadata"]["name"] == f"bank-llm-{name}"
        spec = policy["spec"]
        assert spec["failurePolicy"] == "Fail"
        assert "paramKind" not in spec
        assert [c["name"] for c in spec["matchConditions"]] == ["create-or-spec-change"]
        for rule in spec["matchConstraints"]["resourceRules"]:
            assert rule["operations"] == ["CREATE", "UPDATE"]
            assert rule["scope"] == "Namespaced"
        for validation in spec["validations"]:
            assert validation["message"] and validation["messageExpression"]
        binding = rendered.bindings[name]
        assert binding["spec"]["policyName"] == f"bank-llm-{name}"
        assert binding["spec"]["validationActions"] == ["Deny", "Audit"]


def test_match_constraints_cover_every_workload_kind(rendered: Rendered) -> None:
    def resources(control: str) -> set[tuple[str, str, str]]:
        rules = rendered.policies[control]["spec"]["matchConstraints"]["resourceRules"]
        return {
            (g, v, r)
            for rule in rules
            for g in rule["apiGroups"]
            for v in rule["apiVersions"]
            for r in rule["resources"]
        }

    workloads = {
        ("", "v1", "pods"),
        ("apps", "v1", "deployments"),
        ("apps", "v1", "statefulsets"),
        ("apps", "v1", "daemonsets"),
        ("apps", "v1", "replicasets"),
        ("batch", "v1", "jobs"),
        ("batch", "v1", "cronjobs"),
        ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
    }
    for control in ("images-from-internal-registry", "images-pinned", "vllm-client-certificates"):
        # kubectl debug adds ephemeral containers through a subresource of the Pod.
        assert resources(control) == workloads | {("", "v1", "pods/ephemeralcontainers")}
    assert resources("workload-labels") == workloads
    assert resources("no-external-services") == {("", "v1", "services")}


def test_containers_variable_spans_every_container_list(rendered: Rendered) -> None:
    for control in ("images-from-internal-registry", "images-pinned", "vllm-client-certificates"):
        [containers] = [v for v in rendered.policies[control]["spec"]["variables"] if v["name"] == "containers"]
        for part in (
            "object.spec.containers",
            "object.spec.template.spec.initContainers",
            "object.spec.jobTemplate.spec.template.spec.ephemeralContainers",
            "object.spec.leaderWorkerTemplate.leaderTemplate.spec.containers",
            "object.spec.leaderWorkerTemplate.workerTemplate.spec.initContainers",
        ):
            assert part in containers["expression"]


def test_allowed_registries_and_gateways_are_literals(rendered: Rendered) -> None:
    [_, untrusted] = rendered.policies["images-from-internal-registry"]["spec"]["variables"]
    assert f'["{REGISTRY}/", "{BOOTSTRAP}/"]' in untrusted["expression"]
    [exposure] = rendered.policies["no-external-services"]["spec"]["validations"]
    assert exposure["expression"].endswith('request.namespace in ["llm-gateway"]')


def test_bindings_select_the_platform_namespaces_never_kube_system(rendered: Rendered) -> None:
    for name, binding in rendered.bindings.items():
        selector = binding["spec"]["matchResources"]["namespaceSelector"]
        assert selector["matchLabels"] == {
            "app.kubernetes.io/part-of": "private-llm",
            "app.kubernetes.io/instance": "bank-llm",
        }
        assert {
            "key": NAME_LABEL,
            "operator": "NotIn",
            "values": ["kube-system", "kube-public", "kube-node-lease"],
        } in (selector["matchExpressions"])
        tenant = {"key": "privatellm.io/tenant", "operator": "Exists"}
        assert (tenant in selector["matchExpressions"]) == (name == "workload-labels")
        platform_labels = {**selector["matchLabels"], NAME_LABEL: "llm-inference"}
        assert selects(selector, platform_labels) == (name != "workload-labels")
        assert selects(selector, {**platform_labels, "privatellm.io/tenant": "retail"})
        assert not selects(selector, {**platform_labels, NAME_LABEL: "kube-system", "privatellm.io/tenant": "x"})
        assert not selects(selector, {NAME_LABEL: "other-team", "privatellm.io/tenant": "x"})
        # Another platform instance on the same cluster is not this one's business.
        assert not selects(
            selector, {**platform_labels, "app.kubernetes.io/instance": "other", "privatellm.io/tenant": "x"}
        )


def test_objects_are_labelled_parented_and_ordered() -> None:
    rec = record(args())
    [component] = [r for r in rec.resources if r.type == "privatellm:baseline:AdmissionGuardrails"]
    policies = {r.object_name: r for r in rec.kubernetes_objects() if r.kind == "ValidatingAdmissionPolicy"}
    for r in rec.kubernetes_objects():
        assert r.parent == component.urn
        assert r.namespace is None  # cluster-scoped
        for key in ("name", "instance", "component", "part-of", "managed-by"):
            assert f"app.kubernetes.io/{key}" in r.metadata["labels"]
        assert r.metadata["labels"]["app.kubernetes.io/component"] == "admission-policy"
        if r.kind == "ValidatingAdmissionPolicyBinding":
            # The binding is created after its policy.
            assert policies[r.object_name].urn in r.options["dependsOn"]


def test_no_required_labels_means_no_labels_policy() -> None:
    rendered = rendered_of(record(args(required_labels=[])))
    assert sorted(rendered.policies) == sorted(set(CONTROLS) - {"workload-labels"})


def test_one_validation_per_required_label() -> None:
    rendered = rendered_of(record(args(required_labels=["app.kubernetes.io/name", "team"])))
    assert len(rendered.policies["workload-labels"]["spec"]["validations"]) == 2
    obj = workload("Deployment", pod_spec(), namespace="tenant-retail")
    message = rejection(rendered, "workload-labels", obj)
    assert "without the label team" in message
    assert admitted(rendered, "workload-labels", workload("Deployment", pod_spec(), labels={**APP_LABELS, "team": "a"}))


def test_validation_actions_and_exclusions_from_args() -> None:
    rendered = rendered_of(
        record(args(validation_actions=["Warn", "Audit"], excluded_namespaces=["legacy"], gateway_namespaces=[]))
    )
    for binding in rendered.bindings.values():
        assert binding["spec"]["validationActions"] == ["Warn", "Audit"]
        [not_in] = [
            e
            for e in binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
            if e["operator"] == "NotIn"
        ]
        assert "legacy" in not_in["values"]
    # No gateway declared: no namespace may expose a Service.
    assert not admitted(rendered, "no-external-services", service("LoadBalancer", "llm-gateway"))


def test_provider_comes_from_opts() -> None:
    def program() -> None:
        import pulumi_kubernetes as k8s

        provider = k8s.Provider("site", kubeconfig="/etc/site/kubeconfig")
        AdmissionGuardrails("guardrails", args(), opts=pulumi.ResourceOptions(providers={"kubernetes": provider}))

    rec = run(program=program)
    [provider] = [r for r in rec.resources if r.type == "pulumi:providers:kubernetes"]
    assert all(r.provider == provider.urn for r in rec.kubernetes_objects())


def test_rendered_objects_validate_against_the_kubernetes_schema() -> None:
    rec = record(args())
    objects = rec.kubernetes_objects()
    assert len(objects) == 2 * len(CONTROLS)
    for version in ("1.31", "1.33"):
        for r in objects:
            assert validate_builtin(r.inputs, version) == [], r.display()


def test_schema_validation_would_catch_a_misshapen_policy(rendered: Rendered) -> None:
    policy = copy.deepcopy(rendered.policies["images-pinned"])
    policy["spec"]["validations"][0]["expresion"] = policy["spec"]["validations"][0].pop("expression")
    assert validate_builtin(policy, "1.31")


# ------------------------------------------------------------------------------------- CEL: allowed registries


@pytest.mark.parametrize("kind", POD_KINDS)
def test_registry_admits_internal_images_for_every_kind(rendered: Rendered, kind: str) -> None:
    spec = pod_spec(container(), container("sidecar", f"{BOOTSTRAP}/tools/proxy:1.0"), init=[container("init")])
    assert admitted(rendered, "images-from-internal-registry", workload(kind, spec, leader=spec))


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize(
    "image",
    [
        "docker.io/library/nginx:1.27",
        "nginx:1.27",  # Docker's default registry
        "library/nginx:1.27",
        "quay.io/prometheus/prometheus:v3.0.0",
        f"{REGISTRY}.evil.example/platform/app:v1",
        f"evil.example/{REGISTRY}/app:v1",
        f"{REGISTRY}:8443/platform/app:v1",  # another port is another registry
        "bootstrap.bank.internal/tools/proxy:1.0",  # the allowed one has a port
    ],
)
def test_registry_rejects_other_hosts(rendered: Rendered, kind: str, image: str) -> None:
    spec = pod_spec(container(), container("sidecar", image))
    message = rejection(rendered, "images-from-internal-registry", workload(kind, spec))
    assert message.startswith(f"container sidecar pulls {image} from outside the allowed registries")
    assert REGISTRY in message and "mirror the image" in message


@pytest.mark.parametrize("kind", POD_KINDS)
def test_container_controls_reach_every_kind(rendered: Rendered, kind: str) -> None:
    cases = {
        "images-from-internal-registry": container(image="ghcr.io/acme/app:v1"),
        "images-pinned": container(image=f"{REGISTRY}/platform/app"),
        "vllm-client-certificates": vllm(MODEL, SERVE),
    }
    for control, bad in cases.items():
        good = workload(kind, pod_spec(GOOD_VLLM["vllm serve"]), leader=pod_spec())
        assert admitted(rendered, control, good), control
        message = rejection(rendered, control, workload(kind, pod_spec(container("ok"), bad)))
        assert message.startswith(f"container {bad['name']} "), control


def test_a_container_without_image_is_left_to_api_validation(rendered: Rendered) -> None:
    # The API server's own validation requires an image; the policies must not fail with an evaluation error.
    obj = workload("Deployment", pod_spec({"name": "app", "command": ["vllm", "serve"]}))
    for control in ("images-from-internal-registry", "images-pinned"):
        assert admitted(rendered, control, obj)
    assert rejection(rendered, "vllm-client-certificates", obj)


@pytest.mark.parametrize(
    "image",
    [
        GOOD_IMAGE,
        f"{BOOTSTRAP}/tools/proxy:1.0",
        f"{REGISTRY}/a/b/c@{DIGEST}",
        "nginx",
        "library/nginx:1.27",
        "docker.io/library/nginx:1.27",
        f"{REGISTRY}.evil.example/platform/app:v1",
        f"{REGISTRY}:8443/platform/app:v1",
        "bootstrap.bank.internal/tools/proxy:1.0",
        "localhost/app:v1",
    ],
)
def test_registry_agrees_with_the_policy_pack(rendered: Rendered, image: str) -> None:
    from policies.supplychain import registry_check

    pod = workload("Pod", pod_spec(container(image=image)))
    config = {"allowedRegistries": [REGISTRY, BOOTSTRAP]}
    assert (registry_check("kubernetes:core/v1:Pod", pod, config) == []) == admitted(
        rendered, "images-from-internal-registry", pod
    )


@pytest.mark.parametrize("where", ["initContainers", "ephemeralContainers"])
def test_registry_checks_init_and_ephemeral_containers(rendered: Rendered, where: str) -> None:
    bad = container("debugger", "busybox:1.36")
    for kind in ("Pod", "Deployment", "CronJob"):
        spec = {**pod_spec(), where: [bad]}
        assert "container debugger pulls busybox:1.36" in rejection(
            rendered, "images-from-internal-registry", workload(kind, spec)
        )


def test_registry_checks_both_leader_worker_templates(rendered: Rendered) -> None:
    good, bad = pod_spec(), pod_spec(container("vllm", "vllm/vllm-openai:v0.33.0"))
    assert admitted(rendered, "images-from-internal-registry", workload("LeaderWorkerSet", good, leader=good))
    assert rejection(rendered, "images-from-internal-registry", workload("LeaderWorkerSet", good, leader=bad))
    assert rejection(rendered, "images-from-internal-registry", workload("LeaderWorkerSet", bad, leader=good))
    assert rejection(rendered, "images-from-internal-registry", workload("LeaderWorkerSet", bad))


def test_registry_message_counts_every_offender(rendered: Rendered) -> None:
    spec = pod_spec(container("a", "nginx:1"), container("b", "redis:7"), container("c"))
    message = rejection(rendered, "images-from-internal-registry", workload("Deployment", spec))
    assert message.startswith("container a pulls nginx:1 (and 1 more) from outside")


def test_registry_ephemeral_container_update_is_checked(rendered: Rendered) -> None:
    # kubectl debug: an UPDATE of pods/ephemeralcontainers whose Pod gains a container.
    before = workload("Pod", pod_spec())
    after = workload("Pod", {**pod_spec(), "ephemeralContainers": [container("debugger", "busybox:1.36")]})
    assert evaluate(rendered.policies["images-from-internal-registry"], after, old=before)


@pytest.mark.parametrize("control", CONTROLS)
def test_updates_are_judged_only_when_the_spec_changes(rendered: Rendered, control: str) -> None:
    policy = rendered.policies[control]
    assert policy["spec"]["matchConditions"] == [
        {
            "name": "create-or-spec-change",
            "expression": "request.operation != 'UPDATE' || object.spec != oldObject.spec",
        }
    ]
    bad = REJECTED[control]()
    # An object that predates the policy can still lose a finalizer or gain a label (metadata only)...
    touched = copy.deepcopy(bad)
    touched["metadata"]["finalizers"] = []
    touched["metadata"].setdefault("annotations", {})["touched"] = "yes"
    assert evaluate(policy, touched, old=bad) == []
    # ...but an update that changes the spec is judged like a create, and so is a create.
    assert evaluate(policy, bad)
    changed = copy.deepcopy(bad)
    changed["spec"]["extra"] = True
    assert evaluate(policy, changed, old=bad)


# ------------------------------------------------------------------------------------------ CEL: pinned images


@pytest.mark.parametrize(
    "image",
    [
        GOOD_IMAGE,
        f"{REGISTRY}/platform/app@{DIGEST}",
        f"{REGISTRY}/platform/app:latest@{DIGEST}",  # the digest pins it
        f"{REGISTRY}/platform/app:v1.2.3@{DIGEST}",
        f"{BOOTSTRAP}/tools/proxy:1.0",
        f"{BOOTSTRAP}/tools/proxy:2024_01-rc.1",
    ],
)
@pytest.mark.parametrize("kind", SHAPES)
def test_pinned_admits_tags_and_digests(rendered: Rendered, kind: str, image: str) -> None:
    assert admitted(rendered, "images-pinned", workload(kind, pod_spec(container(image=image))))


@pytest.mark.parametrize(
    "image",
    [
        f"{REGISTRY}/platform/app:latest",
        f"{REGISTRY}/platform/app",  # no tag: means latest
        f"{BOOTSTRAP}/tools/proxy",  # the port is not a tag
        f"{REGISTRY}/platform/app:v1@sha256:abc",  # not a digest
        f"{REGISTRY}/platform/app@sha256:{'0' * 63}",
    ],
)
@pytest.mark.parametrize("kind", SHAPES)
def test_pinned_rejects_latest_and_untagged(rendered: Rendered, kind: str, image: str) -> None:
    spec = pod_spec(container(), init=[container("init", image)])
    message = rejection(rendered, "images-pinned", workload(kind, spec, leader=pod_spec()))
    assert message.startswith(f"container init uses image {image}, which has no tag or is :latest")
    assert "@sha256 digest" in message


# ---------------------------------------------------------------------------------------------- CEL: exposure


@pytest.mark.parametrize(
    ("service_type", "namespace", "ok"),
    [
        ("LoadBalancer", "llm-gateway", True),
        ("NodePort", "llm-gateway", True),
        ("ClusterIP", "llm-inference", True),
        (None, "tenant-retail", True),
        ("ExternalName", "tenant-retail", True),
        ("NodePort", "llm-inference", False),
        ("LoadBalancer", "tenant-retail", False),
        ("NodePort", "gpu-operator", False),
    ],
)
def test_exposure_only_from_the_gateway_namespace(
    rendered: Rendered, service_type: str | None, namespace: str, ok: bool
) -> None:
    obj = service(service_type, namespace)
    if ok:
        assert admitted(rendered, "no-external-services", obj)
    else:
        message = rejection(rendered, "no-external-services", obj)
        assert message.startswith(f"Service entry is of type {service_type} in namespace {namespace}")
        assert "llm-gateway" in message and "use ClusterIP" in message


def test_exposure_uses_the_request_namespace(rendered: Rendered) -> None:
    # A create that leaves metadata.namespace out is judged by the namespace of the request.
    obj = service("LoadBalancer", "llm-gateway")
    del obj["metadata"]["namespace"]
    assert admitted(rendered, "no-external-services", obj, namespace="llm-gateway")
    assert not admitted(rendered, "no-external-services", obj, namespace="llm-inference")


# ------------------------------------------------------------------------------------------------- CEL: vLLM mTLS

TLS_FLAGS = [
    "--ssl-keyfile",
    "/etc/vllm/tls/tls.key",
    "--ssl-certfile",
    "/etc/vllm/tls/tls.crt",
    "--ssl-ca-certs",
    "/etc/vllm/tls/ca.crt",
    "--ssl-cert-reqs",
    "2",
]
VLLM_IMAGE = f"{REGISTRY}/platform/vllm/vllm-openai:v0.33.0"


def vllm(args: list[str], command: list[str] | None = None, name: str = "vllm") -> dict[str, Any]:
    c = container(name, VLLM_IMAGE, args=args)
    if command is not None:
        c["command"] = command
    return c


def without(flags: list[str], flag: str) -> list[str]:
    i = flags.index(flag)
    return flags[:i] + flags[i + 2 :]


def replaced(flags: list[str], flag: str, value: str) -> list[str]:
    i = flags.index(flag)
    return [*flags[: i + 1], value, *flags[i + 2 :]]


SERVE = ["vllm", "serve"]
MODEL = ["/models/llama", "--port", "8000"]
GOOD_VLLM = {
    "vllm serve": vllm([*MODEL, *TLS_FLAGS], SERVE),
    "full path": vllm([*MODEL, *TLS_FLAGS], ["/usr/local/bin/vllm", "serve"]),
    "all in command": container("vllm", VLLM_IMAGE, command=[*SERVE, *MODEL, *TLS_FLAGS]),
    "= form": vllm([*MODEL, "--ssl-keyfile=/k", "--ssl-certfile=/c", "--ssl-ca-certs=/ca", "--ssl-cert-reqs=2"], SERVE),
    "repeated, all 2": vllm([*MODEL, *TLS_FLAGS, "--ssl-cert-reqs", "2", "--ssl_cert_reqs=2"], SERVE),
    "module": vllm(["--model", "/models/llama", *TLS_FLAGS], ["python3", "-m", "vllm.entrypoints.openai.api_server"]),
    "image entrypoint": vllm([*MODEL, *TLS_FLAGS]),
    "headless worker": vllm([*MODEL, "--node-rank", "1", "--headless"], SERVE),
    "bench client": vllm(["bench", "serve", "--base-url", "http://127.0.0.1:18000"], ["vllm"]),
    "bench in a shell": container("bench", VLLM_IMAGE, command=["/bin/sh", "-c", "vllm bench serve --model m && echo"]),
    "weights check": container("verify", VLLM_IMAGE, command=["python3", "/opt/verify_weights.py"]),
    "not vllm": container("app", GOOD_IMAGE, command=["/app/server"], args=["--port", "8000"]),
}
BAD_VLLM = {
    "no TLS": vllm(MODEL, SERVE),
    "cert reqs 0": vllm([*MODEL, *replaced(TLS_FLAGS, "--ssl-cert-reqs", "0")], SERVE),
    "cert reqs 1": vllm([*MODEL, *replaced(TLS_FLAGS, "--ssl-cert-reqs", "1")], SERVE),
    "no CA": vllm([*MODEL, *without(TLS_FLAGS, "--ssl-ca-certs")], SERVE),
    "no cert reqs": vllm([*MODEL, *without(TLS_FLAGS, "--ssl-cert-reqs")], SERVE),
    "no key": vllm([*MODEL, *without(TLS_FLAGS, "--ssl-keyfile")], SERVE),
    "no cert": vllm([*MODEL, *without(TLS_FLAGS, "--ssl-certfile")], SERVE),
    "= 0": vllm([*MODEL, *without(TLS_FLAGS, "--ssl-cert-reqs"), "--ssl-cert-reqs=0"], SERVE),
    "later 0 wins": vllm([*MODEL, *TLS_FLAGS, "--ssl-cert-reqs", "0"], SERVE),
    "later underscore 0": vllm([*MODEL, *TLS_FLAGS, "--ssl_cert_reqs", "0"], SERVE),
    "later abbreviation 0": vllm([*MODEL, *TLS_FLAGS, "--ssl-cert-req=0"], SERVE),
    "reqs without value": vllm([*MODEL, *without(TLS_FLAGS, "--ssl-cert-reqs"), "--ssl-cert-reqs"], SERVE),
    "env substitution": vllm([*MODEL, *replaced(TLS_FLAGS, "--ssl-cert-reqs", "$(CERT_REQS)")], SERVE),
    "full path, no TLS": vllm(MODEL, ["/usr/local/bin/vllm", "serve"]),
    "module, no CA": vllm(
        ["--model", "m", *without(TLS_FLAGS, "--ssl-ca-certs")], ["python", "-m", "vllm.entrypoints.openai.api_server"]
    ),
    "image entrypoint, no TLS": vllm(MODEL),
    "shell": container("vllm", VLLM_IMAGE, command=["/bin/sh", "-c", "exec vllm serve /m " + " ".join(TLS_FLAGS)]),
    "too long to verify": vllm([*MODEL, *TLS_FLAGS, *(["--enable-prefix-caching"] * ARGV_LIMIT)], SERVE),
}


@pytest.mark.parametrize("case", sorted(GOOD_VLLM))
def test_vllm_admitted(rendered: Rendered, case: str) -> None:
    # The case is about one container; reaching containers of every kind is test_container_controls_reach_every_kind.
    assert admitted(rendered, "vllm-client-certificates", workload("Pod", pod_spec(GOOD_VLLM[case]))), case


@pytest.mark.parametrize("case", sorted(BAD_VLLM))
def test_vllm_rejected(rendered: Rendered, case: str) -> None:
    spec = pod_spec(container("proxy"), BAD_VLLM[case])
    message = rejection(rendered, "vllm-client-certificates", workload("Pod", spec))
    assert message.startswith("container vllm serves vLLM without verifying client certificates"), case
    assert "--ssl-cert-reqs 2" in message


# Cases the pack's rule (policies/tls.py, on what Pulumi sends) judges too; the others are in-cluster additions.
PACK_CASES = {
    "vllm serve": True,
    "full path": True,
    "all in command": True,
    "= form": True,
    "headless worker": True,
    "bench client": True,
    "bench in a shell": True,
    "weights check": True,
    "not vllm": True,
    "no TLS": False,
    "cert reqs 0": False,
    "cert reqs 1": False,
    "no CA": False,
    "no cert reqs": False,
    "no key": False,
    "no cert": False,
    "= 0": False,
    "reqs without value": False,
    "env substitution": False,
    "full path, no TLS": False,
}


@pytest.mark.parametrize("case", sorted(PACK_CASES))
def test_vllm_agrees_with_the_policy_pack(rendered: Rendered, case: str) -> None:
    from policies.tls import vllm_mtls

    pod = workload("Pod", pod_spec({**GOOD_VLLM, **BAD_VLLM}[case]))
    assert (vllm_mtls("kubernetes:core/v1:Pod", pod, {}) == []) == PACK_CASES[case]
    assert admitted(rendered, "vllm-client-certificates", pod) == PACK_CASES[case]


def test_vllm_detection_errs_on_the_safe_side(rendered: Rendered) -> None:
    # Like the pack's rule: a `vllm` word and a `serve` argument make a server, wherever they appear (a wrapper such
    # as `tini -- vllm serve` must not escape); an unrelated program passing them as values must add the TLS flags.
    wrapped = container("vllm", VLLM_IMAGE, command=["tini", "--", "vllm", "serve"], args=MODEL)
    assert rejection(rendered, "vllm-client-certificates", workload("Pod", pod_spec(wrapped)))
    lookalike = container("app", GOOD_IMAGE, command=["/app/server"], args=["--name", "vllm", "serve"])
    assert rejection(rendered, "vllm-client-certificates", workload("Pod", pod_spec(lookalike)))


def test_vllm_leader_without_tls_is_rejected(rendered: Rendered) -> None:
    worker = pod_spec(GOOD_VLLM["headless worker"])
    assert admitted(
        rendered,
        "vllm-client-certificates",
        workload("LeaderWorkerSet", worker, leader=pod_spec(GOOD_VLLM["vllm serve"])),
    )
    assert rejection(
        rendered,
        "vllm-client-certificates",
        workload("LeaderWorkerSet", worker, leader=pod_spec(BAD_VLLM["cert reqs 0"])),
    )


def test_vllm_longest_verifiable_command_line(rendered: Rendered) -> None:
    padding = ["--enable-prefix-caching"] * (ARGV_LIMIT - len(SERVE) - len(MODEL) - len(TLS_FLAGS))
    at_limit = workload("Pod", pod_spec(vllm([*MODEL, *padding, *TLS_FLAGS], SERVE)))
    assert admitted(rendered, "vllm-client-certificates", at_limit)
    reqs_last = workload(
        "Pod", pod_spec(vllm([*MODEL, *padding, *without(TLS_FLAGS, "--ssl-cert-reqs"), "--ssl-cert-reqs", "0"], SERVE))
    )
    assert not admitted(rendered, "vllm-client-certificates", reqs_last)


def vllm_service_objects(**kw: Any) -> list[RecordedResource]:
    a = (
        base(**kw)
        if "pipeline_parallel_size" not in kw
        else multi(**{k: v for k, v in kw.items() if k != "pipeline_parallel_size"})
    )
    rec = run(program=lambda: VllmService(a.name, a))
    return [r for r in rec.kubernetes_objects() if r.kind in API]


def test_our_vllm_service_renders_are_admitted(rendered: Rendered) -> None:
    """A VllmService with ServingTls, single node with a benchmark Job and multi-node (LeaderWorkerSet), passes
    every control; without TLS its server is rejected."""
    from components.vllm import Benchmark

    single = vllm_service_objects(tls=TLS, benchmark=Benchmark([1, 8], 100, 512, 128))
    multi_node = vllm_service_objects(tls=TLS, pipeline_parallel_size=2)
    kinds = sorted(r.kind for r in [*single, *multi_node])
    assert kinds == ["Deployment", "Job", "LeaderWorkerSet"]
    for r in [*single, *multi_node]:
        for control in ("images-from-internal-registry", "images-pinned", "vllm-client-certificates"):
            assert admitted(rendered, control, r.inputs), (control, r.display())
        labelled = rendered.policies["workload-labels"]
        assert not evaluate(labelled, r.inputs, namespace="tenant-retail"), r.display()
    [plain] = [r for r in vllm_service_objects() if r.kind == "Deployment"]
    assert "container vllm serves vLLM" in rejection(rendered, "vllm-client-certificates", plain.inputs)
    [plain_lws] = [r for r in vllm_service_objects(pipeline_parallel_size=2) if r.kind == "LeaderWorkerSet"]
    assert rejection(rendered, "vllm-client-certificates", plain_lws.inputs)


# --------------------------------------------------------------------------------------- CEL: required labels


@pytest.mark.parametrize("kind", POD_KINDS)
def test_labels_admit_labelled_templates(rendered: Rendered, kind: str) -> None:
    obj = workload(kind, pod_spec(), namespace="tenant-retail", leader=pod_spec())
    assert admitted(rendered, "workload-labels", obj)


@pytest.mark.parametrize(
    "labels", [{}, {"app": "scoring"}, {"app.kubernetes.io/name": ""}, {"app.kubernetes.io/instance": "scoring"}]
)
@pytest.mark.parametrize("kind", POD_KINDS)
def test_labels_reject_templates_without_a_name(rendered: Rendered, kind: str, labels: dict[str, str]) -> None:
    obj = workload(kind, pod_spec(), namespace="tenant-retail", labels=labels)
    message = rejection(rendered, "workload-labels", obj)
    assert message.startswith(f"{kind} scoring has a pod template without the label app.kubernetes.io/name")


@pytest.mark.parametrize("kind", [k for k in POD_KINDS if k != "Pod"])
def test_labels_reject_a_template_without_metadata(rendered: Rendered, kind: str) -> None:
    obj = workload(kind, pod_spec(), namespace="tenant-retail")
    path = {
        "CronJob": ("spec", "jobTemplate", "spec", "template"),
        "LeaderWorkerSet": ("spec", "leaderWorkerTemplate", "workerTemplate"),
    }
    node = obj
    for key in path.get(kind, ("spec", "template")):
        node = node[key]
    del node["metadata"]
    assert rejection(rendered, "workload-labels", obj)


def test_labels_check_the_leader_template(rendered: Rendered) -> None:
    obj = workload("LeaderWorkerSet", pod_spec(), leader=pod_spec(), leader_labels={"role": "leader"})
    assert rejection(rendered, "workload-labels", obj)


def test_labels_of_the_object_itself_do_not_count(rendered: Rendered) -> None:
    obj = workload("Deployment", pod_spec(), labels={})
    obj["metadata"]["labels"] = dict(APP_LABELS)
    assert rejection(rendered, "workload-labels", obj)


# ------------------------------------------------------------------------------- every policy rejects something

REJECTED: dict[str, Callable[[], dict[str, Any]]] = {
    "images-from-internal-registry": lambda: workload("Pod", pod_spec(container(image="docker.io/nginx:1.27"))),
    "images-pinned": lambda: workload("Pod", pod_spec(container(image=f"{REGISTRY}/platform/app:latest"))),
    "vllm-client-certificates": lambda: workload("Pod", pod_spec(BAD_VLLM["cert reqs 0"])),
    "no-external-services": lambda: service("NodePort", "llm-inference"),
    "workload-labels": lambda: workload("Pod", pod_spec(), labels={}),
}


@pytest.mark.parametrize("control", CONTROLS)
def test_every_policy_rejects_a_bad_object_and_only_for_its_own_reason(rendered: Rendered, control: str) -> None:
    assert sorted(REJECTED) == sorted(rendered.policies)
    bad = REJECTED[control]()
    assert rejection(rendered, control, bad)
    for other in rendered.policies:
        if other != control and matches(rendered.policies[other], bad):
            assert admitted(rendered, other, bad), (control, other)


# ------------------------------------------------------------------------------ the shipped stacks are admitted

STACKS = available_stacks(ROOT)


@functools.cache
def stack(name: str) -> tuple[Recording, PlatformSpec]:
    config = load_stack_config(ROOT, name)
    return run_program(config), spec_of(config)


def namespace_labels(recording: Recording) -> dict[str, dict[str, str]]:
    """Labels of every Namespace of the stack, with the one the API server adds."""
    return {
        r.object_name: {**r.metadata.get("labels", {}), NAME_LABEL: r.object_name}
        for r in recording.of_kind("Namespace")
    }


def guarded(name: str) -> tuple[Recording, PlatformSpec, Rendered, dict[str, dict[str, str]]]:
    """A shipped stack's render, spec, guardrails (rendered alone) and namespace labels; skipped without a registry."""
    recording, spec = stack(name)
    a = guardrails_args(spec)
    if a is None:
        pytest.skip(f"stack {name} has no registry")
    return recording, spec, rendered_of(record(a), spec.name), namespace_labels(recording)


def test_guardrails_args_from_stack_policy_config() -> None:
    _, spec = stack("finance-prod")
    a = guardrails_args(spec)
    assert a is not None
    config = stack_policy_config(spec)
    assert list(a.allowed_registries) == config["allowedRegistries"] != []
    # The gateway's entry, and Harbor's (exposed by a LoadBalancer by default: nodes and the deploy host pull there).
    assert list(a.gateway_namespaces) == config["gatewayNamespaces"]
    assert config["gatewayNamespaces"] == [spec.namespaces.gateway.name, spec.namespaces.registry.name]
    assert a.instance == spec.name
    assert a.tenant_namespace_label == TENANT_NAMESPACE_LABEL


def test_no_registry_no_guardrails() -> None:
    _, spec = stack(STACKS[0])
    assert guardrails_args(spec.model_copy(update={"registry": None})) is None


@pytest.mark.parametrize("name", STACKS)
def test_stack_namespaces_are_guarded(name: str) -> None:
    _, spec, rendered, labels = guarded(name)
    tenants = {t.namespace_name for t in spec.tenants}
    assert tenants <= set(labels)
    for control, binding in rendered.bindings.items():
        selector = binding["spec"]["matchResources"]["namespaceSelector"]
        selected = {ns for ns, ls in labels.items() if selects(selector, ls)}
        # Every namespace the platform creates (the GPU Operator's included) is guarded; labels: tenants only.
        assert selected == (tenants if control == "workload-labels" else set(labels)), control
        for system in ("kube-system", "default"):
            assert not selects(selector, {NAME_LABEL: system})


@pytest.mark.parametrize("name", STACKS)
def test_stack_workloads_and_services_are_admitted(name: str) -> None:
    """Every pod template and Service the stack renders passes every policy whose binding selects its namespace."""
    recording, _, rendered, labels = guarded(name)
    evaluated = 0
    for r in recording.kubernetes_objects():
        if r.kind not in (*API, "Service"):
            continue
        for control, policy in rendered.policies.items():
            selector = rendered.bindings[control]["spec"]["matchResources"]["namespaceSelector"]
            if not matches(policy, r.inputs) or not selects(selector, labels.get(r.namespace or "", {})):
                continue
            assert evaluate(policy, r.inputs) == [], (control, r.display())
            evaluated += 1
    assert evaluated > 0
