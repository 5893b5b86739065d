"""What every area's builder shares: charts from the catalog, pull secrets in chart values, dependency options."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.namespaces import SecureNamespace
from components.registry import PULL_SECRET, HarborRegistry
from infra.catalog import (
    CHARTS,
    ChartRef,
    Image,
    chart_source,
)
from infra.config import (
    PlatformSpec,
    RegistrySpec,
    StackConfigError,
)
from infra.errors import building

CHART_TYPE = "kubernetes:helm.sh/v4:Chart"


def chart(
    name: str,
    ref: ChartRef,
    namespace: str,
    values: dict[str, object],
    opts: pulumi.ResourceOptions,
    registry: RegistrySpec | None = None,
) -> k8s.helm.v4.Chart:
    """A third-party system from its official chart, pinned in the catalog (its objects stay visible to policies);
    an air-gapped site takes it from its own registry."""
    source, repo = chart_source(ref, registry)
    return k8s.helm.v4.Chart(
        name,
        name=name,
        chart=source,
        version=ref.version,
        namespace=namespace,
        repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=repo) if repo else None,
        values=values,
        opts=opts,
    )


def pull_secret_name(spec: PlatformSpec) -> str | None:
    """The dockerconfigjson Secret every image-consuming namespace holds (Harbor robot, or the stack's own)."""
    if spec.registry is None:
        return None
    if spec.registry.harbor is not None:
        return PULL_SECRET
    return spec.registry.pull_secret_name


# Where each chart takes its imagePullSecrets (names of Secrets in the release namespace).
PULL_SECRET_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "lws": (("imagePullSecrets",),),
    "keda": (("imagePullSecrets",),),
    "cert-manager": (("global", "imagePullSecrets"),),
    "trust-manager": (("imagePullSecrets",),),
    "envoy-gateway": (("global", "imagePullSecrets"),),
    "ai-gateway": (("global", "imagePullSecrets"),),
    "kube-prometheus-stack": (("global", "imagePullSecrets"),),
    "eck-operator": (("imagePullSecrets",),),
    "fluent-bit": (("imagePullSecrets",),),
    "gpu-operator": tuple(
        (component, "imagePullSecrets")
        for component in (
            "operator",
            "validator",
            "driver",
            "toolkit",
            "devicePlugin",
            "gfd",
            "dcgmExporter",
            "migManager",
        )
    ),
}


def with_pull_secret(chart_name: str, values: dict[str, Any], secret: str | None) -> dict[str, Any]:
    """`values` with the pull secret at every place the chart takes one (`PULL_SECRET_PATHS`)."""
    if secret is None:
        return values
    for path in PULL_SECRET_PATHS.get(chart_name, ()):
        node = values
        for key in path[:-1]:
            node = node.setdefault(key, {})
        # The GPU Operator takes names; the other charts take LocalObjectReferences.
        node[path[-1]] = [secret] if chart_name == "gpu-operator" else [{"name": secret}]
    return values


def pull_dependencies(registry: HarborRegistry | None) -> list[pulumi.Resource]:
    """What a workload that pulls images waits for: the pull secrets a managed Harbor puts into its namespace."""
    return list(registry.pull_secrets) if registry is not None else []


def registry_repo_tag(image: Image, registry: RegistrySpec) -> dict[str, str]:
    """An image as the charts that take registry, repository and tag separately want it."""
    return {"registry": registry.host, "repository": image.repository(registry), "tag": image.pinned_tag}


Dependency = pulumi.Resource | Iterable[pulumi.Resource]


def after(opts: pulumi.ResourceOptions, *dependencies: Dependency) -> pulumi.ResourceOptions:
    """`opts` (the cluster provider) plus `depends_on` every resource given, singly or in collections."""
    depends: list[pulumi.Resource] = []
    for dependency in dependencies:
        if isinstance(dependency, pulumi.Resource):
            depends.append(dependency)
        else:
            depends.extend(dependency)
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=depends))


@dataclass(frozen=True)
class Site:
    """What every area's builder receives: the stack, the images it pins, its namespaces (built first) and the
    options every resource gets (the one cluster provider). What else a builder needs it takes as arguments, so
    that `build_platform` shows what depends on what."""

    spec: PlatformSpec
    opts: pulumi.ResourceOptions
    images: Mapping[str, Image]
    namespaces: Mapping[str, SecureNamespace]

    @property
    def registry(self) -> RegistrySpec:
        """The stack's registry; builders that pull images run only for stacks that have one."""
        if self.spec.registry is None:  # refused by `plan_models` before anything is registered
            raise StackConfigError(["registry is not set: every image is pulled through it"], pulumi.get_stack())
        return self.spec.registry

    @property
    def pull_secret(self) -> str | None:
        return pull_secret_name(self.spec)

    def after(self, *dependencies: Dependency) -> pulumi.ResourceOptions:
        return after(self.opts, *dependencies)

    def install_chart(
        self,
        name: str,
        namespace: str,
        values: dict[str, Any],
        *dependencies: Dependency,
    ) -> k8s.helm.v4.Chart:
        """The catalog's chart `name` into `namespace`, with the stack's pull secret in its values, after
        `dependencies` (the namespace among them where the chart needs it to exist)."""
        with building(name, CHART_TYPE):
            return chart(
                name,
                CHARTS[name],
                namespace,
                with_pull_secret(name, values, self.pull_secret),
                self.after(*dependencies),
                self.registry,
            )
