"""The OpenAI-compatible entry: Envoy Gateway and Envoy AI Gateway values, certificates, the gateway component."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from components.base import RESTRICTED_CONTAINER, RESTRICTED_POD
from components.gateway import GatewayModel, GatewayRollout, GatewayTenant, LlmGateway, LlmGatewayArgs
from components.pki import Pki
from components.vllm import VllmService
from infra.builders.base import Site
from infra.builders.namespaces import AI_GATEWAY_NAMESPACE, ENVOY_GATEWAY_NAMESPACE
from infra.catalog import (
    IMAGES,
    Image,
)
from infra.config import (
    RegistrySpec,
    RolloutSpec,
)
from infra.errors import build
from infra.placement import PlacedModel

GATEWAY_TLS_SECRET = "gateway-tls"


GATEWAY_CLIENT_SECRET = "gateway-client-tls"


def envoy_gateway_values(
    registry: RegistrySpec, redis_url: str | None, images: Mapping[str, Image] = IMAGES
) -> dict[str, Any]:
    """Envoy Gateway chart (gateway-helm v1.9.0) configured for Envoy AI Gateway (its extension server), proxies in
    the Gateway's own namespace, global rate limits in Redis."""

    def ref(key: str) -> str:
        image = images[key]
        return f"{image.full_name(registry)}:{image.pinned_tag}"

    config: dict[str, Any] = {
        "gateway": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
        "provider": {"type": "Kubernetes", "kubernetes": {"deploy": {"type": "GatewayNamespace"}}},
        "extensionApis": {"enableEnvoyPatchPolicy": True, "enableBackend": True},
        "extensionManager": {
            "hooks": {
                "xdsTranslator": {
                    "translation": {
                        "listener": {"includeAll": True},
                        "route": {"includeAll": True},
                        "cluster": {"includeAll": True},
                        "secret": {"includeAll": True},
                    },
                    "post": ["Translation", "Cluster", "Route"],
                }
            },
            "service": {
                "fqdn": {"hostname": f"ai-gateway-controller.{AI_GATEWAY_NAMESPACE}.svc.cluster.local", "port": 1063}
            },
        },
    }
    if redis_url:
        config["rateLimit"] = {"backend": {"type": "Redis", "redis": {"url": redis_url}}}
    return {
        "global": {
            "images": {
                "envoyGateway": {"image": ref("envoy-gateway"), "pullPolicy": "IfNotPresent"},
                "ratelimit": {"image": ref("envoy-ratelimit"), "pullPolicy": "IfNotPresent"},
                "envoyProxy": {"image": ref("envoy-proxy"), "pullPolicy": "IfNotPresent"},
            }
        },
        "config": {"envoyGateway": config},
        "deployment": {
            "envoyGateway": {"securityContext": RESTRICTED_CONTAINER},
            "pod": {"securityContext": RESTRICTED_POD},
        },
    }


def ai_gateway_values(registry: RegistrySpec, images: Mapping[str, Image] = IMAGES) -> dict[str, Any]:
    """Envoy AI Gateway chart (ai-gateway-helm v1.1.0): controller and external processor through the registry."""
    controller, extproc = images["ai-gateway-controller"], images["ai-gateway-extproc"]
    return {
        "controller": {
            # The tenant id header becomes the `tenant_id` label of the AI Gateway's token and latency metrics.
            "metricsRequestHeaderAttributes": "x-privatellm-tenant:tenant.id",
            "image": {"repository": controller.full_name(registry), "tag": controller.pinned_tag},
            "imagePullPolicy": "IfNotPresent",
            "podSecurityContext": RESTRICTED_POD,
            "securityContext": RESTRICTED_CONTAINER,
        },
        "extProc": {
            "image": {"repository": extproc.full_name(registry), "tag": extproc.pinned_tag},
            "imagePullPolicy": "IfNotPresent",
        },
    }


def gateway_model(model: PlacedModel, namespace: str) -> GatewayModel:
    """How the gateway routes to one placed model (or one revision of it)."""
    if model.revision is None:
        return GatewayModel(name=model.spec.served_name, service=model.spec.name, namespace=namespace)
    return GatewayModel(
        name=model.spec.served_name,
        service=model.spec.name,
        namespace=namespace,
        model=model.model_name,
        revision=model.revision.label,
        weight=model.revision.weight,
    )


def gateway_rollout(rollout: RolloutSpec) -> GatewayRollout:
    return GatewayRollout(evaluators=list(rollout.evaluators), cohorts={k: list(v) for k, v in rollout.cohorts.items()})


def build_gateway(
    site: Site,
    models: list[PlacedModel],
    pki: Pki | None,
    services: Mapping[str, VllmService],
    pulls: list[pulumi.Resource],
) -> LlmGateway | None:
    """Envoy Gateway + Envoy AI Gateway and the OpenAI-compatible entry, when the stack declares a gateway (and has
    models to route to, a registry and the PKI that secures every hop)."""
    spec = site.spec
    if spec.gateway is None or not models or spec.registry is None or pki is None:
        return None
    g = spec.gateway
    registry = spec.registry
    gateway_ns = spec.namespaces.gateway.name
    inference_ns = spec.namespaces.inference.name
    # The controllers' namespaces are created with the platform's namespaces (`support_namespace_args`).
    controller_namespaces = [site.namespaces[ENVOY_GATEWAY_NAMESPACE], site.namespaces[AI_GATEWAY_NAMESPACE]]
    installed: list[pulumi.Resource] = []
    for name, ns, values in (
        ("envoy-gateway", ENVOY_GATEWAY_NAMESPACE, envoy_gateway_values(registry, g.redis_url, site.images)),
        ("ai-gateway-crds", AI_GATEWAY_NAMESPACE, {}),
        ("ai-gateway", AI_GATEWAY_NAMESPACE, ai_gateway_values(registry, site.images)),
    ):
        installed.append(site.install_chart(name, ns, values, controller_namespaces, pulls, list(installed)))
    certificates = [
        pki.certificate("cert-gateway", gateway_ns, GATEWAY_TLS_SECRET, g.hostname, [g.hostname], "server"),
        pki.certificate(
            "cert-gateway-client", gateway_ns, GATEWAY_CLIENT_SECRET, f"{spec.name}-gateway", usage="client"
        ),
    ]
    gateway_args = LlmGatewayArgs(
        namespace=gateway_ns,
        instance=spec.name,
        hostname=g.hostname,
        tls_secret=GATEWAY_TLS_SECRET,
        client_certificate_secret=GATEWAY_CLIENT_SECRET,
        ca_configmap=pki.ca_configmap,
        models=[gateway_model(m, inference_ns) for m in models],
        rollouts={m.name: gateway_rollout(m.rollout) for m in spec.models if m.revisions and m.rollout is not None},
        tenants=[
            GatewayTenant(
                name=t.name,
                requests_per_minute=t.api.requests_per_minute,
                tokens_per_minute=t.api.tokens_per_minute,
                access=t.access,
            )
            for t in spec.tenants
        ],
        rotation_days=g.key_rotation_days,
        key_epoch=g.key_epoch,
        service_type=g.service_type,
        source_ranges=list(g.source_ranges),
        max_request_body=g.max_request_body,
        global_limits=g.redis_url is not None,
        pod_monitor=spec.observability.enabled,
    )
    depends = site.after(site.namespaces[gateway_ns], installed, certificates, services.values())
    return build("gateway", "privatellm:gateway:LlmGateway", lambda: LlmGateway("gateway", gateway_args, opts=depends))
