"""The one catalog of every image and chart the platform uses, pinned, rendered through the customer's registry.

An image is stored as its upstream reference and pinned tag (optional digest); it is always rendered as
`<registry host>/<project>/<upstream path>:<tag>[@sha256:…]`, so that nothing is pulled from the internet.
Chart repositories and versions live here too, and each chart's values come from one tested function below.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.vllm import VLLM_VERSION
from infra.config import (
    RegistrySpec,
)
from infra.inputs import MIB, InputError, read_yaml

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Image:
    upstream: str
    """Upstream repository including its registry, e.g. docker.io/vllm/vllm-openai."""
    tag: str
    digest: str | None = None

    def __post_init__(self) -> None:
        if self.tag == "latest" or not self.tag:
            raise ValueError(f"{self.upstream}: pin a release tag, never latest")
        if self.digest is not None and not DIGEST.fullmatch(self.digest):
            raise ValueError(f"{self.upstream}: digest must be sha256:<64 hex digits>")

    @property
    def path(self) -> str:
        """The repository path without the upstream registry host."""
        first, _, rest = self.upstream.partition("/")
        return rest if ("." in first or ":" in first) and rest else self.upstream

    def repository(self, registry: RegistrySpec, project: str | None = None) -> str:
        """The repository inside the customer's registry: `<project>/<upstream path>`."""
        return f"{project or registry.platform_project}/{self.path}"

    def full_name(self, registry: RegistrySpec, project: str | None = None) -> str:
        """`<registry host>/<project>/<upstream path>`: the reference without tag or digest."""
        return f"{registry.host}/{self.repository(registry, project)}"

    @property
    def pinned_tag(self) -> str:
        """The tag a chart should render: `tag@sha256:…` when the lock pins a digest (a valid reference either way)."""
        return f"{self.tag}@{self.digest}" if self.digest else self.tag

    def render(self, registry: RegistrySpec, project: str | None = None) -> str:
        """What the cluster pulls: `<registry host>/<project>/<upstream path>:<tag>[@sha256:…]`."""
        return f"{self.full_name(registry, project)}:{self.pinned_tag}"


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
    """(chart, repository URL or None): where the registry serves the charts (air_gapped or charts_from_registry),
    every chart comes from oci://<host>/<charts project>; otherwise from its upstream repository."""
    if registry is not None and registry.serves_charts:
        return f"oci://{registry.host}/{registry.charts_project}/{ref.name}", None
    return ref.chart(), ref.repo_url()


PRE_HARBOR_CHARTS = ("cert-manager", "trust-manager", "harbor")
"""Charts a managed Harbor's stack installs before Harbor answers: the PKI (Harbor serves a PKI certificate) and
Harbor itself. They cannot come from oci://<registry.host>/…"""


def bootstrap_charts_location(registry: RegistrySpec) -> str | None:
    """Where a managed Harbor's stack takes the `PRE_HARBOR_CHARTS` from: `registry.harbor.bootstrap_charts`, else
    oci://<bootstrap_registry>/<charts_project> where the registry serves the charts; None: their upstream
    repositories."""
    harbor = registry.harbor
    if harbor is None:
        return None
    if harbor.bootstrap_charts:
        return harbor.bootstrap_charts
    return f"oci://{harbor.bootstrap_registry}/{registry.charts_project}" if registry.serves_charts else None


def pre_harbor_chart_source(ref: ChartRef, registry: RegistrySpec) -> tuple[str, str | None]:
    """(chart, repository URL or None) of a chart installed before a managed Harbor exists (see
    `bootstrap_charts_location`); a registry the platform does not manage serves every chart (`chart_source`)."""
    if registry.harbor is None:
        return chart_source(ref, registry)
    location = bootstrap_charts_location(registry)
    if location is None:
        return ref.chart(), ref.repo_url()
    return f"{location}/{ref.name}", None


# Documentation of which catalog images each chart's values function can name (docs/architecture.md). Not used to
# list a stack's images: `infra.supply.inventory.stack_inventory` reads them from the render;
# tests/infra/supply/test_images_complete.py checks that every image a rendered chart names is declared here.
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


# --------------------------------------------------------------------------------------------------------------
# The lock file: digests the customer's registry serves, pinned per stack
# --------------------------------------------------------------------------------------------------------------


LOCK_COMMAND = "private-llm images lock"


def upstream_reference(image: Image) -> str:
    return f"{image.upstream}:{image.tag}"


class LockError(ValueError):
    """A lock file that cannot be used; the message names the file, the entry and the fix."""


def lock_path(project_dir: Path, stack: str) -> Path:
    """`<stackConfigDir>/Pulumi.<stack>.lock.yaml` (stackConfigDir from Pulumi.yaml, `stacks` by default)."""
    folder = "stacks"
    project_file = project_dir / "Pulumi.yaml"
    if project_file.is_file():
        document = read_yaml(project_file, "project file") or {}
        if isinstance(document, dict) and document.get("stackConfigDir"):
            folder = str(document["stackConfigDir"])
    return project_dir / folder / f"Pulumi.{stack}.lock.yaml"


def _stack_of(path: Path) -> str:
    name = path.name
    if name.startswith("Pulumi.") and name.endswith(".lock.yaml"):
        return name[len("Pulumi.") : -len(".lock.yaml")]
    return "<stack>"


def load_lock(path: Path) -> dict[str, str]:
    """Catalog key → digest. Every entry must name a catalog image, its current upstream `repo:tag` and a
    `sha256:` digest; all problems are reported at once."""
    relock = f"re-run `{LOCK_COMMAND} --stack {_stack_of(path)}`"
    try:
        document = read_yaml(path, "lock file", MIB)
    except InputError as exc:
        raise LockError(f"{exc}; {relock}") from None
    entries = document.get("images") if isinstance(document, dict) else None
    if entries is None:
        entries = {}
    if not isinstance(entries, dict):
        raise LockError(f"{path}: `images` must be a mapping of catalog key to {{reference, digest}}; {relock}")
    problems: list[str] = []
    digests: dict[str, str] = {}
    for key, entry in entries.items():
        where = f"images.{key}"
        image = IMAGES.get(str(key))
        if image is None:
            problems.append(f"{where}: not an image of the catalog (known: {', '.join(sorted(IMAGES))}); {relock}")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a mapping with `reference` and `digest`")
            continue
        digest, reference = entry.get("digest"), entry.get("reference")
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            problems.append(f"{where}.digest={digest!r} is not sha256:<64 lower-case hex digits>; {relock}")
        current = upstream_reference(image)
        if reference != current:
            problems.append(
                f"{where}.reference={reference!r} does not match the catalog's {current!r} (the tag changed since "
                f"the lock was written): {relock}"
            )
        if isinstance(digest, str) and DIGEST.fullmatch(digest) and reference == current:
            digests[str(key)] = digest
    if problems:
        raise LockError(f"{path} has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    return digests


def write_lock(path: Path, digests: Mapping[str, str]) -> None:
    """Write the lock file: each catalog key with its current upstream `repo:tag` and digest, sorted by key."""
    problems = [f"{key}: not an image of the catalog" for key in digests if key not in IMAGES]
    problems += [f"{key}: digest {d!r} is not sha256:<64 hex>" for key, d in digests.items() if not DIGEST.fullmatch(d)]
    if problems:
        raise LockError(f"{path}: not written: " + "; ".join(problems))
    document = {
        "images": {
            key: {"reference": upstream_reference(IMAGES[key]), "digest": digests[key]} for key in sorted(digests)
        }
    }
    header = (
        f"# Written by `{LOCK_COMMAND} --stack {_stack_of(path)}`: the digest of every image as the customer's\n"
        "# registry serves it. Re-run that command after changing an image tag or mirroring again.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False))


def apply_lock(images: Mapping[str, Image], lock: Mapping[str, str]) -> dict[str, Image]:
    """Copies of `images` with the lock's digests (keys absent from the lock are left as they are)."""
    return {
        key: dataclasses.replace(image, digest=lock[key]) if key in lock else image for key, image in images.items()
    }
