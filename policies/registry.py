"""Every policy of the pack, and the config a stack's profile and target version give them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import EnforcementLevel, Policy

from policies.base import DEFAULT_KUBERNETES_VERSION, Rule, StackRule
from policies.inference import INFERENCE_RULES, INFERENCE_STACK_RULES
from policies.namespaces import NAMESPACE_RULES, STACK_RULES
from policies.observability import OBSERVABILITY_RULES
from policies.podsecurity import POD_SECURITY_RULES
from policies.supplychain import SUPPLY_CHAIN_RULES
from policies.tls import TLS_RULES
from policies.workloads import WORKLOAD_RULES

PACK_NAME = "private-llm-baseline"
PACK_DESCRIPTION = "private-llm compliance baseline: Pod Security Standards restricted, CIS/NSA namespace isolation"

RESOURCE_RULES: list[Rule] = [
    *POD_SECURITY_RULES,
    *NAMESPACE_RULES,
    *SUPPLY_CHAIN_RULES,
    *TLS_RULES,
    *OBSERVABILITY_RULES,
    *WORKLOAD_RULES,
    *INFERENCE_RULES,
]
ALL_STACK_RULES: list[StackRule] = [*STACK_RULES, *INFERENCE_STACK_RULES]
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
    allowed_registries: list[str] | None = None,
    immutable_repositories: list[str] | None = None,
    gateway_namespaces: list[str] | None = None,
    max_certificate_days: int = 90,
    max_key_rotation_days: int = 90,
    min_audit_retention_days: int = 365,
    min_app_retention_days: int = 30,
) -> dict[str, Any]:
    """The config every policy receives (the same keys `--policy-pack-config` sets for the real engine)."""
    return {
        "kubernetesVersion": kubernetes_version,
        "exemptNamespaces": dict(exempt_namespaces or {}),
        "allowedRegistries": list(allowed_registries or []),
        "immutableRepositories": list(immutable_repositories or []),
        "gatewayNamespaces": list(gateway_namespaces or []),
        "maxCertificateDays": max_certificate_days,
        "maxKeyRotationDays": max_key_rotation_days,
        "minAuditRetentionDays": min_audit_retention_days,
        "minAppRetentionDays": min_app_retention_days,
    }


def enforcement_of(policy: Policy) -> EnforcementLevel:
    return policy.enforcement_level or EnforcementLevel.MANDATORY


def pack_config(config: dict[str, Any]) -> dict[str, Any]:
    """The `--policy-pack-config` document for `pulumi preview --policy-pack policies`: every policy gets the same
    config the offline check uses, so that both reach the same verdicts."""
    return {policy.name: dict(config) for policy in ALL_POLICIES}


# Enforcement per compliance profile: what the baseline profile only warns about (a developer's registry may not
# offer immutable tags); every other profile enforces everything.
PROFILE_LEVELS: dict[str, dict[str, EnforcementLevel]] = {
    "baseline": {"images-pinned": EnforcementLevel.ADVISORY},
    "finance": {},
    "healthcare": {},
    "government": {},
}


def level_for(policy: Policy, config: Mapping[str, Any]) -> EnforcementLevel:
    """The enforcement level the config gives a policy (`enforcementLevel`, as in --policy-pack-config), else
    its own."""
    value = config.get("enforcementLevel")
    if isinstance(value, str):
        return EnforcementLevel(value)
    return enforcement_of(policy)


def profile_pack_config(profile: str, config: dict[str, Any]) -> dict[str, Any]:
    """Per-policy config with the profile's enforcement levels, the same document for offline and the engine."""
    document = pack_config(config)
    for name, level in PROFILE_LEVELS.get(profile, {}).items():
        document[name]["enforcementLevel"] = level.value
    return document
