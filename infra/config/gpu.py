"""`node_pools` and `gpu_operator`: the GPU node pools (on-prem or EKS) and the NVIDIA GPU Operator."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from infra.config.types import DnsLabel, NamespaceName, StrictModel

POOL_LABEL = "privatellm.io/gpu-pool"


class TolerationSpec(StrictModel):
    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _node_name(value: str) -> str:
    if len(value) > 253 or not _NODE_NAME.fullmatch(value):
        raise ValueError("is not a Kubernetes node name (DNS subdomain: lower-case letters, digits, '-', '.')")
    return value


class TaintSpec(StrictModel):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class OnPremPoolSpec(StrictModel):
    """Existing nodes: listed by name (the platform labels and taints them) or found by labels they already carry."""

    node_names: list[Annotated[str, AfterValidator(_node_name)]] = Field(default_factory=list)
    node_labels: dict[str, str] | None = None
    keep_taints: list[TaintSpec] = Field(default_factory=list)
    """Taints the listed nodes already carry and must keep (node taints are one atomic list under server-side apply)."""

    @model_validator(mode="after")
    def _one_way(self) -> OnPremPoolSpec:
        if bool(self.node_names) == bool(self.node_labels):
            raise ValueError(
                "give node_names (nodes the platform labels and taints) or node_labels (labels your nodes already "
                "carry), exactly one"
            )
        if len(set(self.node_names)) != len(self.node_names):
            raise ValueError("node_names lists a node twice")
        return self


EksCapacityType = Literal["ON_DEMAND", "CAPACITY_BLOCK"]


class EksPoolSpec(StrictModel):
    """An EKS managed node group with the NVIDIA AL2023 AMI."""

    cluster_name: str
    region: str
    instance_types: Annotated[list[str], Field(min_length=1)]
    subnet_ids: Annotated[list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")]], Field(min_length=1)]
    node_role_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$")]
    kms_key_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/.+$")]
    min_size: Annotated[int, Field(ge=0)] = 0
    max_size: Annotated[int, Field(ge=1)] | None = None
    capacity_type: EksCapacityType = "ON_DEMAND"
    capacity_reservation_id: Annotated[str, Field(pattern=r"^cr-[0-9a-f]{8,17}$")] | None = None
    ami_type: Literal["AL2023_x86_64_NVIDIA", "AL2023_ARM_64_NVIDIA"] = "AL2023_x86_64_NVIDIA"
    root_volume_gib: Annotated[int, Field(ge=100, le=16384)] = 500
    model_bucket: str | None = None

    @model_validator(mode="after")
    def _reservation(self) -> EksPoolSpec:
        if self.capacity_type == "CAPACITY_BLOCK" and not self.capacity_reservation_id:
            raise ValueError("capacity_type CAPACITY_BLOCK needs capacity_reservation_id (cr-...)")
        if self.capacity_type == "ON_DEMAND" and self.capacity_reservation_id:
            raise ValueError("capacity_reservation_id only applies to capacity_type CAPACITY_BLOCK")
        return self


class MigSpec(StrictModel):
    """Multi-Instance GPU: `single` splits every GPU of the pool into one profile (e.g. 1g.10gb)."""

    strategy: Literal["none", "single", "mixed"] = "none"
    profile: str | None = None

    @model_validator(mode="after")
    def _profile(self) -> MigSpec:
        if self.strategy == "single" and not self.profile:
            raise ValueError("strategy single needs profile (e.g. 1g.10gb)")
        if self.strategy == "none" and self.profile:
            raise ValueError("profile needs strategy single or mixed")
        return self


class TimeSlicingSpec(StrictModel):
    """Oversubscribe each GPU `replicas` times. Memory and faults are not isolated between the sharing pods."""

    replicas: Annotated[int, Field(ge=2, le=64)]


class GpuPoolSpec(StrictModel):
    """A pool of identical GPU nodes. Pods land on it through its node selector and tolerations."""

    name: Annotated[DnsLabel, Field(max_length=40)]
    gpu: str
    gpus_per_node: Annotated[int, Field(ge=1, le=16)]
    nodes: Annotated[int, Field(ge=1)]
    backend: Literal["onprem", "eks"] = "onprem"
    onprem: OnPremPoolSpec | None = None
    eks: EksPoolSpec | None = None
    gpu_memory_gib: Annotated[float, Field(gt=0)] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[TolerationSpec] | None = None
    gpu_resource: str = "nvidia.com/gpu"
    mig: MigSpec = Field(default_factory=MigSpec)
    time_slicing: TimeSlicingSpec | None = None

    @model_validator(mode="after")
    def _backend(self) -> GpuPoolSpec:
        if self.backend == "eks" and self.eks is None:
            raise ValueError("backend eks needs an eks section (cluster_name, region, instance_types, ...)")
        if self.backend == "onprem" and self.eks is not None:
            raise ValueError("an eks section needs backend: eks")
        if self.backend == "eks" and self.onprem is not None:
            raise ValueError("an onprem section needs backend: onprem")
        if self.onprem and self.onprem.node_names and len(self.onprem.node_names) != self.nodes:
            raise ValueError(
                f"nodes={self.nodes} but onprem.node_names lists {len(self.onprem.node_names)} nodes; make them agree"
            )
        if self.eks:
            top = self.eks.max_size if self.eks.max_size is not None else self.nodes
            if not self.eks.min_size <= self.nodes <= top:
                raise ValueError(
                    f"nodes={self.nodes} must lie between eks.min_size={self.eks.min_size} and eks.max_size={top}"
                )
        if self.mig.strategy != "none" and self.time_slicing is not None:
            raise ValueError("use MIG or time-slicing on a pool, not both")
        return self

    @property
    def labels(self) -> dict[str, str]:
        """Labels the platform puts on the pool's nodes (on-prem node names, EKS node groups)."""
        return {POOL_LABEL: self.name}

    @property
    def selector(self) -> dict[str, str]:
        if self.node_selector is not None:
            return dict(self.node_selector)
        if self.onprem is not None and self.onprem.node_labels:
            return dict(self.onprem.node_labels)
        return {POOL_LABEL: self.name}

    @property
    def pool_tolerations(self) -> list[TolerationSpec]:
        if self.tolerations is not None:
            return list(self.tolerations)
        return [TolerationSpec(key=POOL_LABEL, operator="Equal", value=self.name, effect="NoSchedule")]

    @property
    def tainted(self) -> bool:
        """The platform taints the pool's nodes `privatellm.io/gpu-pool=<name>:NoSchedule` (the stack names neither
        tolerations nor a node selector of its own)."""
        return self.tolerations is None and self.node_selector is None

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def partitioned(self) -> bool:
        return self.mig.strategy != "none" or self.time_slicing is not None


class GpuOperatorSpec(StrictModel):
    """NVIDIA GPU Operator: driver (or a pre-installed one), toolkit, device plugin, GFD, DCGM exporter."""

    enabled: bool = True
    namespace: NamespaceName = "gpu-operator"
    driver: Literal["operator", "preinstalled"] = "operator"
    driver_version: Annotated[str, Field(pattern=r"^[0-9]{3}\.[0-9]+(\.[0-9]+)?$")] | None = None
    """Driver the operator installs (`operator`), or the version pre-installed on the nodes (`preinstalled`)."""
    node_os: Annotated[str, Field(pattern=r"^[a-z][a-z-]*[0-9]+(\.[0-9]+)*$")] | None = None
    """The GPU nodes' OS as the operator names driver image tags (`<os-release ID><VERSION_ID>`, e.g. ubuntu22.04,
    ubuntu24.04, rhel9.6): with `driver: operator` the nodes pull `driver:<driver_version>-<node_os>`, which the
    image inventory and mirror need to know."""

    @property
    def driver_branch(self) -> int | None:
        return int(self.driver_version.split(".")[0]) if self.driver_version else None
