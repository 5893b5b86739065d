"""Every policy of the pack, and the config a stack's profile and target version give them."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft7Validator
from pulumi_policy import EnforcementLevel, Policy

from policies.base import CONFIG_PROPERTIES, DEFAULT_KUBERNETES_VERSION, Rule, StackRule
from policies.gateway import GATEWAY_RULES, GATEWAY_STACK_RULES
from policies.inference import INFERENCE_RULES, INFERENCE_STACK_RULES
from policies.namespaces import NAMESPACE_RULES, STACK_RULES
from policies.observability import OBSERVABILITY_RULES
from policies.podsecurity import POD_SECURITY_RULES
from policies.profiles import DEFAULT_PROFILE, LEVELS, THRESHOLD_KEYS
from policies.supplychain import SUPPLY_CHAIN_RULES
from policies.tls import TLS_RULES
from policies.workloads import WORKLOAD_RULES

PACK_NAME = "private-llm-baseline"
PACK_DESCRIPTION = (
    "private-llm compliance baseline: Pod Security Standards restricted, CIS Kubernetes 5, NSA/CISA hardening, "
    "OWASP Top 10 for LLM Applications, platform rules"
)

RESOURCE_RULES: list[Rule] = [
    *POD_SECURITY_RULES,
    *NAMESPACE_RULES,
    *SUPPLY_CHAIN_RULES,
    *TLS_RULES,
    *OBSERVABILITY_RULES,
    *WORKLOAD_RULES,
    *INFERENCE_RULES,
    *GATEWAY_RULES,
]
ALL_STACK_RULES: list[StackRule] = [*STACK_RULES, *INFERENCE_STACK_RULES, *GATEWAY_STACK_RULES]
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
    profile: str = DEFAULT_PROFILE,
    chart_registries: list[str] | None = None,
    revision_weights: dict[str, dict[str, int]] | None = None,
    **thresholds: int,
) -> dict[str, Any]:
    """The config every policy receives (the same keys `--policy-pack-config` sets for the real engine).

    Thresholds (maxCertificateDays, maxKeyRotationDays, minAuditRetentionDays, minAppRetentionDays) come from the
    profile unless given here; an explicit one is written into the config and wins."""
    unknown = set(thresholds) - set(THRESHOLD_KEYS)
    if unknown:
        raise TypeError(f"unknown thresholds {sorted(unknown)}; known: {', '.join(THRESHOLD_KEYS)}")
    return {
        "profile": profile,
        "kubernetesVersion": kubernetes_version,
        "exemptNamespaces": dict(exempt_namespaces or {}),
        "allowedRegistries": list(allowed_registries or []),
        "immutableRepositories": list(immutable_repositories or []),
        "gatewayNamespaces": list(gateway_namespaces or []),
        # Only where the stack declares chart locations beyond its image registries (else: allowedRegistries).
        **({"chartRegistries": list(chart_registries)} if chart_registries else {}),
        # Only for stacks whose models have revisions.
        **({"revisionWeights": {m: dict(w) for m, w in revision_weights.items()}} if revision_weights else {}),
        **thresholds,
    }


def enforcement_of(policy: Policy) -> EnforcementLevel:
    return policy.enforcement_level or EnforcementLevel.MANDATORY


def pack_config(config: dict[str, Any]) -> dict[str, Any]:
    """The `--policy-pack-config` document for `pulumi preview --policy-pack policies`: every policy gets the same
    config the offline check uses, so that both reach the same verdicts."""
    return {policy.name: dict(config) for policy in ALL_POLICIES}


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
    for name, level in LEVELS.get(profile, {}).items():
        document[name]["enforcementLevel"] = level.value
    return document


ENFORCEMENT_LEVELS = tuple(level.value for level in EnforcementLevel)
_POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {**CONFIG_PROPERTIES, "enforcementLevel": {"type": "string", "enum": list(ENFORCEMENT_LEVELS)}},
    "additionalProperties": False,
}


_POLICY_VALIDATOR = Draft7Validator(_POLICY_SCHEMA)


def _schema_problems(where: str, value: Any) -> list[str]:
    validator = _POLICY_VALIDATOR
    problems = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in error.absolute_path)
        at = f"{where}.{path}" if path else where
        if error.validator == "additionalProperties" and not error.absolute_path:
            for key in sorted(set(value) - set(_POLICY_SCHEMA["properties"])):
                close = difflib.get_close_matches(key, list(_POLICY_SCHEMA["properties"]), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(f"{where}.{key} is not a policy config key{hint}")
        elif error.validator == "pattern" and "exemptNamespaces" in error.absolute_path:
            problems.append(f"{at}={error.instance!r}: an exception needs its reason, a sentence of 10+ characters")
        else:
            problems.append(f"{at}={error.instance!r}: {error.message}")
    return problems


def validate_pack_config(document: Any) -> list[str]:
    """Problems of a `--policy-pack-config` document ({policy id or "all": level or config}), each naming the
    policy, the key and what is wrong; empty when it is valid. The offline check refuses an invalid document
    before running anything, as the engine refuses one at preview."""
    if not isinstance(document, Mapping):
        return [f"the policy pack config must be an object of policy ids, not {type(document).__name__}"]
    names = [p.name for p in ALL_POLICIES]
    problems: list[str] = []
    for name, value in document.items():
        if name != "all" and name not in names:
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{name!r} is not a policy of {PACK_NAME}{hint}")
            continue
        if isinstance(value, str):
            if value not in ENFORCEMENT_LEVELS:
                problems.append(f"{name}={value!r}: the level must be one of {', '.join(ENFORCEMENT_LEVELS)}")
            continue
        problems += _schema_problems(str(name), value)
    return problems


def validate_policy_config(config: Any) -> list[str]:
    """Problems of one policy's config document (the shared form the offline check also accepts)."""
    return _schema_problems("config", config)


def is_pack_document(config: Mapping[str, Any]) -> bool:
    """A per-policy document ({policy id: config}) rather than one shared config."""
    names = {p.name for p in ALL_POLICIES} | {"all"}
    return (
        bool(config) and all(k in names for k in config) and all(isinstance(v, Mapping | str) for v in config.values())
    )


def merge_pack_config(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A per-policy document with `overrides` ({policy id or "all": level or config}) applied over `base`: "all"
    first, then the named policies; a string is an enforcement level."""
    merged = {name: dict(value) for name, value in base.items()}
    ordered = sorted(overrides.items(), key=lambda item: item[0] != "all")
    for name, value in ordered:
        targets = list(merged) if name == "all" else [name]
        update = {"enforcementLevel": value} if isinstance(value, str) else dict(value)
        for target in targets:
            merged.setdefault(target, {}).update(update)
    return merged
