"""Mutation test of the policy pack: take each shipped stack's rendered resources, inject each known violation into
a resource that complies, and require the matching policy to fail on it. No injected violation may pass.

Every policy of the pack has at least one mutation, and every mutation applies to at least one shipped stack.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from infra.offline import RecordedResource, Recording, available_stacks, load_stack_config, run_program
from infra.pack_config import stack_pack_config
from infra.tools.checks import CheckResult, run_resource_rules, run_stack_rules, spec_of
from policies.base import POD_TYPES, is_vllm_server, minor_of
from policies.pack import ALL_POLICIES, ALL_STACK_RULES, RESOURCE_RULES
from tests.conftest import ROOT

STACKS = available_stacks(ROOT)
Props = dict[str, Any]


def templates(props: Props) -> list[Props]:
    """Pod specs inside a workload (a Pod is its own template)."""
    spec = props.get("spec") or {}
    if props.get("kind") == "Pod":
        return [spec]
    if props.get("kind") == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if props.get("kind") == "LeaderWorkerSet":
        lwt = spec["leaderWorkerTemplate"]
        return [lwt[t]["spec"] for t in ("leaderTemplate", "workerTemplate") if t in lwt]
    return [spec["template"]["spec"]]


def first_container(props: Props) -> Props:
    container: Props = templates(props)[0]["containers"][0]
    return container


def vllm_container(props: Props) -> Props:
    return next(c for t in templates(props) for c in t["containers"] if is_vllm_server(c))


def pod(mutate: Callable[[Props], Any]) -> Callable[[Props], None]:
    def apply(props: Props) -> None:
        mutate(templates(props)[0])

    return apply


def container(mutate: Callable[[Props], Any]) -> Callable[[Props], None]:
    def apply(props: Props) -> None:
        mutate(first_container(props))

    return apply


def server(mutate: Callable[[Props], Any]) -> Callable[[Props], None]:
    def apply(props: Props) -> None:
        mutate(vllm_container(props))

    return apply


def security(c: Props) -> Props:
    result: Props = c.setdefault("securityContext", {})
    return result


def drop_flag(c: Props, flag: str) -> None:
    args = list(c["args"])
    i = args.index(flag)
    del args[i : i + 2]
    c["args"] = args


def set_flag(c: Props, flag: str, value: str) -> None:
    args = list(c["args"])
    args[args.index(flag) + 1] = value
    c["args"] = args


def is_workload(r: RecordedResource) -> bool:
    return r.type in POD_TYPES


def is_vllm_workload(r: RecordedResource) -> bool:
    if not is_workload(r):
        return False
    try:
        vllm_container(r.inputs)
    except StopIteration:
        return False
    return True


def is_kind(*kinds: str) -> Callable[[RecordedResource], bool]:
    return lambda r: r.is_kubernetes_object and r.kind in kinds


def is_chart(name: str) -> Callable[[RecordedResource], bool]:
    return lambda r: r.is_chart and str(r.inputs.get("chart", "")).rstrip("/").endswith(name)


def is_ilm_config(r: RecordedResource) -> bool:
    return (
        r.is_kubernetes_object and r.kind == "ConfigMap" and "privatellm-audit.policy.json" in r.inputs.get("data", {})
    )


def set_audit_retention(props: Props) -> None:
    policy = json.loads(props["data"]["privatellm-audit.policy.json"])
    policy["policy"]["phases"]["delete"]["min_age"] = "1d"
    props["data"]["privatellm-audit.policy.json"] = json.dumps(policy)


@dataclasses.dataclass(frozen=True)
class Mutation:
    policy: str
    what: str
    target: Callable[[RecordedResource], bool]
    mutate: Callable[[Props], None]
    min_minor: int = 0
    """Version-gated checks (Pod Security Admission): only a violation from this Kubernetes minor on."""


MUTATIONS: list[Mutation] = [
    # Pod Security Standards
    Mutation("pss-host-namespaces", "hostNetwork", is_workload, pod(lambda p: p.update(hostNetwork=True))),
    Mutation("pss-privileged", "privileged", is_workload, container(lambda c: security(c).update(privileged=True))),
    Mutation(
        "pss-capabilities-baseline",
        "adds SYS_ADMIN",
        is_workload,
        container(lambda c: security(c)["capabilities"].update(add=["SYS_ADMIN"])),
    ),
    Mutation(
        "pss-capabilities-restricted",
        "drops nothing",
        is_workload,
        container(lambda c: security(c)["capabilities"].update(drop=[])),
    ),
    Mutation(
        "pss-host-path-volumes",
        "hostPath",
        is_workload,
        pod(lambda p: p.setdefault("volumes", []).append({"name": "host", "hostPath": {"path": "/"}})),
    ),
    Mutation(
        "pss-restricted-volumes",
        "nfs volume",
        is_workload,
        pod(lambda p: p.setdefault("volumes", []).append({"name": "n", "nfs": {"server": "s", "path": "/"}})),
    ),
    Mutation(
        "pss-host-ports",
        "hostPort",
        is_workload,
        container(lambda c: c.setdefault("ports", []).append({"containerPort": 1, "hostPort": 1})),
    ),
    Mutation(
        "pss-apparmor",
        "unconfined",
        is_workload,
        container(lambda c: security(c).update(appArmorProfile={"type": "Unconfined"})),
    ),
    Mutation(
        "pss-selinux",
        "spc_t",
        is_workload,
        container(lambda c: security(c).update(seLinuxOptions={"type": "spc_t"})),
    ),
    Mutation("pss-proc-mount", "Unmasked", is_workload, container(lambda c: security(c).update(procMount="Unmasked"))),
    Mutation(
        "pss-seccomp-baseline",
        "Unconfined",
        is_workload,
        pod(lambda p: p["securityContext"].update(seccompProfile={"type": "Unconfined"})),
    ),
    Mutation(
        "pss-seccomp-restricted",
        "no seccomp profile anywhere",
        is_workload,
        pod(
            lambda p: (
                p["securityContext"].pop("seccompProfile", None),
                [security(c).pop("seccompProfile", None) for c in p["containers"] + p.get("initContainers", [])],
            )
        ),
    ),
    Mutation(
        "pss-sysctls",
        "unsafe sysctl",
        is_workload,
        pod(lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}])),
    ),
    Mutation(
        "pss-host-probes-and-lifecycle",
        "probe to another host",
        is_workload,
        container(lambda c: c.update(readinessProbe={"tcpSocket": {"port": 1, "host": "10.0.0.1"}})),
        min_minor=34,
    ),
    Mutation(
        "pss-allow-privilege-escalation",
        "escalation allowed",
        is_workload,
        container(lambda c: security(c).update(allowPrivilegeEscalation=True)),
    ),
    Mutation(
        "pss-run-as-non-root",
        "runAsNonRoot false",
        is_workload,
        pod(
            lambda p: (
                p["securityContext"].update(runAsNonRoot=False),
                [security(c).pop("runAsNonRoot", None) for c in p["containers"] + p.get("initContainers", [])],
            )
        ),
    ),
    Mutation("pss-run-as-user", "UID 0", is_workload, container(lambda c: security(c).update(runAsUser=0))),
    Mutation(
        "pss-windows-host-process",
        "hostProcess",
        is_workload,
        container(lambda c: security(c).update(windowsOptions={"hostProcess": True})),
    ),
    # Workload rules beyond PSS
    Mutation(
        "no-secret-env-values",
        "password value",
        is_workload,
        container(lambda c: c.setdefault("env", []).append({"name": "DB_PASSWORD", "value": "hunter2"})),
    ),
    Mutation(
        "service-account-token-off",
        "token mounted",
        is_workload,
        pod(lambda p: p.update(automountServiceAccountToken=True)),
    ),
    Mutation(
        "no-system-namespaces",
        "in default",
        is_workload,
        lambda props: props["metadata"].update(namespace="default"),
    ),
    Mutation("container-resources", "no limits", is_workload, container(lambda c: c["resources"].pop("limits"))),
    Mutation(
        "read-only-root-filesystem",
        "writable root",
        is_workload,
        container(lambda c: security(c).update(readOnlyRootFilesystem=False)),
    ),
    Mutation(
        "run-as-high-uid",
        "UID 1000",
        is_workload,
        pod(lambda p: [security(c).update(runAsUser=1000) for c in p["containers"]]),
    ),
    Mutation("no-root-group", "group 0", is_workload, container(lambda c: security(c).update(runAsGroup=0))),
    Mutation(
        "no-shared-process-namespace",
        "shared",
        is_workload,
        pod(lambda p: p.update(shareProcessNamespace=True)),
    ),
    Mutation(
        "server-probes",
        "no probes",
        is_kind("Deployment", "StatefulSet", "DaemonSet", "LeaderWorkerSet"),
        container(lambda c: (c.pop("readinessProbe", None), c.pop("livenessProbe", None))),
    ),
    # Supply chain
    Mutation(
        "images-from-internal-registry",
        "docker.io",
        is_workload,
        container(lambda c: c.update(image="docker.io/library/busybox:1.37")),
    ),
    Mutation(
        "images-pinned",
        ":latest",
        is_workload,
        container(lambda c: c.update(image=c["image"].split("@")[0].rsplit(":", 1)[0] + ":latest")),
    ),
    Mutation(
        "charts-pinned",
        "version range",
        lambda r: r.is_chart,
        lambda props: props.update(version="^1.0"),
    ),
    # Model servers
    Mutation(
        "vllm-client-certificates",
        "no client verification",
        is_vllm_workload,
        server(lambda c: set_flag(c, "--ssl-cert-reqs", "0")),
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
        "registry-project-controls",
        "no scan on push",
        lambda r: r.type == "harbor:index/project:Project",
        lambda props: props.update(vulnerabilityScanning=False),
    ),
    # Data, namespaces, exposure, TLS, observability
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
    Mutation(
        "namespace-pod-security",
        "enforce privileged",
        is_kind("Namespace"),
        lambda props: props["metadata"]["labels"].update({"pod-security.kubernetes.io/enforce": "privileged"}),
    ),
    Mutation(
        "no-external-services",
        "NodePort",
        is_kind("Service"),
        lambda props: props["spec"].update(type="NodePort"),
    ),
    Mutation(
        "gateway-tls-listeners",
        "HTTP listener",
        is_kind("Gateway"),
        lambda props: props["spec"]["listeners"][0].update(protocol="HTTP"),
    ),
    Mutation(
        "certificate-lifetime",
        "ten-year leaf",
        lambda r: is_kind("Certificate")(r) and not r.inputs["spec"].get("isCA"),
        lambda props: props["spec"].update(duration="87600h"),
    ),
    Mutation(
        "key-rotation-period",
        "keys for 1000 days",
        lambda r: (
            r.type == "random:index/randomPassword:RandomPassword"
            and r.inputs.get("keepers", {}).get("purpose") == "gateway-api-key"
        ),
        lambda props: props["keepers"].update(rotationDays="1000"),
    ),
    Mutation(
        "key-rotation-period",
        "keys without a window",
        lambda r: (
            r.type == "random:index/randomPassword:RandomPassword"
            and r.inputs.get("keepers", {}).get("purpose") == "gateway-api-key"
        ),
        lambda props: props["keepers"].pop("window"),
    ),
    Mutation("log-retention", "audit kept a day", is_ilm_config, set_audit_retention),
    Mutation(
        "grafana-anonymous-off",
        "anonymous viewers",
        is_chart("kube-prometheus-stack"),
        lambda props: props["values"]["grafana"]["grafana.ini"]["auth.anonymous"].update(enabled=True),
    ),
    Mutation(
        "elasticsearch-tls",
        "HTTPS off",
        is_kind("Elasticsearch"),
        lambda props: props["spec"]["http"].update(tls={"selfSignedCertificate": {"disabled": True}}),
    ),
]


# Stack rules: the violation is a safeguard taken away (in a namespace that is not a documented exception).
def without_first(recording: Recording, config: dict[str, Any], match: Callable[[RecordedResource], bool]) -> Recording:
    target = next(r for r in recording.resources if r.is_kubernetes_object and match(r) and not exempt(config, r))
    return dataclasses.replace(recording, resources=[r for r in recording.resources if r is not target])


def is_default_deny(r: RecordedResource) -> bool:
    spec = r.inputs.get("spec", {})
    return (
        r.kind == "NetworkPolicy"
        and spec.get("podSelector") == {}
        and not spec.get("ingress")
        and not spec.get("egress")
    )


STACK_MUTATIONS: dict[str, Callable[[RecordedResource], bool]] = {
    "namespace-default-deny": is_default_deny,
    "namespace-quota": lambda r: r.kind == "ResourceQuota",
    "pdb-per-serving-workload": lambda r: r.kind == "PodDisruptionBudget",
    "gateway-authentication": lambda r: r.kind == "SecurityPolicy",
    "gateway-rate-limits": lambda r: r.kind == "BackendTrafficPolicy",
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[Recording, dict[str, Any]]]:
    out = {}
    for name in STACKS:
        config = load_stack_config(ROOT, name)
        out[name] = (run_program(config), stack_pack_config(spec_of(config)))
    return out


@pytest.fixture(params=STACKS)
def stack(
    request: pytest.FixtureRequest, rendered: dict[str, tuple[Recording, dict[str, Any]]]
) -> tuple[str, Recording, dict[str, Any]]:
    recording, config = rendered[request.param]
    return request.param, recording, config


def failures(results: list[CheckResult], policy: str, resource: str | None = None) -> list[CheckResult]:
    return [r for r in results if r.policy == policy and not r.passed and (resource is None or r.resource == resource)]


def rule(name: str) -> Any:
    return next(p for p in ALL_POLICIES if p.name == name)


def test_every_policy_has_a_mutation() -> None:
    assert {m.policy for m in MUTATIONS} | set(STACK_MUTATIONS) | {"no-helm-release"} == {p.name for p in ALL_POLICIES}


def exempt(config: dict[str, Any], r: RecordedResource) -> bool:
    exemptions = next(iter(config.values()))["exemptNamespaces"]
    return (r.object_name if r.kind == "Namespace" else r.namespace) in exemptions


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[f"{m.policy}:{m.what}" for m in MUTATIONS])
def test_injected_violation_fails_its_policy(
    mutation: Mutation, stack: tuple[str, Recording, dict[str, Any]], request: pytest.FixtureRequest
) -> None:
    name, recording, config = stack
    if minor_of(config[mutation.policy]) < mutation.min_minor:
        pytest.skip(f"{mutation.policy} applies from Kubernetes 1.{mutation.min_minor}; {name} targets an older one")
    targets = [r for r in recording.resources if mutation.target(r) and not exempt(config, r)]
    if not targets:
        pytest.skip(f"{name} renders nothing {mutation.policy} applies to ({mutation.what})")
    policy = rule(mutation.policy)
    # only resources that comply before the mutation (dev's images already fail the advisory images-pinned)
    targets = [
        t for t in targets if not failures(run_resource_rules(Recording(name, [t]), config, [policy]), policy.name)
    ]
    if not targets:
        pytest.skip(f"no resource of {name} complies with {mutation.policy} before the mutation")
    for target in targets:
        # fails once the violation is injected
        inputs = copy.deepcopy(target.inputs)
        mutation.mutate(inputs)
        mutated = dataclasses.replace(target, inputs=inputs)
        after = run_resource_rules(Recording(name, [mutated]), config, rules=[policy])
        assert failures(after, mutation.policy), f"{mutation.what} on {target.display()} passed {mutation.policy}"


@pytest.mark.parametrize("policy", sorted(STACK_MUTATIONS))
def test_removed_safeguard_fails_its_stack_rule(policy: str, stack: tuple[str, Recording, dict[str, Any]]) -> None:
    name, recording, config = stack
    assert not failures(run_stack_rules(recording, config), policy)
    try:
        mutated = without_first(recording, config, STACK_MUTATIONS[policy])
    except StopIteration:
        pytest.skip(f"{name} has nothing {policy} guards")
    assert failures(run_stack_rules(mutated, config), policy), f"removing it from {name} passed {policy}"
    assert any(r.name == policy for r in ALL_STACK_RULES)


def test_added_helm_release_fails(stack: tuple[str, Recording, dict[str, Any]]) -> None:
    name, recording, config = stack
    release = RecordedResource(
        urn=f"urn:pulumi:{name}::private-llm::kubernetes:helm.sh/v3:Release::x",
        type="kubernetes:helm.sh/v3:Release",
        name="x",
        custom=True,
        parent=None,
        provider=None,
        inputs={"chart": "harbor", "version": "1.19.1"},
        masked={},
    )
    results = run_resource_rules(dataclasses.replace(recording, resources=[release]), config, rules=RESOURCE_RULES)
    assert failures(results, "no-helm-release")


def test_every_mutation_applies_to_some_shipped_stack(rendered: dict[str, tuple[Recording, dict[str, Any]]]) -> None:
    """A mutation no shipped stack can take would leave its policy untested here."""
    unused = [
        f"{m.policy}:{m.what}"
        for m in MUTATIONS
        if not any(
            minor_of(config[m.policy]) >= m.min_minor
            and any(m.target(r) and not exempt(config, r) for r in rec.resources)
            for rec, config in rendered.values()
        )
    ]
    # Host probes are gated at Kubernetes 1.34; no shipped stack targets it yet (the fixture tests cover the gate).
    assert unused == ["pss-host-probes-and-lifecycle:probe to another host"]
