"""Harbor, configured as code: its chart values, retained claims, projects and the pull secrets of the consuming
namespaces."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from components.pki import Pki, service_dns_names
from components.registry import HarborArgs, HarborProject, HarborRegistry, HarborReplication, secret_names
from infra.builders.base import Site
from infra.builders.namespaces import AI_GATEWAY_NAMESPACE, ENVOY_GATEWAY_NAMESPACE
from infra.catalog import (
    CHARTS,
    IMAGES,
    Image,
    pre_harbor_chart_source,
)
from infra.config import (
    LOG_SHIPPER_NAMESPACE,
    HarborSpec,
    PlatformSpec,
    RegistrySpec,
    config_secret,
)
from infra.errors import build
from infra.features import runs_gateway, runs_gpu_operator, runs_logging, runs_monitoring
from infra.profiles import PROFILE_SETTINGS

HARBOR_TLS_SECRET = "harbor-tls"


HARBOR_CLAIMS = ("harbor-registry", "harbor-jobservice", "harbor-database", "harbor-redis", "harbor-trivy")


def harbor_claims(spec: PlatformSpec) -> dict[str, tuple[str, str | None]]:
    """PVCs the platform creates (retained on delete) and hands to the Harbor chart as existing claims."""
    assert spec.registry is not None and spec.registry.harbor is not None
    h = spec.registry.harbor
    claims: dict[str, tuple[str, str | None]] = {
        "harbor-jobservice": ("10Gi", h.storage.storage_class),
        "harbor-trivy": ("20Gi", h.storage.storage_class),
    }
    if h.storage.type == "pvc":
        claims["harbor-registry"] = (h.storage.registry_size, h.storage.storage_class)
    if h.database is None:
        claims["harbor-database"] = ("20Gi", h.storage.storage_class)
    if h.redis is None:
        claims["harbor-redis"] = ("5Gi", h.storage.storage_class)
    return claims


def harbor_values(
    spec: PlatformSpec,
    secrets: dict[str, str],
    images: Mapping[str, Image] = IMAGES,
    tls_secret: str | None = None,
) -> dict[str, Any]:
    """Values of the Harbor chart (goharbor/harbor-helm 1.19.1, values.yaml): credentials only through existing
    Secrets, data on retained claims (or S3), images from the bootstrap registry, Trivy on, metrics on."""
    assert spec.registry is not None and spec.registry.harbor is not None
    registry, h = spec.registry, spec.registry.harbor
    bootstrap = registry.bootstrap()
    assert bootstrap is not None

    def image(key: str) -> dict[str, str]:
        ref = images[key]
        return {"repository": ref.full_name(bootstrap), "tag": ref.pinned_tag}

    claims = harbor_claims(spec)

    def claim(name: str) -> dict[str, str]:
        return {"existingClaim": name} if name in claims else {}

    storage: dict[str, Any] = {"type": "filesystem"}
    if h.storage.type == "s3":
        s3: dict[str, Any] = {
            "existingSecret": secrets["s3"],
            "bucket": h.storage.bucket,
            "region": h.storage.region,
            "encrypt": True,
            "secure": True,
        }
        if h.storage.endpoint:
            s3["regionendpoint"] = h.storage.endpoint
        storage = {"type": "s3", "s3": s3}
    database: dict[str, Any] = {"type": "internal", "internal": {"image": image("harbor-db")}}
    if h.database is not None:
        database = {
            "type": "external",
            "external": {
                "host": h.database.host,
                "port": str(h.database.port),
                "username": h.database.username,
                "coreDatabase": h.database.database,
                "existingSecret": secrets["database"],
                "sslmode": h.database.sslmode,
            },
        }
    redis: dict[str, Any] = {"type": "internal", "internal": {"image": image("harbor-redis")}}
    if h.redis is not None:
        external: dict[str, Any] = {"addr": h.redis.addr, "sentinelMasterSet": h.redis.sentinel_master_set or ""}
        if h.redis.password_secret:
            external["existingSecret"] = secrets["redis"]
        redis = {"type": "external", "external": external}
    tls: dict[str, Any] = {"enabled": True}
    served_by = tls_secret or h.tls_secret_name
    if served_by:
        tls.update(certSource="secret", secret={"secretName": served_by})
    else:
        tls.update(certSource="auto", auto={"commonName": registry.hostname})
    return {
        "expose": harbor_expose(registry, tls),
        "externalURL": f"https://{registry.host}",
        "existingSecretAdminPassword": secrets["admin"],
        "existingSecretAdminPasswordKey": "HARBOR_ADMIN_PASSWORD",
        "existingSecretSecretKey": secrets["secret_key"],
        "internalTLS": {"enabled": True, "strong_ssl_ciphers": True},
        "persistence": {
            "enabled": True,
            "resourcePolicy": "keep",
            "persistentVolumeClaim": {
                "registry": claim("harbor-registry"),
                "jobservice": {"jobLog": claim("harbor-jobservice")},
                "database": claim("harbor-database"),
                "redis": claim("harbor-redis"),
                "trivy": claim("harbor-trivy"),
            },
            "imageChartStorage": storage,
        },
        "updateStrategy": {"type": "Recreate"},
        "containerSecurityContext": {
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nginx": {"image": image("harbor-nginx")},
        "portal": {"image": image("harbor-portal")},
        "core": {"image": image("harbor-core")},
        "jobservice": {"image": image("harbor-jobservice")},
        "registry": {
            "registry": {"image": image("harbor-registry")},
            "controller": {"image": image("harbor-registryctl")},
        },
        # Air-gapped: Trivy scans with the vulnerability database mirrored into the site, never downloads one.
        "trivy": {
            "enabled": True,
            "image": image("harbor-trivy"),
            "skipUpdate": registry.air_gapped,
            "skipJavaDBUpdate": registry.air_gapped,
            "offlineScan": registry.air_gapped,
        },
        "database": database,
        "redis": redis,
        "exporter": {"image": image("harbor-exporter")},
        "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}},
    }


def harbor_expose(registry: RegistrySpec, tls: dict[str, Any]) -> dict[str, Any]:
    """The chart's `expose` block: one Service named `harbor` of the type `registry.harbor.expose` declares. With
    NodePort, https is served on the node port of registry.host (http gets a free one: nodePort 0 leaves it to the
    API server)."""
    assert registry.harbor is not None
    e = registry.harbor.expose
    annotations = dict(e.annotations)
    if e.service_type == "LoadBalancer":
        balancer: dict[str, Any] = {"name": "harbor", "annotations": annotations}
        if e.source_ranges:
            balancer["sourceRanges"] = list(e.source_ranges)
        return {"type": "loadBalancer", "tls": tls, "loadBalancer": balancer}
    if e.service_type == "NodePort":
        ports = {"http": {"port": 80, "nodePort": 0}, "https": {"port": 443, "nodePort": registry.harbor_node_port}}
        return {
            "type": "nodePort",
            "tls": tls,
            "nodePort": {"name": "harbor", "ports": ports, "annotations": annotations},
        }
    return {"type": "clusterIP", "tls": tls, "clusterIP": {"name": "harbor", "annotations": annotations}}


def pull_namespaces(spec: PlatformSpec) -> list[str]:
    """Namespaces whose pods pull from the registry (with a managed Harbor, each gets a robot's pull secret)."""
    namespaces = [spec.namespaces.inference.name, spec.namespaces.operators.name]
    if spec.registry is not None and spec.registry.harbor is None:
        # With a managed Harbor the PKI comes up before it, from the bootstrap registry.
        namespaces.append(spec.namespaces.pki.name)
    if runs_gateway(spec):
        namespaces += [spec.namespaces.gateway.name, ENVOY_GATEWAY_NAMESPACE, AI_GATEWAY_NAMESPACE]
    if runs_gpu_operator(spec):
        namespaces.append(spec.gpu_operator.namespace)
    if runs_monitoring(spec):
        namespaces.append(spec.namespaces.monitoring.name)
    if runs_logging(spec):
        namespaces += [spec.namespaces.logging.name, LOG_SHIPPER_NAMESPACE]
    return namespaces


def build_registry(site: Site, pki: Pki | None) -> HarborRegistry | None:
    """Harbor in the registry namespace, configured as code, with pull secrets for the consuming namespaces; None when
    the stack's registry is not managed by the platform."""
    spec = site.spec
    registry = spec.registry
    if registry is None or registry.harbor is None:
        return None
    h = registry.harbor
    severity = h.vulnerability_severity or PROFILE_SETTINGS[spec.profile].vulnerability_severity
    projects = [
        HarborProject(registry.platform_project, severity),
        HarborProject(registry.models_project, severity),
        HarborProject(registry.charts_project, severity),
    ]
    if not registry.air_gapped:
        projects += [
            HarborProject(f"proxy-{p.name}", severity, proxy_endpoint=p.endpoint, proxy_provider=p.provider)
            for p in h.proxy_caches
        ]
    harbor_tls = h.tls_secret_name
    if harbor_tls is None and pki is not None:
        harbor_tls = HARBOR_TLS_SECRET
        ns = spec.namespaces.registry.name
        pki.certificate(
            "cert-harbor",
            ns,
            harbor_tls,
            registry.hostname,
            [registry.hostname, *service_dns_names("harbor", ns)],
            "server",
        )
    ref = CHARTS["harbor"]
    source, repo = pre_harbor_chart_source(ref, registry)  # Harbor cannot serve its own chart
    names = secret_names()
    auth_mode, auth = _harbor_auth(h)
    args = HarborArgs(
        namespace=spec.namespaces.registry.name,
        instance=spec.name,
        host=registry.host,
        chart=source,
        chart_version=ref.version,
        chart_repository=repo,
        values=harbor_values(spec, names, site.images, tls_secret=harbor_tls),
        projects=projects,
        pull_namespaces=pull_namespaces(spec),
        pull_projects=[registry.platform_project, registry.models_project],
        claims=harbor_claims(spec),
        s3_credentials=(
            config_secret(str(h.storage.access_key_id_secret)),
            config_secret(str(h.storage.secret_access_key_secret)),
        )
        if h.storage.type == "s3"
        else None,
        database_password=config_secret(str(h.database.password_secret)) if h.database else None,
        redis_password=config_secret(str(h.redis.password_secret)) if h.redis and h.redis.password_secret else None,
        retention_keep_most_recent=h.retention_keep_most_recent,
        retention_schedule=h.retention_schedule,
        replication=HarborReplication(
            endpoint=h.replication.endpoint,
            username=h.replication.username,
            password=config_secret(str(h.replication.password_secret)),
            schedule=h.replication.schedule,
        )
        if h.replication
        else None,
        auth=auth,
        auth_mode=auth_mode,
    )
    # Harbor puts a pull secret into each consuming namespace: they exist first.
    namespaces = [site.namespaces[n] for n in (spec.namespaces.registry.name, *pull_namespaces(spec))]
    return build(
        "harbor", "privatellm:registry:Harbor", lambda: HarborRegistry("harbor", args, opts=site.after(namespaces))
    )


def _harbor_auth(h: HarborSpec) -> tuple[Literal["ldap_auth", "oidc_auth"] | None, dict[str, Any] | None]:
    """Harbor's directory login, configured as code: LDAP or OIDC settings (unset ones left out), the bind password
    or client secret from the stack's secrets."""
    if h.auth is None:
        return None, None
    a = h.auth
    settings: dict[str, Any]
    if a.mode == "ldap":
        mode: Literal["ldap_auth", "oidc_auth"] = "ldap_auth"
        settings = {
            "ldap_url": a.ldap_url,
            "ldap_base_dn": a.ldap_base_dn,
            "ldap_search_dn": a.ldap_search_dn,
            "ldap_search_password": config_secret(str(a.ldap_search_password_secret)),
            "ldap_uid": a.ldap_uid,
            "ldap_verify_cert": True,
            "ldap_group_base_dn": a.ldap_group_base_dn,
            "ldap_group_admin_dn": a.ldap_group_admin_dn,
        }
    else:
        mode = "oidc_auth"
        settings = {
            "oidc_name": "corporate-sso",
            "oidc_endpoint": a.oidc_endpoint,
            "oidc_client_id": a.oidc_client_id,
            "oidc_client_secret": config_secret(str(a.oidc_client_secret_secret)),
            "oidc_groups_claim": a.oidc_groups_claim,
            "oidc_admin_group": a.oidc_admin_group,
            "oidc_scope": "openid,profile,email,offline_access",
            "oidc_verify_cert": True,
            "oidc_auto_onboard": True,
            "oidc_user_claim": "preferred_username",
        }
    return mode, {k: v for k, v in settings.items() if v is not None}
