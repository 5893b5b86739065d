"""`PlatformSpec`: the whole platform one stack file describes, and the rules that span its sections."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    Field,
    model_validator,
)

from infra.config.cluster import ClusterSpec, PlatformNamespaces, TenantSpec
from infra.config.gpu import GpuOperatorSpec, GpuPoolSpec
from infra.config.models import InferenceSpec, ModelDeploymentSpec
from infra.config.operations import LOG_SHIPPER_NAMESPACE, LoggingSpec, ObservabilitySpec, PolicySpec
from infra.config.registry import RegistrySpec
from infra.config.security import GatewaySpec, PkiSpec
from infra.config.types import DnsLabel, StrictModel
from infra.profiles import PROFILE_SETTINGS
from policies.pack import merge_pack_config
from policies.profiles import LEVELS as PROFILE_LEVELS
from policies.profiles import Profile


class PlatformSpec(StrictModel):
    """The whole platform one stack file describes."""

    name: DnsLabel = "private-llm"
    profile: Profile = "baseline"
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    namespaces: PlatformNamespaces = Field(default_factory=PlatformNamespaces)
    tenants: list[TenantSpec] = Field(default_factory=list)
    registry: RegistrySpec | None = None
    node_pools: list[GpuPoolSpec] = Field(default_factory=list)
    gpu_operator: GpuOperatorSpec = Field(default_factory=GpuOperatorSpec)
    models: list[ModelDeploymentSpec] = Field(default_factory=list)
    inference: InferenceSpec = Field(default_factory=InferenceSpec)
    pki: PkiSpec = Field(default_factory=PkiSpec)
    gateway: GatewaySpec | None = None
    observability: ObservabilitySpec = Field(default_factory=ObservabilitySpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    policy: PolicySpec = Field(default_factory=PolicySpec)

    def policy_level(self, policy: str) -> str:
        """The enforcement level the pack gives `policy` for this stack: the profile's, then policy.overrides."""
        level = PROFILE_LEVELS.get(self.profile, {}).get(policy)
        base = {policy: {"enforcementLevel": level.value if level is not None else "mandatory"}}
        return str(merge_pack_config(base, self.policy.overrides)[policy]["enforcementLevel"])

    @model_validator(mode="after")
    def _trust_remote_code_is_a_decision(self) -> PlatformSpec:
        trusting = [i for i, m in enumerate(self.models) if m.trust_remote_code]
        if trusting and self.policy_level("vllm-no-trust-remote-code") in ("mandatory", "remediate"):
            fields = ", ".join(f"models[{i}].trust_remote_code" for i in trusting)
            raise ValueError(
                f"{fields}=true runs Python shipped with the model, which the mandatory policy "
                "vllm-no-trust-remote-code refuses; use a model vLLM implements natively, or accept the risk for this "
                "stack with policy.overrides.vllm-no-trust-remote-code: advisory (the evidence report shows it)"
            )
        return self

    @model_validator(mode="after")
    def _revisions_fit_the_stack(self) -> PlatformSpec:
        """Revisions are split by the gateway; their evaluators and cohorts are tenants of the stack; in regulated
        profiles a named revision takes most of the traffic only once someone approved it."""
        tenants = {t.name for t in self.tenants}
        problems = []
        for i, m in enumerate(self.models):
            if not m.revisions:
                continue
            if self.gateway is None:
                problems.append(
                    f"models[{i}].revisions: the gateway splits a model's traffic between its revisions; add a "
                    "gateway section (or serve one revision)"
                )
            rollout = m.rollout
            for field, named in (
                ("evaluators", rollout.evaluators if rollout else []),
                ("cohorts", [t for ts in (rollout.cohorts.values() if rollout else []) for t in ts]),
            ):
                for tenant in named:
                    if tenant not in tenants:
                        known = ", ".join(sorted(tenants)) or "none"
                        problems.append(
                            f"models[{i}].rollout.{field} names {tenant!r}, which is not a tenant of this stack "
                            f"(tenants: {known})"
                        )
            for j, r in enumerate(m.revisions):
                if r.name and r.weight > 50 and self.profile != "baseline" and not r.approved_by:
                    problems.append(
                        f"models[{i}].revisions[{j}] ({r.name}) takes {r.weight}% of {m.name}; the {self.profile} "
                        "profile needs approved_by (who approved it) before a candidate takes more than 50"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _priority_classes_exist(self) -> PlatformSpec:
        known = {*self.inference.priority_classes, *self.inference.existing_priority_classes}
        known |= {"system-cluster-critical", "system-node-critical"}
        for i, m in enumerate(self.models):
            if m.priority_class is not None and m.priority_class not in known:
                raise ValueError(
                    f"models[{i}].priority_class={m.priority_class!r} names no PriorityClass the pods could use "
                    "(the API server would refuse them): declare it in inference.priority_classes (the platform "
                    "creates it, e.g. {value: 100000}) or list it in inference.existing_priority_classes"
                )
        return self

    @model_validator(mode="after")
    def _autoscaling_needs_prometheus(self) -> PlatformSpec:
        scaled = [f"models[{i}].autoscaling" for i, m in enumerate(self.models) if m.autoscaling.enabled]
        if scaled and not self.observability.enabled:
            raise ValueError(
                f"{', '.join(scaled)}.enabled=true scales on vllm:num_requests_waiting read from the platform's "
                "Prometheus, but observability.enabled is false; enable observability or turn autoscaling off"
            )
        return self

    @model_validator(mode="after")
    def _exceptions_name_our_namespaces(self) -> PlatformSpec:
        ours = {ns.name for _, ns in self.namespaces.items()} | {t.namespace_name for t in self.tenants}
        ours |= {self.gpu_operator.namespace, LOG_SHIPPER_NAMESPACE}
        unknown = sorted(set(self.policy.exceptions) - ours)
        if unknown:
            raise ValueError(
                f"policy.exceptions names {', '.join(unknown)}, which this stack does not create; an exception "
                "applies only to the stack's own namespaces (remove it, or fix the name)"
            )
        return self

    @model_validator(mode="after")
    def _profile_rules(self) -> PlatformSpec:
        if self.profile == "government" and self.registry is not None and not self.registry.air_gapped:
            raise ValueError(
                "registry.air_gapped must be true in the government profile: everything comes from the site's own "
                "registry"
            )
        if self.gateway is not None:
            limit = PROFILE_SETTINGS[self.profile].max_key_rotation_days
            if self.gateway.key_rotation_days > limit:
                raise ValueError(
                    f"gateway.key_rotation_days={self.gateway.key_rotation_days} is above the {self.profile} "
                    f"profile's maximum of {limit} days; rotate at least every {limit} days"
                )
        settings = PROFILE_SETTINGS[self.profile]
        for field, value, minimum in (
            ("logging.audit_retention_days", self.logging.audit_retention_days, settings.min_audit_retention_days),
            ("logging.app_retention_days", self.logging.app_retention_days, settings.min_app_retention_days),
        ):
            if value is not None and value < minimum:
                raise ValueError(f"{field}={value} is below the {self.profile} profile's minimum of {minimum} days")
        if (
            self.pki.certificate_days is not None
            and self.pki.certificate_days > PROFILE_SETTINGS[self.profile].max_certificate_days
        ):
            raise ValueError(
                f"pki.certificate_days={self.pki.certificate_days} is above the {self.profile} profile's maximum "
                f"certificate lifetime of {PROFILE_SETTINGS[self.profile].max_certificate_days} days"
            )
        if self.registry is not None and self.registry.harbor is not None and self.registry.pull_secret_name:
            raise ValueError(
                "registry.pull_secret_name only applies to registries the platform does not manage; Harbor's robot "
                "accounts provide the pull secrets"
            )
        return self

    @property
    def audit_retention_days(self) -> int:
        return self.logging.audit_retention_days or PROFILE_SETTINGS[self.profile].min_audit_retention_days

    @property
    def app_retention_days(self) -> int:
        return self.logging.app_retention_days or PROFILE_SETTINGS[self.profile].min_app_retention_days

    @property
    def metrics_retention_days(self) -> int:
        return self.observability.metrics_retention_days or PROFILE_SETTINGS[self.profile].metrics_retention_days

    @property
    def certificate_days(self) -> int:
        return self.pki.certificate_days or PROFILE_SETTINGS[self.profile].max_certificate_days

    def pool(self, name: str) -> GpuPoolSpec:
        return next(p for p in self.node_pools if p.name == name)

    @model_validator(mode="after")
    def _unique_names(self) -> PlatformSpec:
        problems: list[str] = []
        seen_tenants: dict[str, int] = {}
        for i, tenant in enumerate(self.tenants):
            if tenant.name in seen_tenants:
                problems.append(
                    f"tenants[{i}].name={tenant.name!r} repeats tenants[{seen_tenants[tenant.name]}].name; "
                    "tenant names must be unique"
                )
            seen_tenants.setdefault(tenant.name, i)
        owners: dict[str, str] = {}
        for role, ns in self.namespaces.items():
            if ns.name in owners:
                problems.append(
                    f"namespaces.{role}.name={ns.name!r} is already used by namespaces.{owners[ns.name]}; "
                    "every platform namespace needs its own name"
                )
            owners.setdefault(ns.name, f"{role}")
        for i, tenant in enumerate(self.tenants):
            ns_name = tenant.namespace_name
            if ns_name in owners:
                problems.append(
                    f"tenants[{i}].namespace={ns_name!r} is already used by {owners[ns_name]}; "
                    "give the tenant a namespace of its own"
                )
            owners.setdefault(ns_name, f"tenants[{i}]")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def secret_refs(self) -> list[tuple[str, str]]:
        """(field path, config key) of every `*_secret` field that is set."""
        refs: list[tuple[str, str]] = []

        def walk(node: Any, path: str) -> None:
            if isinstance(node, BaseModel):
                for field in type(node).model_fields:
                    value = getattr(node, field)
                    sub = f"{path}.{field}" if path else field
                    if field.endswith("_secret") and isinstance(value, str):
                        refs.append((sub, value))
                    else:
                        walk(value, sub)
            elif isinstance(node, list):
                for i, item in enumerate(node):
                    walk(item, f"{path}[{i}]")

        walk(self, "")
        return refs
