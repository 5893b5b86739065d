"""Shared machinery of the policy pack: rule classes with metadata, compliance frameworks, pod template access.

A rule sees only a resource type and its properties (camelCase, as the engine sends them). Nothing here imports
our components or the program, so the very same objects run in `pulumi preview --policy-pack policies` and in the
offline `private-llm check`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from pulumi_policy import (
    EnforcementLevel,
    PolicyComplianceFramework,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies.profiles import DEFAULT_PROFILE, PROFILES

DEFAULT_KUBERNETES_VERSION = "1.31"

# Config keys every rule accepts (schema defaults are filled by the CLI only: rules always fall back themselves).
CONFIG_PROPERTIES: dict[str, dict[str, Any]] = {
    "profile": {
        "type": "string",
        "enum": list(PROFILES),
        "default": DEFAULT_PROFILE,
        "description": "Compliance profile: its thresholds apply unless a threshold is set explicitly.",
    },
    "kubernetesVersion": {
        "type": "string",
        "default": DEFAULT_KUBERNETES_VERSION,
        "pattern": r"^1\.[0-9]+$",
        "description": "Target Kubernetes minor version; version-gated checks follow Pod Security Admission.",
    },
    "allowedRegistries": {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "default": [],
        "description": "Registry hosts images may come from (the stack's own registry).",
    },
    "chartRegistries": {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "default": [],
        "description": (
            "Registry hosts charts may come from (the stack's registry, its bootstrap registry and the declared "
            "bootstrap charts location); empty: those of allowedRegistries."
        ),
    },
    "revisionWeights": {
        "type": "object",
        "default": {},
        "additionalProperties": {
            "type": "object",
            "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 100},
        },
        "description": (
            "Per served model with revisions: backend (the revision's Service) → its percent of the model's traffic, "
            "as the stack file states it; the rendered routes must give exactly these."
        ),
    },
    "immutableRepositories": {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "default": [],
        "description": "Repository prefixes whose tags are immutable (Harbor projects with an immutability rule).",
    },
    "gatewayNamespaces": {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "default": [],
        "description": "Namespaces whose Services may be LoadBalancer or NodePort (declared entry points).",
    },
    # No schema default for thresholds: the engine would fill it in and hide the profile's value.
    "maxCertificateDays": {"type": "integer", "minimum": 1, "description": "Longest certificate lifetime."},
    "maxKeyRotationDays": {"type": "integer", "minimum": 1, "description": "Longest API-key rotation period."},
    "minAuditRetentionDays": {"type": "integer", "minimum": 1, "description": "Shortest audit-log retention."},
    "minAppRetentionDays": {"type": "integer", "minimum": 1, "description": "Shortest application-log retention."},
    "exemptNamespaces": {
        "type": "object",
        "default": {},
        "additionalProperties": {"type": "string", "pattern": r"\S.{9,}"},
        "description": "Namespaces exempt from this rule, each with the documented reason (shown in reports).",
    },
}
COMMON_CONFIG = PolicyConfigSchema(properties=CONFIG_PROPERTIES)


@dataclass(frozen=True)
class Standard:
    """One control of a public standard that a rule implements."""

    framework: str
    version: str
    reference: str

    def as_framework(self) -> PolicyComplianceFramework:
        return PolicyComplianceFramework(name=self.framework, version=self.version, reference=self.reference)

    def tag(self) -> str:
        return f"{self.framework} {self.reference}".strip()


PSS = "Kubernetes Pod Security Standards"
PSS_VERSION = "restricted"
CIS = "CIS Kubernetes Benchmark"
CIS_VERSION = "1.12"
NSA = "NSA/CISA Kubernetes Hardening Guidance"
NSA_VERSION = "1.2"


def pss(check: str) -> Standard:
    return Standard(PSS, PSS_VERSION, check)


def cis(control: str) -> Standard:
    return Standard(CIS, CIS_VERSION, control)


def nsa(section: str) -> Standard:
    return Standard(NSA, NSA_VERSION, section)


OWASP_LLM = "OWASP Top 10 for LLM Applications"


def owasp(item: str) -> Standard:
    return Standard(OWASP_LLM, "2025", item)


def hipaa(section: str) -> Standard:
    return Standard("HIPAA Security Rule", "45 CFR 164", section)


def nist(control: str) -> Standard:
    """A NIST SP 800-53 Rev. 5 control, e.g. CM-3 (configuration change control: changes approved, then made as
    approved)."""
    return Standard("NIST SP 800-53", "Rev. 5", control)


def minor_of(config: Mapping[str, Any]) -> int:
    version = str(config.get("kubernetesVersion", DEFAULT_KUBERNETES_VERSION))
    try:
        return int(version.removeprefix("v").split(".")[1])
    except (IndexError, ValueError):
        return int(DEFAULT_KUBERNETES_VERSION.split(".")[1])


def exemption_for(config: Mapping[str, Any], namespace: str | None) -> str | None:
    exempt = config.get("exemptNamespaces") or {}
    if namespace and isinstance(exempt, Mapping) and namespace in exempt:
        return str(exempt[namespace])
    return None


Check = Callable[[str, Mapping[str, Any], Mapping[str, Any]], list[str]]
"""(resource type, props, config) -> violation messages (empty when the resource complies)."""


class Rule(ResourceValidationPolicy):
    """A resource rule with the metadata a compliance report needs and the set of types it applies to."""

    def __init__(
        self,
        name: str,
        description: str,
        check: Check,
        resource_types: Iterable[str],
        standards: Iterable[Standard],
        remediation: str,
        severity: Severity = Severity.HIGH,
        enforcement_level: EnforcementLevel = EnforcementLevel.MANDATORY,
    ) -> None:
        self.resource_types = frozenset(resource_types)
        self.standards = tuple(standards)
        self._check = check

        def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
            if args.resource_type not in self.resource_types:
                return
            config = args.get_config()
            if exemption_for(config, namespace_of(args.props)) is not None:
                return
            for message in self._check(args.resource_type, args.props, config):
                report_violation(message, args.urn)

        super().__init__(
            name=name,
            description=description,
            validate=validate,
            enforcement_level=enforcement_level,
            config_schema=COMMON_CONFIG,
            severity=severity,
            framework=self.standards[0].as_framework() if self.standards else None,
            tags=[s.tag() for s in self.standards],
            remediation_steps=remediation,
        )

    def applies_to(self, resource_type: str) -> bool:
        return resource_type in self.resource_types


StackCheck = Callable[[StackValidationArgs], list[tuple[str, str | None]]]
"""args -> (message, urn or None) violations."""


class StackRule(StackValidationPolicy):
    """A rule over the whole stack, with report metadata."""

    def __init__(
        self,
        name: str,
        description: str,
        check: StackCheck,
        standards: Iterable[Standard],
        remediation: str,
        severity: Severity = Severity.HIGH,
        enforcement_level: EnforcementLevel = EnforcementLevel.MANDATORY,
    ) -> None:
        self.standards = tuple(standards)
        self._check = check

        def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
            for message, urn in self._check(args):
                report_violation(message, urn)

        super().__init__(
            name=name,
            description=description,
            validate=validate,
            enforcement_level=enforcement_level,
            config_schema=COMMON_CONFIG,
            severity=severity,
            framework=self.standards[0].as_framework() if self.standards else None,
            tags=[s.tag() for s in self.standards],
            remediation_steps=remediation,
        )


# --------------------------------------------------------------------------------------------------------------
# Kubernetes object access
# --------------------------------------------------------------------------------------------------------------

POD = "kubernetes:core/v1:Pod"
LEADER_WORKER_SET = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"

# Where each pod-bearing type keeps its pod template(s): a template is {metadata, spec}; a Pod is its own template.
POD_TEMPLATE_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    POD: ((),),
    "kubernetes:core/v1:PodTemplate": (("template",),),
    "kubernetes:core/v1:ReplicationController": (("spec", "template"),),
    "kubernetes:apps/v1:Deployment": (("spec", "template"),),
    "kubernetes:apps/v1:StatefulSet": (("spec", "template"),),
    "kubernetes:apps/v1:DaemonSet": (("spec", "template"),),
    "kubernetes:apps/v1:ReplicaSet": (("spec", "template"),),
    "kubernetes:batch/v1:Job": (("spec", "template"),),
    "kubernetes:batch/v1:CronJob": (("spec", "jobTemplate", "spec", "template"),),
    LEADER_WORKER_SET: (
        ("spec", "leaderWorkerTemplate", "leaderTemplate"),
        ("spec", "leaderWorkerTemplate", "workerTemplate"),
    ),
}
POD_TYPES = frozenset(POD_TEMPLATE_PATHS)


def is_list(value: Any) -> TypeGuard[Sequence[Any]]:
    """A JSON array: a list offline, pulumi_policy's `_ListProxy` (a Sequence, not a list) under the engine."""
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def get_path(obj: Any, path: Iterable[str]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def namespace_of(props: Mapping[str, Any]) -> str | None:
    ns = get_path(props, ("metadata", "namespace"))
    return ns if isinstance(ns, str) else None


@dataclass(frozen=True)
class PodTemplate:
    """One pod template inside a resource; `where` names it in messages (e.g. 'workerTemplate')."""

    where: str
    metadata: Mapping[str, Any]
    spec: Mapping[str, Any]


def pod_templates(resource_type: str, props: Mapping[str, Any]) -> list[PodTemplate]:
    templates: list[PodTemplate] = []
    for path in POD_TEMPLATE_PATHS.get(resource_type, ()):
        template = get_path(props, path) if path else props
        if not isinstance(template, Mapping):
            continue
        spec = template.get("spec")
        if not isinstance(spec, Mapping):
            continue
        metadata = template.get("metadata")
        where = path[-1] if path and path[-1] != "template" else ""
        templates.append(PodTemplate(where, metadata if isinstance(metadata, Mapping) else {}, spec))
    return templates


CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")


def containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(label, container) for every container, init container and ephemeral container of a pod spec."""
    for field in CONTAINER_FIELDS:
        items = spec.get(field) or []
        if not is_list(items):
            continue
        for item in items:
            if isinstance(item, Mapping):
                kind = {"initContainers": "init container", "ephemeralContainers": "ephemeral container"}.get(
                    field, "container"
                )
                yield f"{kind} {item.get('name', '?')!r}", item


def where_prefix(template: PodTemplate) -> str:
    return f"{template.where}: " if template.where else ""


def split_image(image: str) -> tuple[str, str, str | None, str | None]:
    """(registry host, repository path, tag, digest) of an image reference, Docker's rules for the host."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "docker.io", image
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    return host, path, tag, digest


_SERVE = re.compile(r"(^|\s|/)vllm(\s+|$)")


def is_vllm_server(c: Mapping[str, Any]) -> bool:
    """A container that runs the vLLM OpenAI server (`vllm serve`), not a benchmark or another tool."""
    command = [str(x) for x in c.get("command") or []] + [str(x) for x in c.get("args") or []]
    joined = " ".join(command)
    return bool(_SERVE.search(joined)) and "serve" in command and "bench" not in command


def flag_value(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in an argument list, else None."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None
