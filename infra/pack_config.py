"""What the policy pack needs to know about a stack: its documented exceptions, registries, immutable
repositories and exposed namespaces, as the config `pulumi preview --policy-pack` and the offline check both use."""

from __future__ import annotations

from typing import Any

from infra.config import (
    LOG_SHIPPER_NAMESPACE,
    PlatformSpec,
)
from infra.features import runs_gpu_operator, runs_logging
from policies.base import split_image
from policies.pack import merge_pack_config, policy_config, profile_pack_config

GPU_OPERATOR_EXCEPTION = (
    "NVIDIA GPU Operator: the driver, container toolkit, device plugin and DCGM exporter run privileged with host "
    "access to install and expose the GPUs; nothing else runs in this namespace"
)


LOG_SHIPPER_EXCEPTION = (
    "Fluent Bit reads every container's log files from the node (hostPath /var/log, read-only, as root without "
    "capabilities); nothing else runs in this namespace"
)


def documented_exceptions(spec: PlatformSpec) -> dict[str, str]:
    """The documented exceptions to the restricted baseline, as policy config (namespace → reason): the stack
    file's `policy.exceptions`, plus the built-in reasons of the GPU Operator and log shipper namespaces when the
    stack runs them and does not state its own."""
    exemptions: dict[str, str] = {}
    if runs_gpu_operator(spec):
        exemptions[spec.gpu_operator.namespace] = GPU_OPERATOR_EXCEPTION
    if runs_logging(spec):
        exemptions[LOG_SHIPPER_NAMESPACE] = LOG_SHIPPER_EXCEPTION
    exemptions.update(spec.policy.exceptions)
    return exemptions


def stack_policy_config(spec: PlatformSpec) -> dict[str, Any]:
    """What the policies need to know about a stack: target version, documented exemptions, its registries."""
    allowed: list[str] = []
    registry = spec.registry
    if registry is not None:
        allowed.append(registry.host)
        if registry.harbor is not None:
            allowed.append(registry.harbor.bootstrap_registry)
    # A declared bootstrap charts location on another host serves charts too (never images).
    charts = list(allowed)
    if registry is not None and registry.harbor is not None and registry.harbor.bootstrap_charts:
        host = registry.harbor.bootstrap_charts.removeprefix("oci://").split("/", 1)[0]
        if host not in charts:
            charts.append(host)
    return policy_config(
        kubernetes_version=spec.cluster.kubernetes_version,
        exempt_namespaces=documented_exceptions(spec),
        allowed_registries=allowed,
        immutable_repositories=immutable_repositories(spec),
        gateway_namespaces=exposed_namespaces(spec),
        profile=spec.profile,
        chart_registries=charts if charts != allowed else None,
        revision_weights=revision_weights(spec),
    )


def revision_weights(spec: PlatformSpec) -> dict[str, dict[str, int]]:
    """Per served model with revisions: each revision's backend (its objects' name) → the weight the stack file
    gives it; the pack checks that the rendered routes give exactly these."""
    return {m.served_name: {m.revision(r).name: r.weight for r in m.revisions} for m in spec.models if m.revisions}


def exposed_namespaces(spec: PlatformSpec) -> list[str]:
    """Namespaces whose Services may be LoadBalancer or NodePort (policy config `gatewayNamespaces`, admission
    guardrails): the gateway's, and the registry's when a managed Harbor is exposed that way (the entry point of the
    nodes' container runtimes and of the deploy host)."""
    namespaces = [spec.namespaces.gateway.name] if spec.gateway is not None else []
    registry = spec.registry
    if registry is not None and registry.harbor is not None and registry.harbor.expose.service_type != "ClusterIP":
        namespaces.append(spec.namespaces.registry.name)
    return namespaces


def stack_pack_config(spec: PlatformSpec) -> dict[str, Any]:
    """Per-policy config with the profile's enforcement levels: offline check and `--policy-pack-config` alike."""
    return merge_pack_config(profile_pack_config(spec.profile, stack_policy_config(spec)), spec.policy.overrides)


def immutable_repositories(spec: PlatformSpec) -> list[str]:
    """Repository prefixes whose tags cannot be overwritten: the platform's own Harbor projects (created with a
    tag-immutability rule) and the projects the stack declares immutable."""
    registry = spec.registry
    if registry is None:
        return []
    immutable: list[str] = []
    if registry.harbor is not None:
        immutable += [f"{registry.host}/{p}" for p in (registry.platform_project, registry.models_project)]
    immutable += [f"{registry.host}/{p}" for p in registry.immutable_projects]
    return immutable


PULL_POLICY_REASON = (
    "the image is pinned by an immutable tag, so IfNotPresent runs the same image; Always would make every restart "
    "depend on reaching the registry"
)


def image_scanner_skips(spec: PlatformSpec, image: str) -> dict[str, str]:
    """The documented checkov exceptions for an image reference: none for a digest-pinned image; for a tag in an
    immutable Harbor project the tag is the pin (CKV_K8S_43/15); a baseline-profile registry without immutability
    is an advisory finding of images-pinned. Anything else gets no skip, so checkov reports it like the pack does."""
    host, path, _, digest = split_image(image)
    if digest is not None:
        return {}
    immutable = immutable_repositories(spec)
    project = next((p for p in immutable if f"{host}/{path}".startswith(p.rstrip("/") + "/")), None)
    if project is not None:
        return {
            "CKV_K8S_43": f"tag pinned in {project}, a Harbor project whose tag-immutability rule forbids overwrites",
            "CKV_K8S_15": PULL_POLICY_REASON,
        }
    if spec.profile == "baseline":
        advisory = "baseline profile: the registry offers no tag immutability and no digest lock is written"
        return {
            "CKV_K8S_43": f"{advisory}; images-pinned reports it as advisory",
            "CKV_K8S_15": f"{advisory}; IfNotPresent lets pods restart while the registry is down",
        }
    return {}
