"""Namespace-level controls: every namespace we create is isolated by default and enforces the restricted level."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import PolicyResource, Severity, StackValidationArgs

from policies.base import Rule, StackRule, cis, exemption_for, get_path, minor_of, nsa, owasp

NAMESPACE = "kubernetes:core/v1:Namespace"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PSA_PREFIX = "pod-security.kubernetes.io/"


def is_default_deny(props: Mapping[str, Any]) -> bool:
    """A NetworkPolicy that selects every pod, covers Ingress and Egress, and allows nothing."""
    spec = props.get("spec")
    if not isinstance(spec, Mapping):
        return False
    selector = spec.get("podSelector")
    if selector is None or not isinstance(selector, Mapping):
        return False
    if selector.get("matchLabels") or selector.get("matchExpressions"):
        return False
    types = spec.get("policyTypes") or []
    if not {"Ingress", "Egress"} <= set(types):
        return False
    return not spec.get("ingress") and not spec.get("egress")


def _name(resource: PolicyResource) -> str | None:
    name = get_path(resource.props, ("metadata", "name"))
    return name if isinstance(name, str) else None


def default_deny_per_namespace(args: StackValidationArgs) -> list[tuple[str, str | None]]:
    config = args.get_config()
    covered = {
        get_path(r.props, ("metadata", "namespace"))
        for r in args.resources
        if r.resource_type == NETWORK_POLICY and is_default_deny(r.props)
    }
    violations: list[tuple[str, str | None]] = []
    for r in args.resources:
        if r.resource_type != NAMESPACE:
            continue
        name = _name(r)
        if name is None or name in covered or exemption_for(config, name) is not None:
            continue
        violations.append(
            (
                f"namespace {name!r} has no default-deny NetworkPolicy (empty podSelector, policyTypes Ingress and "
                "Egress, no rules)",
                r.urn,
            )
        )
    return violations


def namespace_pod_security(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    labels = get_path(props, ("metadata", "labels")) or {}
    if not isinstance(labels, Mapping):
        labels = {}
    name = get_path(props, ("metadata", "name"))
    if exemption_for(config, name if isinstance(name, str) else None) is not None:
        return []
    expected_version = f"v1.{minor_of(config)}"
    out = []
    for mode in ("enforce", "audit", "warn"):
        level = labels.get(f"{PSA_PREFIX}{mode}")
        if level != "restricted":
            out.append(f"label {PSA_PREFIX}{mode} is {level!r}; it must be 'restricted'")
        version = labels.get(f"{PSA_PREFIX}{mode}-version")
        if version != expected_version:
            out.append(
                f"label {PSA_PREFIX}{mode}-version is {version!r}; pin it to the target version {expected_version!r}"
            )
    return out


NAMESPACE_RULES: list[Rule] = [
    Rule(
        name="namespace-pod-security",
        description=(
            "Pod Security Admission enforces the restricted level inside the cluster, so that a `kubectl apply` "
            "cannot bypass the pack; the version is pinned so that a cluster upgrade never changes what is enforced."
        ),
        check=namespace_pod_security,
        resource_types=[NAMESPACE],
        standards=(nsa("Pod security: Pod Security Admission"), cis("5.2.1")),
        remediation=(
            "Label the namespace pod-security.kubernetes.io/{enforce,audit,warn}=restricted and "
            "pod-security.kubernetes.io/{enforce,audit,warn}-version=v<target minor>; a namespace that must be "
            "privileged is listed in exemptNamespaces with its reason."
        ),
    )
]

RESOURCE_QUOTA = "kubernetes:core/v1:ResourceQuota"
LIMIT_RANGE = "kubernetes:core/v1:LimitRange"


def quota_per_namespace(args: StackValidationArgs) -> list[tuple[str, str | None]]:
    config = args.get_config()
    have: dict[str, set[Any]] = {RESOURCE_QUOTA: set(), LIMIT_RANGE: set()}
    for r in args.resources:
        if r.resource_type in have:
            have[r.resource_type].add(get_path(r.props, ("metadata", "namespace")))
    violations: list[tuple[str, str | None]] = []
    for r in args.resources:
        if r.resource_type != NAMESPACE:
            continue
        name = _name(r)
        if name is None or exemption_for(config, name) is not None:
            continue
        missing = [kind.rsplit(":", 1)[-1] for kind, namespaces in have.items() if name not in namespaces]
        if missing:
            violations.append(
                (f"namespace {name!r} has no {' and no '.join(missing)}: its pods' consumption is unbounded", r.urn)
            )
    return violations


STACK_RULES: list[StackRule] = [
    StackRule(
        name="namespace-default-deny",
        description=(
            "Every namespace the stack creates starts from a default-deny NetworkPolicy for ingress and egress; "
            "traffic flows only through explicit allows (lateral movement and data exfiltration stop at the "
            "namespace boundary)."
        ),
        check=default_deny_per_namespace,
        standards=(cis("5.3.2"), nsa("Network separation and hardening")),
        remediation=(
            "Add a NetworkPolicy in the namespace with podSelector: {}, policyTypes: [Ingress, Egress] and no rules, "
            "then add explicit allows (DNS, the services the namespace must reach)."
        ),
        severity=Severity.HIGH,
    ),
    StackRule(
        name="namespace-quota",
        description=(
            "Every namespace the stack creates has a ResourceQuota and a LimitRange: a tenant's workloads cannot take "
            "more CPU, memory, GPUs or objects than granted, and containers without requests get defaults."
        ),
        check=quota_per_namespace,
        standards=(nsa("Resource policies"), owasp("LLM10: Unbounded Consumption")),
        remediation="Create the namespace with SecureNamespace (quota and limits from the stack file), or add both.",
        severity=Severity.MEDIUM,
    ),
]
