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
from infra.config import RegistrySpec

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
}


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
