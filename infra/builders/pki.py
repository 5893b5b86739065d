"""The internal PKI: cert-manager and trust-manager values, the platform CA, per-model serving certificates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.base import RESTRICTED_CONTAINER, RESTRICTED_POD
from components.pki import ChartSpec, Pki, PkiArgs, VaultIssuer, service_dns_names
from components.vllm import ServingTls
from infra.builders.base import Site, pull_secret_name, with_pull_secret
from infra.catalog import (
    CHARTS,
    IMAGES,
    Image,
    pre_harbor_chart_source,
)
from infra.config import (
    PlatformSpec,
    RegistrySpec,
    config_secret,
)
from infra.errors import build
from infra.placement import PlacedModel
from infra.profiles import PROFILE_SETTINGS

METRICS_CLIENT_SECRET = "prometheus-client-tls"


def cert_manager_values(registry: RegistrySpec, images: Mapping[str, Image] = IMAGES) -> dict[str, Any]:
    """cert-manager chart (jetstack, deploy/charts/cert-manager v1.21.1): CRDs kept on uninstall, images through the
    registry, restricted pods, ServiceMonitor on."""

    def image(part: str) -> dict[str, str]:
        ref = images[f"cert-manager-{part}"]
        return {"repository": ref.full_name(registry), "tag": ref.pinned_tag, "pullPolicy": "IfNotPresent"}

    pod = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    container = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    values: dict[str, Any] = {
        "crds": {"enabled": True, "keep": True},
        "enableCertificateOwnerRef": True,
        "image": image("controller"),
        "securityContext": pod,
        "containerSecurityContext": container,
        "prometheus": {"enabled": True, "servicemonitor": {"enabled": True}},
    }
    for part in ("webhook", "cainjector", "acmesolver", "startupapicheck"):
        values[part] = {"image": image(part)}
        if part != "acmesolver":
            values[part].update(securityContext=pod, containerSecurityContext=container)
    return values


def trust_manager_values(
    registry: RegistrySpec, trust_namespace: str, images: Mapping[str, Image] = IMAGES
) -> dict[str, Any]:
    """trust-manager chart (jetstack, v0.24.0): only the platform CA is trusted — no public CA package."""
    ref = images["trust-manager"]
    return {
        "crds": {"enabled": True, "keep": True},
        "image": {"repository": ref.full_name(registry), "tag": ref.pinned_tag, "pullPolicy": "IfNotPresent"},
        "defaultPackage": {"enabled": False},
        "secretTargets": {"enabled": False},
        "app": {
            "trust": {"namespace": trust_namespace},
            "securityContext": RESTRICTED_CONTAINER,
            "metrics": {"service": {"servicemonitor": {"enabled": True}}},
        },
        "podSecurityContext": RESTRICTED_POD,
    }


def _chart_spec(name: str, values: dict[str, Any], spec: PlatformSpec, pull_secret: bool = True) -> ChartSpec:
    """A PKI chart: installed before a managed Harbor answers, so taken from the bootstrap charts location then."""
    assert spec.registry is not None
    source, repo = pre_harbor_chart_source(CHARTS[name], spec.registry)
    return ChartSpec(
        chart=source,
        version=CHARTS[name].version,
        repository=repo,
        values=with_pull_secret(name, values, pull_secret_name(spec)) if pull_secret else values,
    )


def build_pki(site: Site) -> Pki | None:
    """cert-manager, trust-manager and the platform CA, in the `pki` namespace, when the stack has a registry. It
    comes first: Harbor serves a PKI certificate, so with a managed Harbor the PKI's images and charts come from the
    bootstrap registry (Harbor does not exist yet) and nothing of it waits for pull secrets."""
    spec = site.spec
    registry = spec.registry
    if registry is None:
        return None
    ns = spec.namespaces.pki.name
    pki = spec.pki
    image_source = registry.bootstrap() or registry
    args = PkiArgs(
        namespace=ns,
        instance=spec.name,
        mode=pki.mode,
        duration_hours=spec.certificate_days * 24,
        key_algorithm=pki.key_algorithm,
        cert_manager=_chart_spec(
            "cert-manager", cert_manager_values(image_source, site.images), spec, registry.harbor is None
        ),
        trust_manager=_chart_spec(
            "trust-manager", trust_manager_values(image_source, ns, site.images), spec, registry.harbor is None
        ),
        trust_namespace_labels={"app.kubernetes.io/part-of": "private-llm"},
        ca_certificate_pem=pki.enterprise.certificate_pem if pki.enterprise else None,
        ca_key=config_secret(str(pki.enterprise.key_secret)) if pki.enterprise and pki.enterprise.key_secret else None,
        existing_ca_secret=pki.enterprise.existing_secret_name if pki.enterprise else None,
        vault=VaultIssuer(
            server=pki.vault.server,
            path=pki.vault.path,
            role=pki.vault.role,
            auth_mount_path=pki.vault.auth_mount_path,
            ca_pem=pki.vault.ca_pem,
        )
        if pki.vault
        else None,
    )
    return build("pki", "privatellm:pki:Pki", lambda: Pki("pki", args, opts=site.after(site.namespaces[ns])))


def serving_tls(spec: PlatformSpec, pki: Pki | None, model: PlacedModel) -> ServingTls | None:
    """Server and probe certificates for one model (mTLS: vLLM verifies every client)."""
    if pki is None:
        return None
    ns = spec.namespaces.inference.name
    name = model.spec.name
    pki.certificate(f"cert-{name}-server", ns, f"{name}-tls", f"{name}.{ns}.svc", service_dns_names(name, ns), "server")
    pki.certificate(f"cert-{name}-probe", ns, f"{name}-probe-tls", f"{name}-probe", usage="client")
    return ServingTls(
        secret_name=f"{name}-tls",
        probe_client_secret=f"{name}-probe-tls",
        metrics_client_secret=METRICS_CLIENT_SECRET,
        ciphers=":".join(PROFILE_SETTINGS[spec.profile].tls12_ciphers),
    )
