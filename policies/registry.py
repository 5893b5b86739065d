"""Every policy of the pack, and the config a stack's profile and target version give them."""

from __future__ import annotations

from typing import Any

from pulumi_policy import EnforcementLevel, Policy

from policies.base import DEFAULT_KUBERNETES_VERSION, Rule, StackRule
from policies.namespaces import NAMESPACE_RULES, STACK_RULES
from policies.podsecurity import POD_SECURITY_RULES

PACK_NAME = "private-llm-baseline"
PACK_DESCRIPTION = "private-llm compliance baseline: Pod Security Standards restricted, CIS/NSA namespace isolation"

RESOURCE_RULES: list[Rule] = [*POD_SECURITY_RULES, *NAMESPACE_RULES]
ALL_STACK_RULES: list[StackRule] = list(STACK_RULES)
ALL_POLICIES: list[Policy] = [*RESOURCE_RULES, *ALL_STACK_RULES]


def _unique_names() -> None:
    names = [p.name for p in ALL_POLICIES]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RuntimeError(f"policy ids must be unique: {sorted(duplicates)}")


_unique_names()


def policy_config(
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    exempt_namespaces: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The config every policy receives (the same keys `--policy-pack-config` sets for the real engine)."""
    return {"kubernetesVersion": kubernetes_version, "exemptNamespaces": dict(exempt_namespaces or {})}


def enforcement_of(policy: Policy) -> EnforcementLevel:
    return policy.enforcement_level or EnforcementLevel.MANDATORY


def pack_config(
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    exempt_namespaces: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The `--policy-pack-config` document for `pulumi preview --policy-pack policies`: every policy gets the same
    config the offline check uses, so that both reach the same verdicts."""
    config = policy_config(kubernetes_version, exempt_namespaces)
    return {policy.name: dict(config) for policy in ALL_POLICIES}
