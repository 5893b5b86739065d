"""Workload rules (CIS/NSA/OWASP beyond PSS): a passing and a violating fixture per pod kind, unrelated types,
system namespaces, exemptions."""

from __future__ import annotations

from typing import Any

import pytest

from policies.workloads import NAMESPACED_TYPES, SERVER_TYPES, WORKLOAD_RULES
from tests.policies.fixtures import (
    POD_KINDS,
    Case,
    env,
    good_template,
    init,
    main,
    violations,
    wrap,
)
from tests.policies.mutations import Mutation, container, is_kind, is_workload, pod, security

RULES = {r.name: r for r in WORKLOAD_RULES}

CASES: list[Case] = [
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
]
POD_RULES = sorted(r for r in RULES if r not in ("server-probes", "no-system-namespaces"))


def test_every_pod_rule_has_a_violating_fixture() -> None:
    assert {rule for rule, *_, fails in CASES if fails} == set(POD_RULES)


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


def test_exempt_namespace_is_skipped() -> None:
    template = good_template()
    template["spec"]["automountServiceAccountToken"] = True
    resource_type, props = wrap("Deployment", template)
    rule = RULES["service-account-token-off"]
    assert violations(rule, resource_type, props)
    assert violations(rule, resource_type, props, exempt={"tenant-demo": "operator calls the API"}) == []


# ---------------------------------------------------------------------------------------------------------------
# Mutations: each a violation injected into every shipped stack's render (tests/stacks/test_mutations.py)
# ---------------------------------------------------------------------------------------------------------------

MUTATIONS: list[Mutation] = [
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
]
