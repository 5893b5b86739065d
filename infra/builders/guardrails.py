"""The admission guardrails a stack gets: `AdmissionGuardrailsArgs` derived from its `PlatformSpec`, and the build.

The allowed registries and gateway namespaces are the very values the policy pack receives
(`infra.pack_config.stack_policy_config`), so that what `pulumi preview` checks and what the API server enforces
never drift apart. Guarded namespaces are those `SecureNamespace` labels for this stack (part-of and instance); the
required-labels policy applies where `build_namespaces` puts the tenant label.
"""

from __future__ import annotations

from components.guardrails import AdmissionGuardrails, AdmissionGuardrailsArgs
from components.labels import PART_OF
from infra.builders.base import Site
from infra.builders.namespaces import TENANT_NAMESPACE_LABEL
from infra.config import PlatformSpec
from infra.errors import build
from infra.pack_config import stack_policy_config


def guardrails_args(spec: PlatformSpec) -> AdmissionGuardrailsArgs | None:
    """The guardrails for `spec`; None when the stack has no registry (no allowed registry to enforce)."""
    if spec.registry is None:
        return None
    config = stack_policy_config(spec)
    return AdmissionGuardrailsArgs(
        instance=spec.name,
        allowed_registries=list(config["allowedRegistries"]),
        gateway_namespaces=list(config["gatewayNamespaces"]),
        namespace_labels={"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/instance": spec.name},
        tenant_namespace_label=TENANT_NAMESPACE_LABEL,
    )


def build_guardrails(site: Site) -> AdmissionGuardrails | None:
    """In-cluster defence in depth: what Pod Security Admission does not cover, denied at admission."""
    args = guardrails_args(site.spec)
    if args is None:
        return None
    return build(
        "admission-guardrails",
        "privatellm:baseline:AdmissionGuardrails",
        lambda: AdmissionGuardrails("admission-guardrails", args, opts=site.opts),
    )
