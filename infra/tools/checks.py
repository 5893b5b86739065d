"""`check`: run the policy pack and schema validation over an offline recording.

The rules are the very objects `policies/__main__.py` hands to CrossGuard; here they are called with
`ResourceValidationArgs` / `StackValidationArgs` built from the recording, with the config the stack implies.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from infra.config import FULL_PLATFORM_KEY, PlatformSpec, parse_platform
from infra.offline import RecordedResource, Recording, StackConfig
from infra.pack_config import stack_pack_config
from infra.tools.schemas import CrdSchemas, is_builtin, validate_builtin
from policies.base import Rule, exemption_for, namespace_of
from policies.inference import RETAIN_ANNOTATION
from policies.pack import (
    ALL_STACK_RULES,
    RESOURCE_RULES,
    enforcement_of,
    is_pack_document,
    level_for,
    merge_pack_config,
    validate_pack_config,
    validate_policy_config,
)

SCHEMA_POLICY = "kubernetes-schema"
DATA_VOLUMES_RULE = next(r for r in RESOURCE_RULES if r.name == "data-volumes-retained")
CRD_POLICY = "crd-schema"


@dataclass(frozen=True)
class CheckResult:
    policy: str
    resource: str
    level: str
    passed: bool
    message: str


@dataclass
class CheckReport:
    stack: str
    profile: str
    kubernetes_version: str
    results: list[CheckResult] = field(default_factory=list)
    resources: int = 0
    policies: list[tuple[str, str]] = field(default_factory=list)
    """(policy id, level) of every policy that ran, including those no resource of the stack was subject to."""

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    @property
    def mandatory_failures(self) -> list[CheckResult]:
        return [r for r in self.failures if r.level == "mandatory"]

    @property
    def ok(self) -> bool:
        return not self.mandatory_failures

    def summary(self) -> dict[str, Any]:
        failed = Counter(r.level for r in self.failures)
        return {
            "stack": self.stack,
            "profile": self.profile,
            "kubernetesVersion": self.kubernetes_version,
            "resources": self.resources,
            "results": len(self.results),
            "passed": sum(1 for r in self.results if r.passed),
            "failedMandatory": failed.get("mandatory", 0),
            "failedAdvisory": failed.get("advisory", 0),
            "policies": sorted({name for name, _ in self.policies} | {r.policy for r in self.results}),
            "ok": self.ok,
        }

    def to_json(self) -> str:
        return json.dumps({"results": [asdict(r) for r in self.results], "summary": self.summary()}, indent=2)


class PolicyConfigError(ValueError):
    """The policy pack config is invalid: every problem, each naming the policy, key and fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid policy pack config:\n" + "\n".join(f"  - {p}" for p in problems))


def _options(resource: RecordedResource) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=bool(resource.options.get("protect")),
        ignore_changes=list(resource.options.get("ignoreChanges", [])),
        delete_before_replace=resource.options.get("deleteBeforeReplace"),
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=list(resource.options.get("additionalSecretOutputs", [])),
        parent=resource.parent,
    )


def _await(result: Any) -> None:
    if inspect.isawaitable(result):
        asyncio.run(_wrap(result))


async def _wrap(awaitable: Any) -> None:
    await awaitable


def _collector(messages: list[str]) -> Callable[[str, str | None], None]:
    def report(message: str, urn: str | None = None) -> None:
        messages.append(message)

    return report


def _pair_collector(violations: list[tuple[str, str | None]]) -> Callable[[str, str | None], None]:
    def report(message: str, urn: str | None = None) -> None:
        violations.append((message, urn))

    return report


def _level(policy: Any, config: Mapping[str, Any] | None = None) -> str:
    level = level_for(policy, config) if config is not None else enforcement_of(policy)
    return "mandatory" if level in (EnforcementLevel.MANDATORY, EnforcementLevel.REMEDIATE) else level.value


def _config_for(policy: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config one policy receives: per-policy documents (pack config) or one shared document."""
    if policy.name in config and isinstance(config[policy.name], Mapping):
        return dict(config[policy.name])
    return dict(config)


def run_resource_rules(
    recording: Recording, config: dict[str, Any], rules: list[Rule] | None = None
) -> list[CheckResult]:
    results: list[CheckResult] = []
    shared = config
    for rule in rules if rules is not None else RESOURCE_RULES:
        config = _config_for(rule, shared)
        if level_for(rule, config) == EnforcementLevel.DISABLED:
            continue
        level = _level(rule, config)
        for resource in recording.resources:
            if not rule.applies_to(resource.type):
                continue
            reason = exemption_for(config, namespace_of(resource.inputs))
            if reason is None and resource.type == "kubernetes:core/v1:Namespace":
                reason = exemption_for(config, resource.object_name)
            if reason is not None:
                results.append(CheckResult(rule.name, resource.display(), level, True, f"exempt: {reason}"))
                continue
            messages: list[str] = []
            args = ResourceValidationArgs(
                resource_type=resource.type,
                props=resource.inputs,
                urn=resource.urn,
                name=resource.name,
                opts=_options(resource),
                provider=None,
                config=config,
            )
            _await(rule.validate(args, _collector(messages)))
            if messages:
                results.extend(CheckResult(rule.name, resource.display(), level, False, m) for m in messages)
            else:
                results.append(CheckResult(rule.name, resource.display(), level, True, ""))
    return results


def policy_resources(recording: Recording) -> list[PolicyResource]:
    built: dict[str, PolicyResource] = {}
    for r in recording.resources:
        built[r.urn] = PolicyResource(
            resource_type=r.type,
            props=r.inputs,
            urn=r.urn,
            name=r.name,
            opts=_options(r),
            provider=None,
            parent=None,
            dependencies=[],
            property_dependencies={},
        )
    for r in recording.resources:
        if r.parent and r.parent in built:
            built[r.urn].parent = built[r.parent]
        built[r.urn].dependencies = [built[d] for d in r.options.get("dependsOn", []) if d in built]
    return list(built.values())


def run_stack_rules(recording: Recording, config: dict[str, Any]) -> list[CheckResult]:
    results: list[CheckResult] = []
    resources = policy_resources(recording)
    by_urn = recording.by_urn()
    shared = config
    for rule in ALL_STACK_RULES:
        config = _config_for(rule, shared)
        if level_for(rule, config) == EnforcementLevel.DISABLED:
            continue
        level = _level(rule, config)
        violations: list[tuple[str, str | None]] = []
        args = StackValidationArgs(resources=resources, config=config)
        _await(rule.validate(args, _pair_collector(violations)))
        for message, urn in violations:
            target = by_urn[urn].display() if urn and urn in by_urn else f"stack/{recording.stack}"
            results.append(CheckResult(rule.name, target, level, False, message))
        if not violations:
            results.append(CheckResult(rule.name, f"stack/{recording.stack}", level, True, ""))
    return results


def validate_schemas(recording: Recording, kubernetes_version: str, crd_dir: Path | None) -> list[CheckResult]:
    results: list[CheckResult] = []
    crds = CrdSchemas(crd_dir) if crd_dir is not None else None
    for resource in recording.kubernetes_objects():
        # Validate the object with its (offline placeholder) secret values, not the masked file form.
        obj = resource.inputs
        if is_builtin(obj):
            problems = validate_builtin(obj, kubernetes_version)
            policy = SCHEMA_POLICY
        elif crds is not None:
            problems = crds.validate(obj)
            policy = CRD_POLICY
        else:
            results.append(
                CheckResult(
                    CRD_POLICY,
                    resource.display(),
                    "advisory",
                    False,
                    "custom resource not validated: pass --crd-schemas DIR with the upstream CRD schemas",
                )
            )
            continue
        if problems:
            results.extend(CheckResult(policy, resource.display(), "mandatory", False, p) for p in problems)
        else:
            results.append(CheckResult(policy, resource.display(), "mandatory", True, ""))
    return results


def retain_marks_are_true(recording: Recording, config: dict[str, Any]) -> list[CheckResult]:
    """The engine does not send retainOnDelete to policy packs, so data-volumes-retained reads the object's
    annotation; offline, the recording has the real option, and an annotation that lies is a failure."""
    rule_config = _config_for(DATA_VOLUMES_RULE, config)
    if level_for(DATA_VOLUMES_RULE, rule_config) == EnforcementLevel.DISABLED:
        return []
    level = _level(DATA_VOLUMES_RULE, rule_config)
    results = []
    for r in recording.kubernetes_objects():
        annotations = (r.inputs.get("metadata") or {}).get("annotations") or {}
        if annotations.get(RETAIN_ANNOTATION) != "true":
            continue
        if not r.options.get("retainOnDelete"):
            results.append(
                CheckResult(
                    DATA_VOLUMES_RULE.name,
                    r.display(),
                    level,
                    False,
                    f"annotated {RETAIN_ANNOTATION}: 'true' but created without retain_on_delete=True",
                )
            )
    return results


def spec_of(config: StackConfig) -> PlatformSpec:
    raw = config.values.get(FULL_PLATFORM_KEY)
    return parse_platform(json.loads(raw) if raw else None, config.stack)


def build_report(
    recording: Recording,
    config: dict[str, Any],
    profile: str,
    kubernetes_version: str,
    crd_dir: Path | None = None,
    stack_rules: bool = True,
    engine_options: bool = True,
) -> CheckReport:
    """Resource rules, optionally stack rules, and schema validation of a recording, under one pack config.
    `engine_options`: the recording carries real resource options (a program run, not plain manifests).
    An invalid config (unknown policy or key, wrong type, an exception without a reason) raises PolicyConfigError
    before any rule runs."""
    problems = validate_pack_config(config) if is_pack_document(config) else validate_policy_config(config)
    if problems:
        raise PolicyConfigError(problems)
    rules: list[Any] = [*RESOURCE_RULES, *ALL_STACK_RULES] if stack_rules else list(RESOURCE_RULES)
    report = CheckReport(
        stack=recording.stack,
        profile=profile,
        kubernetes_version=kubernetes_version,
        resources=sum(1 for r in recording.resources if r.custom),
    )
    report.policies = [(p.name, _level(p, _config_for(p, config))) for p in rules]
    report.policies += [(SCHEMA_POLICY, "mandatory"), (CRD_POLICY, "mandatory")]
    report.results.extend(run_resource_rules(recording, config))
    if engine_options:
        report.results.extend(retain_marks_are_true(recording, config))
    if stack_rules:
        report.results.extend(run_stack_rules(recording, config))
    report.results.extend(validate_schemas(recording, kubernetes_version, crd_dir))
    return report


def check_recording(
    recording: Recording,
    spec: PlatformSpec,
    crd_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> CheckReport:
    """The stack's pack config (profile, exceptions, its policy.overrides), then `overrides` (--policy-config)."""
    config = merge_pack_config(stack_pack_config(spec), overrides or {})
    return build_report(recording, config, spec.profile, spec.cluster.kubernetes_version, crd_dir)
