"""Encryption and identity in transit: TLS entries, mutual TLS on model servers, exposure, certificate and key
lifetimes.

Sources: NSA/CISA Kubernetes Hardening Guidance (encrypt traffic, limit exposure), CIS Kubernetes Benchmark 5.x,
OWASP Top 10 for LLM Applications 2025 (LLM02 sensitive information disclosure: authenticated, encrypted endpoints),
HIPAA §164.312(e) (transmission security) for the healthcare profile.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pulumi_policy import Severity

from policies.base import (
    POD_TYPES,
    Rule,
    containers,
    flag_value,
    get_path,
    hipaa,
    is_vllm_server,
    namespace_of,
    nsa,
    owasp,
    pod_templates,
    where_prefix,
)
from policies.profiles import threshold

GATEWAY_TYPES = (
    "kubernetes:gateway.networking.k8s.io/v1:Gateway",
    "kubernetes:gateway.networking.k8s.io/v1beta1:Gateway",
)
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
SERVICE = "kubernetes:core/v1:Service"
ENVOY_PROXY = "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy"
CERTIFICATE = "kubernetes:cert-manager.io/v1:Certificate"
ROTATING = "time:index/rotating:Rotating"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"


def tls_listeners(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    if resource_type == INGRESS:
        tls = get_path(props, ("spec", "tls")) or []
        covered = {h for entry in tls if isinstance(entry, Mapping) for h in entry.get("hosts") or []}
        if not tls:
            out.append("Ingress has no spec.tls: every entry must terminate TLS")
        for rule in get_path(props, ("spec", "rules")) or []:
            host = rule.get("host") if isinstance(rule, Mapping) else None
            if host and tls and host not in covered:
                out.append(f"Ingress host {host!r} is not covered by spec.tls")
        return out
    for listener in get_path(props, ("spec", "listeners")) or []:
        if not isinstance(listener, Mapping):
            continue
        name, protocol = listener.get("name"), listener.get("protocol")
        if protocol not in ("HTTPS", "TLS"):
            out.append(f"listener {name!r} uses {protocol}; only HTTPS or TLS listeners are allowed")
        elif protocol == "HTTPS" and not get_path(listener, ("tls", "certificateRefs")):
            out.append(f"listener {name!r} has no certificateRefs")
    return out


def vllm_mtls(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for template in pod_templates(resource_type, props):
        for label, c in containers(template.spec):
            if not is_vllm_server(c):
                continue
            args = [str(x) for x in [*(c.get("command") or []), *(c.get("args") or [])]]
            if "--headless" in args:
                continue  # multi-node workers serve no API
            problems = [f for f in ("--ssl-certfile", "--ssl-keyfile", "--ssl-ca-certs") if flag_value(args, f) is None]
            if flag_value(args, "--ssl-cert-reqs") != "2":
                problems.append("--ssl-cert-reqs 2")
            if problems:
                out.append(
                    f"{where_prefix(template)}{label} serves without verifying client certificates; missing "
                    + ", ".join(problems)
                )
    return out


def exposure(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    allowed = {str(n) for n in config.get("gatewayNamespaces") or []}
    namespace = namespace_of(props)
    if resource_type == SERVICE:
        kind = get_path(props, ("spec", "type"))
    else:
        kind = get_path(props, ("spec", "provider", "kubernetes", "envoyService", "type"))
        kind = kind if kind is not None else "LoadBalancer"  # Envoy Gateway's default Service type
    if kind in ("LoadBalancer", "NodePort") and namespace not in allowed:
        return [
            f"a {kind} Service in namespace {namespace!r} exposes it outside the cluster; only the declared entry "
            f"points ({', '.join(sorted(allowed)) or 'none declared'}) may"
        ]
    return []


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)")
_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_duration_hours(value: str) -> float | None:
    """Hours in a Go duration string such as 2160h or 1h30m (cert-manager's format); None when unreadable."""
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _SECONDS[u] for n, u in parts) / 3600


def certificate_lifetime(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    spec = props.get("spec") if isinstance(props.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    if spec.get("isCA"):
        return []
    max_days = threshold(config, "maxCertificateDays")
    duration = spec.get("duration")
    out = []
    if not isinstance(duration, str):
        out.append(
            f"no duration: cert-manager's default (90 days) is not an explicit choice; set at most {max_days * 24}h"
        )
    else:
        hours = go_duration_hours(duration)
        if hours is None:
            out.append(f"duration {duration!r} is not a Go duration such as 2160h")
        elif hours > max_days * 24:
            out.append(
                f"duration {duration} is longer than the profile's maximum of {max_days} days ({max_days * 24}h)"
            )
    if get_path(spec, ("privateKey", "rotationPolicy")) != "Always":
        out.append("privateKey.rotationPolicy must be Always: a renewed certificate gets a new key")
    return out


API_KEY_PURPOSE = "gateway-api-key"
"""The `purpose` keeper the gateway puts on tenant API keys (random.RandomPassword)."""


def key_rotation(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    max_days = threshold(config, "maxKeyRotationDays")
    if resource_type == RANDOM_PASSWORD:
        keepers = props.get("keepers") if isinstance(props.get("keepers"), Mapping) else {}
        assert isinstance(keepers, Mapping)
        if keepers.get("purpose") != API_KEY_PURPOSE:
            return []
        try:
            period = float(str(keepers.get("rotationDays")))
        except ValueError:
            return ["API key has no rotation period: its keepers must name rotationDays and the current window"]
        if not keepers.get("window"):
            return ["API key has no rotation window in its keepers: it would never be replaced"]
        if period > max_days:
            return [f"API keys rotate every {period:g} days; the profile allows at most {max_days}"]
        return []
    days = 0.0
    for field, factor in (
        ("rotationMinutes", 1 / 1440),
        ("rotationHours", 1 / 24),
        ("rotationDays", 1),
        ("rotationMonths", 31),
        ("rotationYears", 366),
    ):
        value = props.get(field)
        if isinstance(value, int | float):
            days = max(days, float(value) * factor)
    if days == 0:
        return ["no rotation period: keys must rotate (rotationDays)"]
    if days > max_days:
        return [f"keys rotate every {days:g} days; the profile allows at most {max_days}"]
    return []


TLS_RULES: list[Rule] = [
    Rule(
        name="gateway-tls-listeners",
        description=(
            "Every entry into the platform (Gateway listener, Ingress) terminates TLS: nothing is served in clear."
        ),
        check=tls_listeners,
        resource_types=[*GATEWAY_TYPES, INGRESS],
        standards=(
            nsa("Network separation: encrypt traffic"),
            owasp("LLM02: Sensitive Information Disclosure"),
            hipaa("164.312(e)(1)"),
        ),
        remediation=(
            "Use HTTPS listeners with a certificate from the platform PKI (certificateRefs); add spec.tls to Ingresses."
        ),
        severity=Severity.CRITICAL,
    ),
    Rule(
        name="vllm-client-certificates",
        description=(
            "Model servers accept only clients that present a certificate of the platform CA (mutual TLS); vLLM's "
            "API key covers only part of its endpoints, so the certificate is the real boundary."
        ),
        check=vllm_mtls,
        resource_types=POD_TYPES,
        standards=(
            owasp("LLM02: Sensitive Information Disclosure"),
            nsa("Authentication and authorization"),
            hipaa("164.312(d)"),
        ),
        remediation=(
            "Give the VllmService a ServingTls (the platform does when the PKI is present): --ssl-* flags with "
            "--ssl-cert-reqs 2."
        ),
        severity=Severity.CRITICAL,
    ),
    Rule(
        name="no-external-services",
        description=(
            "Only the declared entry points (the gateway, and Harbor for the nodes and the deploy host) may be "
            "reachable from outside the cluster (LoadBalancer or NodePort)."
        ),
        check=exposure,
        resource_types=[SERVICE, ENVOY_PROXY],
        standards=(nsa("Network separation: limit exposure"), owasp("LLM10: Unbounded Consumption")),
        remediation="Use ClusterIP Services and route external traffic through the gateway.",
        severity=Severity.HIGH,
    ),
    Rule(
        name="certificate-lifetime",
        description="Certificates live no longer than the profile allows and get a new private key at every renewal.",
        check=certificate_lifetime,
        resource_types=[CERTIFICATE],
        standards=(nsa("Encryption: certificate management"), hipaa("164.312(e)(2)(ii)")),
        remediation=(
            "Issue certificates through the PKI helper (profile lifetime, renewBefore a third, rotationPolicy Always)."
        ),
        severity=Severity.MEDIUM,
    ),
    Rule(
        name="key-rotation-period",
        description=(
            "Tenant API keys rotate at least as often as the profile requires (random.RandomPassword keepers naming "
            "the rotation window, or a pulumiverse-time Rotating)."
        ),
        check=key_rotation,
        resource_types=[ROTATING, RANDOM_PASSWORD],
        standards=(owasp("LLM02: Sensitive Information Disclosure"),),
        remediation="Lower gateway.key_rotation_days to the profile's maximum.",
        severity=Severity.MEDIUM,
    ),
]
