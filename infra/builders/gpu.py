"""GPU node pools and the NVIDIA GPU Operator: pool arguments, the operator's chart values, the build."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.gpu_pools import EksNodeGroup, GpuNodePool, GpuNodePoolArgs, Taint
from infra.builders.base import Site
from infra.catalog import (
    DEFAULT_DRIVER_VERSION,
    IMAGES,
    Image,
)
from infra.config import (
    POOL_LABEL,
    GpuPoolSpec,
    PlatformSpec,
    RegistrySpec,
)
from infra.errors import building
from infra.features import runs_gpu_operator


def pool_args(spec: PlatformSpec, pool: GpuPoolSpec) -> GpuNodePoolArgs:
    labels = dict(pool.labels)
    if pool.time_slicing is not None:
        labels["nvidia.com/device-plugin.config"] = pool.name
    if pool.mig.strategy == "single" and pool.mig.profile:
        labels["nvidia.com/mig.config"] = f"all-{pool.mig.profile}"
    taint = None
    if pool.tainted:
        taint = Taint(key=POOL_LABEL, value=pool.name, effect="NoSchedule")
    eks = None
    if pool.eks is not None:
        e = pool.eks
        eks = EksNodeGroup(
            cluster_name=e.cluster_name,
            instance_types=list(e.instance_types),
            subnet_ids=list(e.subnet_ids),
            node_role_arn=e.node_role_arn,
            kms_key_arn=e.kms_key_arn,
            min_size=e.min_size,
            max_size=e.max_size if e.max_size is not None else pool.nodes,
            capacity_type=e.capacity_type,
            capacity_reservation_id=e.capacity_reservation_id,
            ami_type=e.ami_type,
            root_volume_gib=e.root_volume_gib,
        )
    extra = [t.model_dump(exclude_none=True) for t in pool.tolerations] if pool.tolerations is not None else []
    return GpuNodePoolArgs(
        name=pool.name,
        instance=spec.name,
        gpu_type=pool.gpu,
        gpus_per_node=pool.gpus_per_node,
        nodes=pool.nodes,
        labels=labels,
        taint=taint,
        node_selector=pool.selector,
        gpu_resource=pool.gpu_resource,
        node_names=list(pool.onprem.node_names) if pool.onprem else [],
        keep_taints=[Taint(t.key, t.value, t.effect) for t in pool.onprem.keep_taints] if pool.onprem else [],
        eks=eks,
        extra_tolerations=extra,
    )


def _repo_of(image: Image, registry: RegistrySpec) -> str:
    """The repository *folder* of an image, for charts that take repository and image name separately."""
    return image.full_name(registry).rsplit("/", 1)[0]


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
            "version": version or ref.pinned_tag,
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
                "repository": nfd_image.full_name(registry),
                "tag": nfd_image.pinned_tag,
                "pullPolicy": "IfNotPresent",
            },
            "worker": {"tolerations": tolerations},
        },
    }


@dataclass(frozen=True)
class GpuStack:
    """The GPU node pools by name, and the GPU Operator's chart when the platform installs it."""

    pools: dict[str, GpuNodePool]
    operator: k8s.helm.v4.Chart | None

    @property
    def resources(self) -> list[pulumi.Resource]:
        """What a GPU workload waits for: every pool, and the operator that makes their GPUs schedulable."""
        return [*self.pools.values(), *([self.operator] if self.operator is not None else [])]


def build_gpu(site: Site, pulls: list[pulumi.Resource]) -> GpuStack:
    """GPU node pools and the NVIDIA GPU Operator (in its documented privileged namespace)."""
    spec = site.spec
    pools: dict[str, GpuNodePool] = {}
    aws_providers: dict[str, pulumi.ProviderResource] = {}
    for pool in spec.node_pools:
        pool_opts = site.opts
        if pool.eks is not None:
            region = pool.eks.region
            if region not in aws_providers:
                import pulumi_aws as aws  # only stacks with EKS pools load the AWS SDK (program start-up)

                aws_providers[region] = aws.Provider(f"{spec.name}-aws-{region}", region=region)
            pool_opts = pulumi.ResourceOptions.merge(
                site.opts, pulumi.ResourceOptions(providers={"aws": aws_providers[region]})
            )
        with building(f"gpu-pool-{pool.name}", "privatellm:gpu:GpuNodePool"):
            pools[pool.name] = GpuNodePool(f"gpu-pool-{pool.name}", pool_args(spec, pool), opts=pool_opts)
    if not runs_gpu_operator(spec):
        return GpuStack(pools, None)
    operator = spec.gpu_operator
    ns = operator.namespace  # created with the platform's namespaces (`support_namespace_args`)
    settings = [
        GpuPoolSettings(
            name=p.name,
            mig_strategy=p.mig.strategy,
            time_slicing_replicas=p.time_slicing.replicas if p.time_slicing else None,
            taint_key=POOL_LABEL if p.tainted else None,
        )
        for p in spec.node_pools
    ]
    values = gpu_operator_values(
        site.registry,
        install_driver=operator.driver == "operator",
        driver_version=operator.driver_version or DEFAULT_DRIVER_VERSION,
        pools=settings,
        images=site.images,
    )
    chart = site.install_chart("gpu-operator", ns, values, site.namespaces[ns], pools.values(), pulls)
    return GpuStack(pools, chart)
