"""The admission guardrails a stack gets: `AdmissionGuardrailsArgs` derived from its `PlatformSpec`.

The allowed registries and gateway namespaces are the very values the policy pack receives
(`infra.platform.stack_policy_config`), so that what `pulumi preview` checks and what the API server enforces never
drift apart. Guarded namespaces are those `SecureNamespace` labels for this stack (part-of and instance); the
required-labels policy applies where `build_platform` puts the tenant label.
"""

from __future__ import annotations

from components.guardrails import AdmissionGuardrailsArgs
from components.labels import PART_OF
from infra.config import PlatformSpec

TENANT_NAMESPACE_LABEL = "privatellm.io/tenant"
"""The label `build_platform` puts on every tenant namespace (its value: the tenant's name)."""


def guardrails_args(spec: PlatformSpec) -> AdmissionGuardrailsArgs | None:
    """The guardrails for `spec`; None when the stack has no registry (no allowed registry to enforce)."""
    if spec.registry is None:
        return None
    # Imported here: infra.platform builds the guardrails from this module.
    from infra.platform import stack_policy_config

    config = stack_policy_config(spec)
    return AdmissionGuardrailsArgs(
        instance=spec.name,
        allowed_registries=list(config["allowedRegistries"]),
        gateway_namespaces=list(config["gatewayNamespaces"]),
        namespace_labels={"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/instance": spec.name},
        tenant_namespace_label=TENANT_NAMESPACE_LABEL,
    )
