"""The one catalog of every image and chart the platform uses, pinned, rendered through the customer's registry.

An image is stored as its upstream reference and pinned tag (optional digest); it is always rendered as
`<registry host>/<project>/<upstream path>:<tag>[@sha256:…]`, so that nothing is pulled from the internet.
Chart repositories and versions live here too, and each chart's values come from one tested function below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.base import RESTRICTED_CONTAINER, RESTRICTED_POD
from components.vllm import VLLM_VERSION
from infra.config import PlatformSpec, RegistrySpec
from infra.observability.ilm import AUDIT_DATASOURCE_UID
from policies.base import split_image

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Image:
    upstream: str
    """Upstream repository including its registry, e.g. docker.io/vllm/vllm-openai."""
    tag: str
    digest: str | None = None

    def __post_init__(self) -> None:
        if self.tag == "latest" or not self.tag:
            raise ValueError(f"{self.upstream}: pin a release tag, never latest")
        if self.digest is not None and not _DIGEST.match(self.digest):
            raise ValueError(f"{self.upstream}: digest must be sha256:<64 hex digits>")

    @property
    def path(self) -> str:
        """The repository path without the upstream registry host."""
        first, _, rest = self.upstream.partition("/")
        return rest if ("." in first or ":" in first) and rest else self.upstream

    def render(self, registry: RegistrySpec, project: str | None = None) -> str:
        ref = f"{registry.host}/{project or registry.platform_project}/{self.path}:{self.tag}"
        return f"{ref}@{self.digest}" if self.digest else ref


IMAGES: dict[str, Image] = {
    "vllm": Image("docker.io/vllm/vllm-openai", VLLM_VERSION),
    "lws": Image("registry.k8s.io/lws/lws", "v0.9.0"),
    "keda": Image("ghcr.io/kedacore/keda", "2.20.2"),
    "keda-metrics-apiserver": Image("ghcr.io/kedacore/keda-metrics-apiserver", "2.20.2"),
    "keda-admission-webhooks": Image("ghcr.io/kedacore/keda-admission-webhooks", "2.20.2"),
    # NVIDIA GPU Operator v26.7.0 and the operands its chart pins (deployments/gpu-operator/values.yaml).
    "gpu-operator": Image("nvcr.io/nvidia/gpu-operator", "v26.7.0"),
    "nvidia-driver": Image("nvcr.io/nvidia/driver", "595.91.07"),
    "nvidia-container-toolkit": Image("nvcr.io/nvidia/k8s/container-toolkit", "v1.20.0"),
    "nvidia-device-plugin": Image("nvcr.io/nvidia/k8s-device-plugin", "v0.20.0"),
    "dcgm-exporter": Image("nvcr.io/nvidia/k8s/dcgm-exporter", "4.6.0-4.8.3-distroless"),
    "mig-manager": Image("nvcr.io/nvidia/cloud-native/k8s-mig-manager", "v0.15.0"),
    # driver.manager: drains and reloads the driver on upgrades (runs as the driver pod's init container).
    "k8s-driver-manager": Image("nvcr.io/nvidia/cloud-native/k8s-driver-manager", "v0.12.0"),
    "node-feature-discovery": Image("registry.k8s.io/nfd/node-feature-discovery", "v0.19.0"),
    # cert-manager v1.21.1 and trust-manager v0.24.0 (quay.io/jetstack charts).
    **{
        f"cert-manager-{part}": Image(f"quay.io/jetstack/cert-manager-{part}", "v1.21.1")
        for part in ("controller", "webhook", "cainjector", "acmesolver", "startupapicheck")
    },
    "trust-manager": Image("quay.io/jetstack/trust-manager", "v0.24.0"),
    # Envoy Gateway v1.9.0 (its proxy and rate-limit images as pinned by that release) and Envoy AI Gateway v1.1.0.
    "envoy-gateway": Image("docker.io/envoyproxy/gateway", "v1.9.0"),
    "envoy-proxy": Image("docker.io/envoyproxy/envoy", "distroless-v1.39.0"),
    "envoy-ratelimit": Image("docker.io/envoyproxy/ratelimit", "17b1956c"),
    "ai-gateway-controller": Image("docker.io/envoyproxy/ai-gateway-controller", "v1.1.0"),
    "ai-gateway-extproc": Image("docker.io/envoyproxy/ai-gateway-extproc", "v1.1.0"),
    # kube-prometheus-stack 88.5.3: operator v0.93.1, Prometheus, Alertmanager, Grafana 13.2.0, kube-state-metrics.
    "prometheus-operator": Image("quay.io/prometheus-operator/prometheus-operator", "v0.93.1"),
    "prometheus-config-reloader": Image("quay.io/prometheus-operator/prometheus-config-reloader", "v0.93.1"),
    "kube-webhook-certgen": Image("ghcr.io/jkroepke/kube-webhook-certgen", "1.8.7"),
    "prometheus": Image("quay.io/prometheus/prometheus", "v3.14.0-distroless"),
    "alertmanager": Image("quay.io/prometheus/alertmanager", "v0.34.0"),
    "grafana": Image("docker.io/grafana/grafana", "13.2.0"),
    "grafana-sidecar": Image("quay.io/kiwigrid/k8s-sidecar", "2.10.1"),
    "kube-state-metrics": Image("registry.k8s.io/kube-state-metrics/kube-state-metrics", "v2.20.0"),
    # ECK 3.5.0 with the Elastic Stack 9.4.3; Fluent Bit 5.1.1 (chart 0.58.1); the Elasticsearch exporter.
    "eck-operator": Image("docker.elastic.co/eck/eck-operator", "3.5.0"),
    "elasticsearch": Image("docker.elastic.co/elasticsearch/elasticsearch", "9.4.3"),
    "kibana": Image("docker.elastic.co/kibana/kibana", "9.4.3"),
    "fluent-bit": Image("cr.fluentbit.io/fluent/fluent-bit", "5.1.1"),
    "elasticsearch-exporter": Image("quay.io/prometheuscommunity/elasticsearch-exporter", "v1.9.0"),
    # Harbor v2.15.1 (chart harbor 1.19.1); pulled from the bootstrap registry, since Harbor cannot serve itself
    # before it exists.
    **{
        f"harbor-{part}": Image(f"docker.io/goharbor/{repo}", "v2.15.1")
        for part, repo in (
            ("nginx", "nginx-photon"),
            ("portal", "harbor-portal"),
            ("core", "harbor-core"),
            ("jobservice", "harbor-jobservice"),
            ("registry", "registry-photon"),
            ("registryctl", "harbor-registryctl"),
            ("trivy", "trivy-adapter-photon"),
            ("db", "harbor-db"),
            ("redis", "redis-photon"),
            ("exporter", "harbor-exporter"),
        )
    },
}
# The driver the GPU Operator installs when the stack names none (the chart's own default).
DEFAULT_DRIVER_VERSION = IMAGES["nvidia-driver"].tag


@dataclass(frozen=True)
class ChartRef:
    name: str
    version: str
    repository: str
    """An https chart repository, or an oci:// registry path holding the chart."""

    def chart(self) -> str:
        return f"{self.repository}/{self.name}" if self.repository.startswith("oci://") else self.name

    def repo_url(self) -> str | None:
        return None if self.repository.startswith("oci://") else self.repository


CHARTS: dict[str, ChartRef] = {
    "lws": ChartRef("lws", "0.9.0", "oci://registry.k8s.io/lws/charts"),
    "keda": ChartRef("keda", "2.20.2", "https://kedacore.github.io/charts"),
    "gpu-operator": ChartRef("gpu-operator", "v26.7.0", "https://helm.ngc.nvidia.com/nvidia"),
    "harbor": ChartRef("harbor", "1.19.1", "https://helm.goharbor.io"),
    "cert-manager": ChartRef("cert-manager", "v1.21.1", "oci://quay.io/jetstack/charts"),
    "trust-manager": ChartRef("trust-manager", "v0.24.0", "oci://quay.io/jetstack/charts"),
    "envoy-gateway": ChartRef("gateway-helm", "v1.9.0", "oci://docker.io/envoyproxy"),
    "ai-gateway-crds": ChartRef("ai-gateway-crds-helm", "v1.1.0", "oci://docker.io/envoyproxy"),
    "ai-gateway": ChartRef("ai-gateway-helm", "v1.1.0", "oci://docker.io/envoyproxy"),
    "kube-prometheus-stack": ChartRef(
        "kube-prometheus-stack", "88.5.3", "https://prometheus-community.github.io/helm-charts"
    ),
    "eck-operator": ChartRef("eck-operator", "3.5.0", "https://helm.elastic.co"),
    "fluent-bit": ChartRef("fluent-bit", "0.58.1", "https://fluent.github.io/helm-charts"),
}


def chart_source(ref: ChartRef, registry: RegistrySpec | None) -> tuple[str, str | None]:
    """(chart, repository URL or None): an air-gapped site takes every chart from oci://<host>/<charts project>."""
    if registry is not None and registry.air_gapped:
        return f"oci://{registry.host}/{registry.charts_project}/{ref.name}", None
    return ref.chart(), ref.repo_url()


PRE_HARBOR_CHARTS = ("cert-manager", "trust-manager", "harbor")
"""Charts a managed Harbor's stack installs before Harbor answers: the PKI (Harbor serves a PKI certificate) and
Harbor itself. They cannot come from oci://<registry.host>/…"""


def bootstrap_charts_location(registry: RegistrySpec) -> str | None:
    """Where a managed Harbor's stack takes the `PRE_HARBOR_CHARTS` from: `registry.harbor.bootstrap_charts`, else
    oci://<bootstrap_registry>/<charts_project> on an air-gapped site; None: their upstream repositories."""
    harbor = registry.harbor
    if harbor is None:
        return None
    if harbor.bootstrap_charts:
        return harbor.bootstrap_charts
    return f"oci://{harbor.bootstrap_registry}/{registry.charts_project}" if registry.air_gapped else None


def pre_harbor_chart_source(ref: ChartRef, registry: RegistrySpec) -> tuple[str, str | None]:
    """(chart, repository URL or None) of a chart installed before a managed Harbor exists (see
    `bootstrap_charts_location`); a registry the platform does not manage serves every chart (`chart_source`)."""
    if registry.harbor is None:
        return chart_source(ref, registry)
    location = bootstrap_charts_location(registry)
    if location is None:
        return ref.chart(), ref.repo_url()
    return f"{location}/{ref.name}", None


def _split(image: Image, registry: RegistrySpec) -> tuple[str, str]:
    """(registry host, repository path) of an image rendered through the customer's registry."""
    rendered = image.render(registry).split("@")[0].rsplit(":", 1)[0]
    host, _, repository = rendered.partition("/")
    return host, repository


def pinned_tag(image: Image) -> str:
    """The tag a chart should render: `tag@sha256:…` when the lock pins a digest (a valid reference either way)."""
    return f"{image.tag}@{image.digest}" if image.digest else image.tag


def lws_values(registry: RegistrySpec, images: Mapping[str, Image] = IMAGES) -> dict[str, Any]:
    """Values of the LeaderWorkerSet controller chart (kubernetes-sigs/lws, charts/lws/values.yaml)."""
    image = images["lws"]
    host, repository = _split(image, registry)
    return {
        "image": {
            "manager": {"repository": f"{host}/{repository}", "tag": pinned_tag(image), "pullPolicy": "IfNotPresent"}
        },
        "podSecurityContext": RESTRICTED_POD,
        "securityContext": RESTRICTED_CONTAINER,
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "enablePrometheus": False,
    }


def keda_values(registry: RegistrySpec, images: Mapping[str, Image] = IMAGES) -> dict[str, Any]:
    """Values of the KEDA chart (kedacore/charts, keda/values.yaml): images through the registry, restricted pods."""
    rendered: dict[str, Any] = {}
    for key, name in (
        ("keda", "keda"),
        ("metricsApiServer", "keda-metrics-apiserver"),
        ("webhooks", "keda-admission-webhooks"),
    ):
        image = images[name]
        host, repository = _split(image, registry)
        rendered[key] = {"registry": host, "repository": repository, "tag": pinned_tag(image)}
    rendered["pullPolicy"] = "IfNotPresent"
    components = ("operator", "metricServer", "webhooks")
    return {
        "image": rendered,
        "securityContext": {c: RESTRICTED_CONTAINER for c in components},
        "podSecurityContext": {c: RESTRICTED_POD for c in components},
        "resources": {
            c: {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1000Mi"}}
            for c in components
        },
        "service": {"minTlsVersion": "TLS13"},
        "prometheus": {"operator": {"enabled": True}, "metricServer": {"enabled": True}},
    }


def _repo_of(image: Image, registry: RegistrySpec) -> str:
    """The repository *folder* of an image, for charts that take repository and image name separately."""
    host, repository = _split(image, registry)
    return f"{host}/{repository.rsplit('/', 1)[0]}"


@dataclass(frozen=True)
class GpuPoolSettings:
    """What the GPU Operator needs to know about one pool."""

    name: str
    mig_strategy: str
    time_slicing_replicas: int | None
    taint_key: str | None


def gpu_operator_values(
    registry: RegistrySpec,
    install_driver: bool,
    driver_version: str,
    pools: list[GpuPoolSettings],
    images: Mapping[str, Image] = IMAGES,
) -> dict[str, Any]:
    """Values of the NVIDIA GPU Operator chart (NVIDIA/gpu-operator v26.7.0, deployments/gpu-operator/values.yaml)."""

    def image(key: str, version: str | None = None) -> dict[str, Any]:
        ref = images[key]
        return {
            "repository": _repo_of(ref, registry),
            "image": ref.path.rsplit("/", 1)[-1],
            "version": version or pinned_tag(ref),
            "imagePullPolicy": "IfNotPresent",
        }

    strategies = {p.mig_strategy for p in pools} - {"none"}
    mig_strategy = "mixed" if "mixed" in strategies else ("single" if strategies else "none")
    sliced = [p for p in pools if p.time_slicing_replicas]
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    tolerations += [
        {"key": key, "operator": "Exists", "effect": "NoSchedule"}
        for key in sorted({p.taint_key for p in pools if p.taint_key})
    ]
    device_plugin: dict[str, Any] = image("nvidia-device-plugin")
    if sliced:
        data = {
            p.name: (
                "version: v1\nflags:\n  migStrategy: none\nsharing:\n  timeSlicing:\n    resources:\n"
                f"    - name: nvidia.com/gpu\n      replicas: {p.time_slicing_replicas}\n"
            )
            for p in sliced
        }
        data["default"] = "version: v1\nflags:\n  migStrategy: " + mig_strategy + "\n"
        device_plugin["config"] = {"create": True, "name": "device-plugin-config", "default": "default", "data": data}
    nfd_image = images["node-feature-discovery"]
    host, nfd_repository = _split(nfd_image, registry)
    return {
        # The namespace is labelled by the platform (privileged, the documented exception).
        "psa": {"enabled": False},
        "cdi": {"enabled": True},
        "daemonsets": {"tolerations": tolerations, "priorityClassName": "system-node-critical"},
        "operator": image("gpu-operator"),
        "validator": image("gpu-operator"),
        "driver": {
            "enabled": install_driver,
            **image("nvidia-driver", driver_version),
            "manager": image("k8s-driver-manager"),
        },
        "toolkit": {"enabled": True, **image("nvidia-container-toolkit")},
        "devicePlugin": {"enabled": True, **device_plugin},
        "gfd": {"enabled": True, **image("nvidia-device-plugin")},
        "dcgmExporter": {
            "enabled": True,
            **image("dcgm-exporter"),
            "serviceMonitor": {"enabled": True, "interval": "15s"},
        },
        "mig": {"strategy": mig_strategy},
        "migManager": {"enabled": mig_strategy != "none", **image("mig-manager")},
        # Virtualisation and confidential-computing operands are not used by the platform.
        "sandboxWorkloads": {"enabled": False},
        "vgpuDeviceManager": {"enabled": False},
        "vfioManager": {"enabled": False},
        "sandboxDevicePlugin": {"enabled": False},
        "kataSandboxDevicePlugin": {"enabled": False},
        "ccManager": {"enabled": False},
        "nfd": {"enabled": True},
        "node-feature-discovery": {
            "image": {
                "repository": f"{host}/{nfd_repository}",
                "tag": pinned_tag(nfd_image),
                "pullPolicy": "IfNotPresent",
            },
            "worker": {"tolerations": tolerations},
        },
    }


# Documentation of which catalog images each chart's values function can name (docs/architecture.md). Not used to
# list a stack's images: `infra.images.stack_inventory` reads them from the render; tests/test_images_complete.py
# checks that every image a rendered chart names is declared here.
CHART_IMAGES: dict[str, tuple[str, ...]] = {
    "gpu-operator": (
        "gpu-operator",
        "nvidia-driver",
        "nvidia-container-toolkit",
        "nvidia-device-plugin",
        "dcgm-exporter",
        "mig-manager",
        "k8s-driver-manager",
        "node-feature-discovery",
    ),
    "lws": ("lws",),
    "keda": ("keda", "keda-metrics-apiserver", "keda-admission-webhooks"),
    "harbor": tuple(k for k in IMAGES if k.startswith("harbor-")),
    "cert-manager": tuple(k for k in IMAGES if k.startswith("cert-manager-")),
    "trust-manager": ("trust-manager",),
    "envoy-gateway": ("envoy-gateway", "envoy-proxy", "envoy-ratelimit"),
    "ai-gateway-crds": (),
    "ai-gateway": ("ai-gateway-controller", "ai-gateway-extproc"),
    "kube-prometheus-stack": (
        "prometheus-operator",
        "prometheus-config-reloader",
        "kube-webhook-certgen",
        "prometheus",
        "alertmanager",
        "grafana",
        "grafana-sidecar",
        "kube-state-metrics",
    ),
    "eck-operator": ("eck-operator", "elasticsearch", "kibana", "elasticsearch-exporter"),
    "fluent-bit": ("fluent-bit",),
}


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
    bootstrap = RegistrySpec(host=h.bootstrap_registry, platform_project=registry.platform_project)

    def image(key: str) -> dict[str, str]:
        ref = images[key]
        host, repository = _split(ref, bootstrap)
        return {"repository": f"{host}/{repository}", "tag": pinned_tag(ref)}

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


HARBOR_SERVICE_PORTS = 2
"""Ports of the Service Harbor's chart (1.19.1, templates/nginx/service.yaml) creates with TLS on: http and https."""


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


def _full(image: Image, registry: RegistrySpec) -> str:
    """`<host>/<project>/<path>` without tag."""
    host, repository = _split(image, registry)
    return f"{host}/{repository}"


def cert_manager_values(registry: RegistrySpec, images: Mapping[str, Image] = IMAGES) -> dict[str, Any]:
    """cert-manager chart (jetstack, deploy/charts/cert-manager v1.21.1): CRDs kept on uninstall, images through the
    registry, restricted pods, ServiceMonitor on."""

    def image(part: str) -> dict[str, str]:
        ref = images[f"cert-manager-{part}"]
        return {"repository": _full(ref, registry), "tag": pinned_tag(ref), "pullPolicy": "IfNotPresent"}

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
        "image": {"repository": _full(ref, registry), "tag": pinned_tag(ref), "pullPolicy": "IfNotPresent"},
        "defaultPackage": {"enabled": False},
        "secretTargets": {"enabled": False},
        "app": {
            "trust": {"namespace": trust_namespace},
            "securityContext": RESTRICTED_CONTAINER,
            "metrics": {"service": {"servicemonitor": {"enabled": True}}},
        },
        "podSecurityContext": RESTRICTED_POD,
    }


AI_GATEWAY_NAMESPACE = "envoy-ai-gateway-system"
ENVOY_GATEWAY_NAMESPACE = "envoy-gateway-system"


def envoy_gateway_values(
    registry: RegistrySpec, redis_url: str | None, images: Mapping[str, Image] = IMAGES
) -> dict[str, Any]:
    """Envoy Gateway chart (gateway-helm v1.9.0) configured for Envoy AI Gateway (its extension server), proxies in
    the Gateway's own namespace, global rate limits in Redis."""

    def ref(key: str) -> str:
        image = images[key]
        return f"{_full(image, registry)}:{pinned_tag(image)}"

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
            "image": {"repository": _full(controller, registry), "tag": pinned_tag(controller)},
            "imagePullPolicy": "IfNotPresent",
            "podSecurityContext": RESTRICTED_POD,
            "securityContext": RESTRICTED_CONTAINER,
        },
        "extProc": {
            "image": {"repository": _full(extproc, registry), "tag": pinned_tag(extproc)},
            "imagePullPolicy": "IfNotPresent",
        },
    }


def _registry_repo_tag(image: Image, registry: RegistrySpec) -> dict[str, str]:
    host, repository = _split(image, registry)
    return {"registry": host, "repository": repository, "tag": pinned_tag(image)}


@dataclass(frozen=True)
class AuditLogSource:
    """Where Grafana reads the gateway's audit log: Elasticsearch URL, index prefix, the read-only user's Secret and
    the platform CA ConfigMap (key `ca.crt`), both in Grafana's namespace."""

    url: str
    index_prefix: str
    reader_secret: str
    ca_configmap: str


def kube_prometheus_stack_values(
    registry: RegistrySpec,
    retention_days: int,
    storage_size: str,
    storage_class: str | None,
    alertmanager_config: dict[str, Any],
    grafana_admin_secret: str,
    grafana_tls_secret: str | None,
    client_cert_secrets: list[str],
    images: Mapping[str, Image] = IMAGES,
    audit_log: AuditLogSource | None = None,
) -> dict[str, Any]:
    """kube-prometheus-stack 88.5.3: everything from the registry, retention and storage per profile, Grafana with
    its admin from an existing Secret, no anonymous access, TLS; selects monitors and rules in every namespace;
    node-exporter off (it needs the host's namespaces; GPU health comes from DCGM, volumes from the kubelet).
    With `audit_log`, Grafana gets a read-only Elasticsearch data source on the gateway's audit indices."""

    def img(key: str) -> dict[str, str]:
        return _registry_repo_tag(images[key], registry)

    storage: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage_size}},
    }
    if storage_class:
        storage["storageClassName"] = storage_class
    grafana_ini: dict[str, Any] = {
        "auth.anonymous": {"enabled": False},
        "auth": {"disable_login_form": False},
        "users": {"allow_sign_up": False},
        "analytics": {"reporting_enabled": False, "check_for_updates": False},
        "security": {"cookie_secure": True, "disable_gravatar": True},
    }
    grafana: dict[str, Any] = {
        "image": img("grafana"),
        "admin": {"existingSecret": grafana_admin_secret, "userKey": "admin-user", "passwordKey": "admin-password"},
        "grafana.ini": grafana_ini,
        "testFramework": {"enabled": False},
        "initChownData": {"enabled": False},
        "sidecar": {
            "image": img("grafana-sidecar"),
            "dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1", "searchNamespace": "ALL"},
        },
    }
    if grafana_tls_secret:
        grafana_ini["server"] = {
            "protocol": "https",
            "cert_file": "/etc/grafana/tls/tls.crt",
            "cert_key": "/etc/grafana/tls/tls.key",
        }
        grafana["extraSecretMounts"] = [
            {"name": "tls", "secretName": grafana_tls_secret, "mountPath": "/etc/grafana/tls", "readOnly": True}
        ]
        probe = {"httpGet": {"path": "/api/health", "port": 3000, "scheme": "HTTPS"}}
        grafana["readinessProbe"] = probe
        grafana["livenessProbe"] = {**probe, "initialDelaySeconds": 60, "timeoutSeconds": 30, "failureThreshold": 10}
        # The sidecar reloads dashboards through Grafana on localhost, which presents the service certificate.
        grafana["sidecar"]["skipTlsVerify"] = True
        grafana["sidecar"]["dashboards"]["reloadURL"] = (
            "https://localhost:3000/api/admin/provisioning/dashboards/reload"
        )
    if audit_log is not None:
        # Credentials and CA come from the environment (Grafana expands $VAR in provisioning files): the password
        # stays in its Secret, never in values or the rendered datasource ConfigMap.
        grafana["envValueFrom"] = {
            "AUDIT_READER_USER": {"secretKeyRef": {"name": audit_log.reader_secret, "key": "username"}},
            "AUDIT_READER_PASSWORD": {"secretKeyRef": {"name": audit_log.reader_secret, "key": "password"}},
            "PLATFORM_CA_PEM": {"configMapKeyRef": {"name": audit_log.ca_configmap, "key": "ca.crt"}},
        }
        grafana["additionalDataSources"] = [
            {
                "name": "Audit log",
                "uid": AUDIT_DATASOURCE_UID,
                "type": "elasticsearch",
                "access": "proxy",
                "url": audit_log.url,
                "basicAuth": True,
                "basicAuthUser": "$AUDIT_READER_USER",
                "editable": False,
                "jsonData": {
                    "index": f"{audit_log.index_prefix}-*",
                    "timeField": "@timestamp",
                    "tlsAuthWithCACert": True,
                },
                "secureJsonData": {"basicAuthPassword": "$AUDIT_READER_PASSWORD", "tlsCACert": "$PLATFORM_CA_PEM"},
            }
        ]
    return {
        "crds": {"enabled": True},
        "prometheusOperator": {
            "image": img("prometheus-operator"),
            "prometheusConfigReloader": {"image": img("prometheus-config-reloader")},
            "admissionWebhooks": {"patch": {"image": img("kube-webhook-certgen")}},
        },
        "prometheus": {
            "prometheusSpec": {
                "image": img("prometheus"),
                "retention": f"{retention_days}d",
                "storageSpec": {"volumeClaimTemplate": {"spec": storage}},
                "secrets": list(client_cert_secrets),
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "probeSelectorNilUsesHelmValues": False,
                "scrapeConfigSelectorNilUsesHelmValues": False,
            }
        },
        "alertmanager": {
            "config": alertmanager_config,
            "alertmanagerSpec": {
                "image": img("alertmanager"),
                "storage": {
                    "volumeClaimTemplate": {"spec": {**storage, "resources": {"requests": {"storage": "10Gi"}}}}
                },
            },
        },
        "grafana": grafana,
        "kube-state-metrics": {"image": img("kube-state-metrics")},
        "nodeExporter": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeProxy": {"enabled": False},
    }


def eck_operator_values(
    registry: RegistrySpec, managed_namespaces: list[str], images: Mapping[str, Image] = IMAGES
) -> dict[str, Any]:
    """ECK operator 3.5.0: manages only the logging namespace; restricted pod; the stack images are set on each
    Elasticsearch/Kibana object from the catalog."""
    image = images["eck-operator"]
    return {
        "installCRDs": True,
        "image": {"repository": _full(image, registry), "tag": pinned_tag(image)},
        "managedNamespaces": list(managed_namespaces),
        "podSecurityContext": RESTRICTED_POD,
        "securityContext": RESTRICTED_CONTAINER,
        "config": {"containerRegistry": registry.host},
    }


def fluent_bit_values(
    registry: RegistrySpec,
    elasticsearch_host: str,
    writer_secret: str,
    ca_configmap: str,
    gateway_namespace: str | None,
    extra_patterns: list[str],
    images: Mapping[str, Image] = IMAGES,
    service_monitor: bool = False,
) -> dict[str, Any]:
    """Fluent Bit chart 0.58.1: container logs and the gateway's audit log to Elasticsearch over verified TLS as a
    least-privilege user, every record through the PII redaction filter before it leaves the node. The node's log
    folder is mounted read-only; the pod is otherwise as locked down as reading root-owned logs allows. With
    `service_monitor` (the monitoring stack's CRDs present) Prometheus scrapes its metrics on port 2020."""
    from infra.observability.fluentbit import fluent_bit_values_fragment

    image = images["fluent-bit"]
    fragment = fluent_bit_values_fragment(list(extra_patterns))
    audit_path = f"/var/log/containers/*_{gateway_namespace}_envoy-*.log" if gateway_namespace else None
    inputs = [
        "[INPUT]\n    Name tail\n    Path /var/log/containers/*.log\n"
        + (f"    Exclude_Path {audit_path}\n" if audit_path else "")
        + "    multiline.parser docker, cri\n    Tag kube.*\n    Mem_Buf_Limit 5MB\n    Skip_Long_Lines On\n"
    ]
    if audit_path:
        inputs.append(
            f"[INPUT]\n    Name tail\n    Path {audit_path}\n    multiline.parser docker, cri\n    Tag audit.*\n"
            "    Mem_Buf_Limit 5MB\n    Skip_Long_Lines On\n"
        )
    audit_parser = (
        "[FILTER]\n    Name parser\n    Match audit.*\n    Key_Name log\n    Parser json\n    Reserve_Data On\n"
        if audit_path
        else ""
    )

    def output(match: str, prefix: str) -> str:
        return (
            f"[OUTPUT]\n    Name es\n    Match {match}\n    Host {elasticsearch_host}\n    Port 9200\n"
            f"    Logstash_Format On\n    Logstash_Prefix {prefix}\n    Suppress_Type_Name On\n    Replace_Dots On\n"
            "    tls On\n    tls.verify On\n    tls.ca_file /etc/platform-ca/ca.crt\n"
            "    HTTP_User ${ES_USER}\n    HTTP_Passwd ${ES_PASSWORD}\n    Retry_Limit False\n"
        )

    outputs = [output("kube.*", "privatellm-app")]
    if audit_path:
        outputs.append(output("audit.*", "privatellm-audit"))
    secret_env = [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": writer_secret, "key": key}}}
        for env, key in (("ES_USER", "username"), ("ES_PASSWORD", "password"))
    ]
    return {
        "image": {"repository": _full(image, registry), "tag": pinned_tag(image), "pullPolicy": "IfNotPresent"},
        "testFramework": {"enabled": False},
        "serviceMonitor": {"enabled": service_monitor},
        "podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        # Root to read the root-owned container logs; nothing else: no capabilities, read-only root filesystem.
        "securityContext": {
            "runAsUser": 0,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "env": secret_env,
        "daemonSetVolumes": [
            {"name": "varlog", "hostPath": {"path": "/var/log"}},
            {"name": "etcmachineid", "hostPath": {"path": "/etc/machine-id", "type": "File"}},
        ],
        "daemonSetVolumeMounts": [
            {"name": "varlog", "mountPath": "/var/log", "readOnly": True},
            {"name": "etcmachineid", "mountPath": "/etc/machine-id", "readOnly": True},
        ],
        "extraVolumes": [{"name": "platform-ca", "configMap": {"name": ca_configmap}}],
        "extraVolumeMounts": [{"name": "platform-ca", "mountPath": "/etc/platform-ca", "readOnly": True}],
        "luaScripts": fragment["luaScripts"],
        "config": {
            "inputs": "".join(inputs),
            "filters": audit_parser + fragment["config"]["filters"],
            "outputs": "".join(outputs),
        },
    }


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
