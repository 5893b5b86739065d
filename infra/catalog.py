"""The one catalog of every image and chart the platform uses, pinned, rendered through the customer's registry.

An image is stored as its upstream reference and pinned tag (optional digest); it is always rendered as
`<registry host>/<project>/<upstream path>:<tag>[@sha256:…]`, so that nothing is pulled from the internet.
Chart repositories and versions live here too, and each chart's values come from one tested function below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from components.vllm import VLLM_VERSION
from infra.config import PlatformSpec, RegistrySpec

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
    "node-feature-discovery": Image("registry.k8s.io/nfd/node-feature-discovery", "v0.19.0"),
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
}

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}


def _split(image: Image, registry: RegistrySpec) -> tuple[str, str]:
    """(registry host, repository path) of an image rendered through the customer's registry."""
    rendered = image.render(registry).split("@")[0].rsplit(":", 1)[0]
    host, _, repository = rendered.partition("/")
    return host, repository


def lws_values(registry: RegistrySpec) -> dict[str, Any]:
    """Values of the LeaderWorkerSet controller chart (kubernetes-sigs/lws, charts/lws/values.yaml)."""
    image = IMAGES["lws"]
    host, repository = _split(image, registry)
    return {
        "image": {"manager": {"repository": f"{host}/{repository}", "tag": image.tag, "pullPolicy": "IfNotPresent"}},
        "podSecurityContext": RESTRICTED_POD,
        "securityContext": RESTRICTED_CONTAINER,
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "enablePrometheus": False,
    }


def keda_values(registry: RegistrySpec) -> dict[str, Any]:
    """Values of the KEDA chart (kedacore/charts, keda/values.yaml): images through the registry, restricted pods."""
    images: dict[str, Any] = {}
    for key, name in (
        ("keda", "keda"),
        ("metricsApiServer", "keda-metrics-apiserver"),
        ("webhooks", "keda-admission-webhooks"),
    ):
        image = IMAGES[name]
        host, repository = _split(image, registry)
        images[key] = {"registry": host, "repository": repository, "tag": image.tag}
    images["pullPolicy"] = "IfNotPresent"
    components = ("operator", "metricServer", "webhooks")
    return {
        "image": images,
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
) -> dict[str, Any]:
    """Values of the NVIDIA GPU Operator chart (NVIDIA/gpu-operator v26.7.0, deployments/gpu-operator/values.yaml)."""

    def image(key: str, version: str | None = None) -> dict[str, Any]:
        ref = IMAGES[key]
        return {
            "repository": _repo_of(ref, registry),
            "image": ref.path.rsplit("/", 1)[-1],
            "version": version or ref.tag,
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
    nfd_image = IMAGES["node-feature-discovery"]
    host, nfd_repository = _split(nfd_image, registry)
    return {
        # The namespace is labelled by the platform (privileged, the documented exception).
        "psa": {"enabled": False},
        "cdi": {"enabled": True},
        "daemonsets": {"tolerations": tolerations, "priorityClassName": "system-node-critical"},
        "operator": image("gpu-operator"),
        "validator": image("gpu-operator"),
        "driver": {"enabled": install_driver, **image("nvidia-driver", driver_version)},
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
            "image": {"repository": f"{host}/{nfd_repository}", "tag": nfd_image.tag, "pullPolicy": "IfNotPresent"},
            "worker": {"tolerations": tolerations},
        },
    }


CHART_IMAGES: dict[str, tuple[str, ...]] = {
    "gpu-operator": (
        "gpu-operator",
        "nvidia-driver",
        "nvidia-container-toolkit",
        "nvidia-device-plugin",
        "dcgm-exporter",
        "mig-manager",
        "node-feature-discovery",
    ),
    "lws": ("lws",),
    "keda": ("keda", "keda-metrics-apiserver", "keda-admission-webhooks"),
}


def stack_images(spec: PlatformSpec, charts: list[str]) -> list[str]:
    """Catalog keys of every image a stack runs (its charts' images included), in a stable order."""
    keys: list[str] = []
    if spec.models:
        keys.append("vllm")
    for chart in charts:
        keys.extend(CHART_IMAGES.get(chart, ()))
    return list(dict.fromkeys(keys))
