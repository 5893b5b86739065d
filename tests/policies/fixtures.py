"""Resource fixtures for policy tests: a compliant pod template, wrapped into every pod-bearing kind."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from policies.base import Rule, StackRule
from policies.pack import RESOURCE_RULES, policy_config


def good_container(name: str = "app") -> dict[str, Any]:
    return {
        "name": name,
        "image": "harbor.example.internal/platform/app:1.0.0",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    }


def good_template() -> dict[str, Any]:
    """A pod template that every resource rule of the pack accepts."""
    server = good_container()
    server["readinessProbe"] = {"httpGet": {"path": "/ready", "port": 8080}}
    server["livenessProbe"] = {"httpGet": {"path": "/live", "port": 8080}}
    return {
        "metadata": {"labels": {"app": "demo"}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "initContainers": [good_container("init")],
            "containers": [server],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def vllm_template() -> dict[str, Any]:
    """A compliant pod template whose main container is a vLLM server with mutual TLS."""
    t = good_template()
    server = t["spec"]["containers"][0]
    server["name"] = "vllm"
    server["command"] = ["vllm", "serve"]
    server["args"] = [
        "/models/llama",
        "--max-model-len",
        "8192",
        "--ssl-certfile",
        "/tls/tls.crt",
        "--ssl-keyfile",
        "/tls/tls.key",
        "--ssl-ca-certs",
        "/tls/ca.crt",
        "--ssl-cert-reqs",
        "2",
    ]
    server["env"] = [{"name": "VLLM_NO_USAGE_STATS", "value": "1"}, {"name": "DO_NOT_TRACK", "value": "1"}]
    server["resources"]["requests"]["nvidia.com/gpu"] = "1"
    server["resources"]["limits"]["nvidia.com/gpu"] = "1"
    verify = t["spec"]["initContainers"][0]
    verify["name"] = "verify-weights"
    verify["command"] = ["python3", "/scripts/verify_weights.py", "/models/llama", "/integrity/sha256sums"]
    return t


def _meta(kind: str) -> dict[str, Any]:
    return {"name": f"demo-{kind.lower()}", "namespace": "tenant-demo"}


def wrap(kind: str, template: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(resource type, props) of a `kind` carrying `template` (both LeaderWorkerSet templates get it)."""
    t = copy.deepcopy(dict(template))
    if kind == "Pod":
        return "kubernetes:core/v1:Pod", {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**_meta(kind), **t["metadata"]},
            "spec": t["spec"],
        }
    if kind == "CronJob":
        return "kubernetes:batch/v1:CronJob", {
            "apiVersion": "batch/v1",
            "kind": kind,
            "metadata": _meta(kind),
            "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": t}}},
        }
    if kind == "LeaderWorkerSet":
        return "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet", {
            "apiVersion": "leaderworkerset.x-k8s.io/v1",
            "kind": kind,
            "metadata": _meta(kind),
            "spec": {"leaderWorkerTemplate": {"size": 2, "leaderTemplate": t, "workerTemplate": copy.deepcopy(t)}},
        }
    if kind == "PodTemplate":
        return "kubernetes:core/v1:PodTemplate", {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": _meta(kind),
            "template": t,
        }
    if kind == "ReplicationController":
        return "kubernetes:core/v1:ReplicationController", {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": _meta(kind),
            "spec": {"selector": {"app": "demo"}, "template": t},
        }
    group = {"Job": "batch/v1"}.get(kind, "apps/v1")
    return f"kubernetes:{group}:{kind}", {
        "apiVersion": group,
        "kind": kind,
        "metadata": _meta(kind),
        "spec": {"selector": {"matchLabels": {"app": "demo"}}, "template": t},
    }


POD_KINDS = [
    "Pod",
    "PodTemplate",
    "ReplicationController",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "LeaderWorkerSet",
]


def violations(
    rule: Rule,
    resource_type: str,
    props: Mapping[str, Any],
    kubernetes_version: str = "1.31",
    exempt: dict[str, str] | None = None,
    profile: str = "finance",
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    """What `rule` reports on one resource; `config` (a whole policy config) replaces the one built from the other
    arguments."""
    found: list[str] = []
    args = ResourceValidationArgs(
        resource_type=resource_type,
        props=props,
        urn=f"urn:pulumi:test::private-llm::{resource_type}::fixture",
        name="fixture",
        opts=PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None),
        provider=None,
        config=dict(config) if config is not None else policy_config(kubernetes_version, exempt, profile=profile),
    )
    rule.validate(args, lambda message, urn=None: found.append(message))
    return found


TemplateMutation = Callable[[dict[str, Any]], None]


def mutated(mutation: TemplateMutation) -> dict[str, Any]:
    """The compliant template with one change."""
    template = good_template()
    mutation(template)
    return template


def policy_resource(resource_type: str, props: dict[str, Any], name: str) -> PolicyResource:
    """A resource as stack rules receive it (no options, parent or dependencies)."""
    return PolicyResource(
        resource_type=resource_type,
        props=props,
        urn=f"urn:pulumi:test::p::{resource_type}::{name}",
        name=name,
        opts=None,  # type: ignore[arg-type]
        provider=None,
        parent=None,
        dependencies=[],
        property_dependencies={},
    )


def stack_violations(rule: StackRule, resources: list[PolicyResource], **config: Any) -> list[str]:
    """What a stack rule reports on `resources` under `policy_config(**config)`."""
    found: list[str] = []
    args = StackValidationArgs(resources=resources, config=policy_config(**config))
    rule.validate(args, lambda message, urn=None: found.append(message))
    return found


def main(t: dict[str, Any]) -> dict[str, Any]:
    """The first container of a pod template."""
    container: dict[str, Any] = t["spec"]["containers"][0]
    return container


def init(t: dict[str, Any]) -> dict[str, Any]:
    """The first init container of a pod template."""
    container: dict[str, Any] = t["spec"]["initContainers"][0]
    return container


def env(t: dict[str, Any], name: str, value: str) -> None:
    main(t).setdefault("env", []).append({"name": name, "value": value})


Base = Callable[[], dict[str, Any]]
Case = tuple[str, str, Base, Callable[[dict[str, Any]], Any], bool]
"""(rule, what, base template, mutation of the template, fails)"""


def check_case(rules: Mapping[str, Rule], case: Case, kind: str, kubernetes_version: str = "1.31") -> None:
    """A pod-template case: the mutated template, wrapped as `kind`, fails (both templates of a LeaderWorkerSet are
    checked and named in the message) or passes the rule, for the target version given."""
    rule_id, what, base, mutation, fails = case
    template = base()
    mutation(template)
    resource_type, props = wrap(kind, template)
    found = violations(rules[rule_id], resource_type, props, kubernetes_version)
    if fails:
        assert found, f"{rule_id} should reject {what} on {kind}"
        if kind == "LeaderWorkerSet":
            assert any(m.startswith("leaderTemplate: ") for m in found)
            assert any(m.startswith("workerTemplate: ") for m in found)
    else:
        assert found == [], f"{rule_id} should accept {what} on {kind}: {found}"


def partial_props_do_not_crash(rules: Iterable[Rule]) -> None:
    """Computed values can be missing while previewing: rules treat them as absent, they do not crash."""
    for rule in rules:
        for props in (
            {"spec": {"template": {"spec": {"containers": [None, {}, {"resources": None, "securityContext": None}]}}}},
            {"spec": None},
            {},
        ):
            violations(rule, "kubernetes:apps/v1:Deployment", props)


def in_the_pack_with_report_metadata(rules: Iterable[Rule]) -> None:
    names = {r.name for r in RESOURCE_RULES}
    for rule in rules:
        assert rule.name in names
        assert rule.description and rule.remediation_steps and rule.severity is not None
        assert rule.framework is not None and rule.tags
