"""Pod Security Standards rules: every rule passes the compliant template and fails its violating fixtures,
on every pod-bearing kind; version gates follow the configured Kubernetes version."""

from __future__ import annotations

from typing import Any

import pytest

from policies.podsecurity import POD_SECURITY_RULES
from tests.policies.fixtures import POD_KINDS, check_case, good_template, mutated, violations, wrap
from tests.policies.mutations import Mutation, container, is_workload, pod, security

RULES = {rule.name: rule for rule in POD_SECURITY_RULES}


def c(t: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return t["spec"]["containers"][i]


def sc(t: dict[str, Any]) -> dict[str, Any]:
    return t["spec"]["securityContext"]


def add_ephemeral(t: dict[str, Any], **security: Any) -> None:
    container = {"name": "debug", "image": "x", "securityContext": {"allowPrivilegeEscalation": False, **security}}
    t["spec"]["ephemeralContainers"] = [container]


# (rule, description, mutation, kubernetes version, fails?)
CASES: list[tuple[str, str, Any, str, bool]] = [
    ("pss-host-namespaces", "hostNetwork", lambda t: t["spec"].update(hostNetwork=True), "1.31", True),
    ("pss-host-namespaces", "hostPID", lambda t: t["spec"].update(hostPID=True), "1.31", True),
    ("pss-host-namespaces", "hostIPC", lambda t: t["spec"].update(hostIPC=True), "1.31", True),
    ("pss-host-namespaces", "explicit false", lambda t: t["spec"].update(hostNetwork=False), "1.31", False),
    ("pss-privileged", "container", lambda t: c(t)["securityContext"].update(privileged=True), "1.31", True),
    (
        "pss-privileged",
        "init container",
        lambda t: t["spec"]["initContainers"][0]["securityContext"].update(privileged=True),
        "1.31",
        True,
    ),
    ("pss-privileged", "ephemeral container", lambda t: add_ephemeral(t, privileged=True), "1.31", True),
    ("pss-privileged", "explicit false", lambda t: c(t)["securityContext"].update(privileged=False), "1.31", False),
    (
        "pss-capabilities-baseline",
        "SYS_ADMIN",
        lambda t: c(t)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        "1.31",
        True,
    ),
    (
        "pss-capabilities-baseline",
        "CHOWN is baseline",
        lambda t: c(t)["securityContext"]["capabilities"].update(add=["CHOWN"]),
        "1.31",
        False,
    ),
    (
        "pss-host-path-volumes",
        "hostPath",
        lambda t: t["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "1.31",
        True,
    ),
    (
        "pss-host-ports",
        "hostPort",
        lambda t: c(t).update(ports=[{"containerPort": 80, "hostPort": 8080}]),
        "1.31",
        True,
    ),
    (
        "pss-host-ports",
        "hostPort 0",
        lambda t: c(t).update(ports=[{"containerPort": 80, "hostPort": 0}]),
        "1.31",
        False,
    ),
    (
        "pss-apparmor",
        "annotation unconfined",
        lambda t: t["metadata"].update(
            annotations={"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}
        ),
        "1.31",
        True,
    ),
    (
        "pss-apparmor",
        "annotation runtime/default",
        lambda t: t["metadata"].update(
            annotations={"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}
        ),
        "1.31",
        False,
    ),
    (
        "pss-apparmor",
        "pod field Unconfined",
        lambda t: sc(t).update(appArmorProfile={"type": "Unconfined"}),
        "1.31",
        True,
    ),
    (
        "pss-apparmor",
        "container field Localhost",
        lambda t: c(t)["securityContext"].update(appArmorProfile={"type": "Localhost", "localhostProfile": "p"}),
        "1.31",
        False,
    ),
    ("pss-selinux", "spc_t type", lambda t: sc(t).update(seLinuxOptions={"type": "spc_t"}), "1.31", True),
    (
        "pss-selinux",
        "user set",
        lambda t: c(t)["securityContext"].update(seLinuxOptions={"user": "system_u"}),
        "1.31",
        True,
    ),
    (
        "pss-selinux",
        "container_t",
        lambda t: c(t)["securityContext"].update(seLinuxOptions={"type": "container_t", "level": "s0:c1"}),
        "1.31",
        False,
    ),
    (
        "pss-selinux",
        "container_engine_t on 1.31",
        lambda t: sc(t).update(seLinuxOptions={"type": "container_engine_t"}),
        "1.31",
        False,
    ),
    ("pss-proc-mount", "Unmasked", lambda t: c(t)["securityContext"].update(procMount="Unmasked"), "1.31", True),
    ("pss-proc-mount", "Default", lambda t: c(t)["securityContext"].update(procMount="Default"), "1.31", False),
    (
        "pss-seccomp-baseline",
        "pod Unconfined",
        lambda t: sc(t).update(seccompProfile={"type": "Unconfined"}),
        "1.31",
        True,
    ),
    (
        "pss-seccomp-baseline",
        "container Unconfined",
        lambda t: c(t)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "1.31",
        True,
    ),
    (
        "pss-sysctls",
        "kernel.msgmax",
        lambda t: sc(t).update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
        "1.31",
        True,
    ),
    (
        "pss-sysctls",
        "tcp_keepalive_time on 1.31",
        lambda t: sc(t).update(sysctls=[{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]),
        "1.31",
        False,
    ),
    (
        "pss-sysctls",
        "tcp_rmem on 1.31",
        lambda t: sc(t).update(sysctls=[{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}]),
        "1.31",
        True,
    ),
    (
        "pss-sysctls",
        "tcp_rmem on 1.32",
        lambda t: sc(t).update(sysctls=[{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}]),
        "1.32",
        False,
    ),
    ("pss-windows-host-process", "pod", lambda t: sc(t).update(windowsOptions={"hostProcess": True}), "1.31", True),
    (
        "pss-windows-host-process",
        "container",
        lambda t: c(t)["securityContext"].update(windowsOptions={"hostProcess": True}),
        "1.31",
        True,
    ),
    (
        "pss-host-probes-and-lifecycle",
        "probe host on 1.34",
        lambda t: c(t).update(livenessProbe={"httpGet": {"host": "10.0.0.1", "port": 80}}),
        "1.34",
        True,
    ),
    (
        "pss-host-probes-and-lifecycle",
        "lifecycle host on 1.35",
        lambda t: c(t).update(lifecycle={"preStop": {"tcpSocket": {"host": "x", "port": 1}}}),
        "1.35",
        True,
    ),
    (
        "pss-host-probes-and-lifecycle",
        "probe host on 1.33",
        lambda t: c(t).update(livenessProbe={"httpGet": {"host": "10.0.0.1", "port": 80}}),
        "1.33",
        False,
    ),
    (
        "pss-host-probes-and-lifecycle",
        "probe without host",
        lambda t: c(t).update(readinessProbe={"httpGet": {"path": "/health", "port": 80}}),
        "1.34",
        False,
    ),
    (
        "pss-restricted-volumes",
        "nfs",
        lambda t: t["spec"]["volumes"].append({"name": "n", "nfs": {"server": "s", "path": "/"}}),
        "1.31",
        True,
    ),
    (
        "pss-restricted-volumes",
        "hostPath",
        lambda t: t["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "1.31",
        True,
    ),
    (
        "pss-restricted-volumes",
        "pvc, secret, projected",
        lambda t: t["spec"]["volumes"].extend(
            [
                {"name": "p", "persistentVolumeClaim": {"claimName": "c"}},
                {"name": "s", "secret": {"secretName": "s"}},
                {"name": "j", "projected": {"sources": []}},
            ]
        ),
        "1.31",
        False,
    ),
    (
        "pss-restricted-volumes",
        "image volume on 1.32",
        lambda t: t["spec"]["volumes"].append({"name": "m", "image": {"reference": "r"}}),
        "1.32",
        True,
    ),
    (
        "pss-restricted-volumes",
        "image volume on 1.33",
        lambda t: t["spec"]["volumes"].append({"name": "m", "image": {"reference": "r"}}),
        "1.33",
        False,
    ),
    (
        "pss-restricted-volumes",
        "volume without source",
        lambda t: t["spec"]["volumes"].append({"name": "e"}),
        "1.31",
        False,
    ),
    (
        "pss-sysctls",
        "tcp_notsent_lowat on 1.36",
        lambda t: sc(t).update(sysctls=[{"name": "net.ipv4.tcp_notsent_lowat", "value": "1"}]),
        "1.36",
        True,
    ),
    (
        "pss-sysctls",
        "tcp_notsent_lowat on 1.37",
        lambda t: sc(t).update(sysctls=[{"name": "net.ipv4.tcp_notsent_lowat", "value": "1"}]),
        "1.37",
        False,
    ),
    (
        "pss-apparmor",
        "empty annotation",
        lambda t: t["metadata"].update(annotations={"container.apparmor.security.beta.kubernetes.io/app": ""}),
        "1.31",
        False,
    ),
    (
        "pss-allow-privilege-escalation",
        "windows pod exempt",
        lambda t: (t["spec"].update(os={"name": "windows"}), c(t)["securityContext"].pop("allowPrivilegeEscalation")),
        "1.31",
        False,
    ),
    (
        "pss-capabilities-restricted",
        "windows pod exempt",
        lambda t: (t["spec"].update(os={"name": "windows"}), c(t)["securityContext"].pop("capabilities")),
        "1.31",
        False,
    ),
    (
        "pss-seccomp-restricted",
        "windows pod exempt",
        lambda t: (t["spec"].update(os={"name": "windows"}), sc(t).pop("seccompProfile")),
        "1.31",
        False,
    ),
    (
        "pss-run-as-non-root",
        "hostUsers false on 1.34",
        lambda t: (t["spec"].update(hostUsers=False), sc(t).pop("runAsNonRoot")),
        "1.34",
        True,
    ),
    (
        "pss-run-as-non-root",
        "hostUsers false on 1.35",
        lambda t: (t["spec"].update(hostUsers=False), sc(t).pop("runAsNonRoot")),
        "1.35",
        False,
    ),
    (
        "pss-run-as-user",
        "hostUsers false root on 1.35",
        lambda t: (t["spec"].update(hostUsers=False), sc(t).update(runAsUser=0)),
        "1.35",
        False,
    ),
    (
        "pss-proc-mount",
        "hostUsers false does not relax restricted",
        lambda t: (t["spec"].update(hostUsers=False), c(t)["securityContext"].update(procMount="Unmasked")),
        "1.35",
        True,
    ),
    (
        "pss-allow-privilege-escalation",
        "unset",
        lambda t: c(t)["securityContext"].pop("allowPrivilegeEscalation"),
        "1.31",
        True,
    ),
    (
        "pss-allow-privilege-escalation",
        "true",
        lambda t: c(t)["securityContext"].update(allowPrivilegeEscalation=True),
        "1.31",
        True,
    ),
    (
        "pss-allow-privilege-escalation",
        "ephemeral unset",
        lambda t: t["spec"].update(ephemeralContainers=[{"name": "d", "image": "x"}]),
        "1.31",
        True,
    ),
    ("pss-run-as-non-root", "pod false", lambda t: sc(t).update(runAsNonRoot=False), "1.31", True),
    ("pss-run-as-non-root", "unset everywhere", lambda t: sc(t).pop("runAsNonRoot"), "1.31", True),
    (
        "pss-run-as-non-root",
        "container false",
        lambda t: c(t)["securityContext"].update(runAsNonRoot=False),
        "1.31",
        True,
    ),
    (
        "pss-run-as-non-root",
        "set on every container only",
        lambda t: (
            sc(t).pop("runAsNonRoot"),
            [
                x["securityContext"].update(runAsNonRoot=True)
                for x in t["spec"]["containers"] + t["spec"]["initContainers"]
            ],
        ),
        "1.31",
        False,
    ),
    ("pss-run-as-user", "pod root", lambda t: sc(t).update(runAsUser=0), "1.31", True),
    ("pss-run-as-user", "container root", lambda t: c(t)["securityContext"].update(runAsUser=0), "1.31", True),
    ("pss-run-as-user", "unset", lambda t: sc(t).pop("runAsUser"), "1.31", False),
    ("pss-seccomp-restricted", "unset everywhere", lambda t: sc(t).pop("seccompProfile"), "1.31", True),
    (
        "pss-seccomp-restricted",
        "container Unconfined",
        lambda t: c(t)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "1.31",
        True,
    ),
    (
        "pss-seccomp-restricted",
        "on every container only",
        lambda t: (
            sc(t).pop("seccompProfile"),
            [
                x["securityContext"].update(seccompProfile={"type": "Localhost", "localhostProfile": "p"})
                for x in t["spec"]["containers"] + t["spec"]["initContainers"]
            ],
        ),
        "1.31",
        False,
    ),
    ("pss-capabilities-restricted", "no drop", lambda t: c(t)["securityContext"].pop("capabilities"), "1.31", True),
    (
        "pss-capabilities-restricted",
        "drop NET_RAW only",
        lambda t: c(t)["securityContext"].update(capabilities={"drop": ["NET_RAW"]}),
        "1.31",
        True,
    ),
    (
        "pss-capabilities-restricted",
        "adds CHOWN",
        lambda t: c(t)["securityContext"]["capabilities"].update(add=["CHOWN"]),
        "1.31",
        True,
    ),
    (
        "pss-capabilities-restricted",
        "adds NET_BIND_SERVICE",
        lambda t: c(t)["securityContext"]["capabilities"].update(add=["NET_BIND_SERVICE"]),
        "1.31",
        False,
    ),
]


def test_every_rule_has_a_violating_fixture() -> None:
    failing = {rule for rule, _, _, _, fails in CASES if fails}
    assert failing == set(RULES)


@pytest.mark.parametrize("kind", POD_KINDS)
@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_compliant_template_passes(rule_id: str, kind: str) -> None:
    resource_type, props = wrap(kind, good_template())
    assert violations(RULES[rule_id], resource_type, props, "1.35") == []


@pytest.mark.parametrize("kind", POD_KINDS)
@pytest.mark.parametrize(
    ("rule_id", "what", "mutation", "version", "fails"), CASES, ids=[f"{r}:{w}" for r, w, *_ in CASES]
)
def test_fixture(rule_id: str, what: str, mutation: Any, version: str, fails: bool, kind: str) -> None:
    check_case(RULES, (rule_id, what, good_template, mutation, fails), kind, version)


def test_only_the_worker_template_is_bad() -> None:
    resource_type, props = wrap("LeaderWorkerSet", good_template())
    props["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["hostNetwork"] = True
    assert violations(RULES["pss-host-namespaces"], resource_type, props) == [
        "workerTemplate: spec.hostNetwork is true; pods must not share the node's namespaces"
    ]


def test_messages_name_the_container() -> None:
    resource_type, props = wrap("Deployment", mutated(lambda t: c(t)["securityContext"].update(privileged=True)))
    assert violations(RULES["pss-privileged"], resource_type, props) == [
        "container 'app' sets securityContext.privileged=true"
    ]


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_unrelated_types_are_ignored(rule_id: str) -> None:
    props = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "spec": {"hostNetwork": True}}
    assert violations(RULES[rule_id], "kubernetes:core/v1:ConfigMap", props) == []


def test_exempt_namespace_is_skipped_with_its_reason_in_config() -> None:
    resource_type, props = wrap("DaemonSet", mutated(lambda t: c(t)["securityContext"].update(privileged=True)))
    rule = RULES["pss-privileged"]
    assert violations(rule, resource_type, props)
    assert violations(rule, resource_type, props, exempt={"tenant-demo": "GPU driver needs the host"}) == []
    assert violations(rule, resource_type, props, exempt={"other": "reason"})


def test_partial_props_during_preview_do_not_crash() -> None:
    # Computed values can be missing while previewing; rules must treat them as absent, not crash.
    for rule in RULES.values():
        violations(rule, "kubernetes:apps/v1:Deployment", {"spec": {"template": {"spec": {"containers": [None, {}]}}}})
        violations(rule, "kubernetes:apps/v1:Deployment", {"spec": None})


def test_rules_carry_report_metadata() -> None:
    for rule in RULES.values():
        assert rule.description and rule.remediation_steps
        assert rule.severity is not None and rule.framework is not None
        assert any(tag.startswith("Kubernetes Pod Security Standards") for tag in rule.tags or [])


# ---------------------------------------------------------------------------------------------------------------
# Mutations: each a violation injected into every shipped stack's render (tests/stacks/test_mutations.py)
# ---------------------------------------------------------------------------------------------------------------

MUTATIONS: list[Mutation] = [
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
]
