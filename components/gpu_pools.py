"""GPU node pools: existing on-premises nodes or an AWS EKS managed node group, behind one scheduling contract.

`GpuNodePool` either
- patches existing nodes with server-side apply (`NodePatch`): the pool label (and, per pool, the device-plugin or
  MIG configuration label) and a NoSchedule taint. Server-side apply only owns the fields it sets: deleting the pool
  removes exactly those, never a label someone else added, and never a node. Node taints are an atomic list in the
  Kubernetes API, so the patch states the node's complete taint list: taints the node must keep are listed in
  `keep_taints`, and a conflict with another field manager fails the update instead of overwriting it; or
- creates an EKS managed node group (pulumi-aws, imported only for such pools) with the NVIDIA AL2023 AMI, a launch
  template that requires IMDSv2 (hop limit 1: pods cannot reach the node's credentials) and encrypts the root volume
  with the given KMS key, on-demand or capacity-block capacity.

Both expose `contract`: the node selector, tolerations, GPU resource name, GPU type, GPUs per node and node count
that inference components schedule against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s

from components.base import check_dns_label

EKS_EFFECT = {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}


@dataclass(frozen=True)
class Taint:
    key: str
    value: str | None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"

    def toleration(self) -> dict[str, str]:
        t = {"key": self.key, "operator": "Equal" if self.value is not None else "Exists", "effect": self.effect}
        if self.value is not None:
            t["value"] = self.value
        return t


@dataclass(frozen=True)
class SchedulingContract:
    """What a GPU workload needs to land on the pool."""

    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, str]]
    gpu_resource: str
    gpu_type: str
    gpus_per_node: int
    nodes: int


@dataclass(frozen=True)
class EksNodeGroup:
    cluster_name: str
    instance_types: Sequence[str]
    subnet_ids: Sequence[str]
    node_role_arn: str
    kms_key_arn: str
    min_size: int
    max_size: int
    capacity_type: Literal["ON_DEMAND", "CAPACITY_BLOCK"] = "ON_DEMAND"
    capacity_reservation_id: str | None = None
    ami_type: str = "AL2023_x86_64_NVIDIA"
    root_volume_gib: int = 500


@dataclass(frozen=True)
class GpuNodePoolArgs:
    name: str
    instance: str
    gpu_type: str
    gpus_per_node: int
    nodes: int
    labels: Mapping[str, str]
    taint: Taint | None
    node_selector: Mapping[str, str]
    gpu_resource: str = "nvidia.com/gpu"
    node_names: Sequence[str] = ()
    keep_taints: Sequence[Taint] = ()
    eks: EksNodeGroup | None = None
    extra_tolerations: Sequence[Mapping[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_dns_label("name", self.name, max_length=40)
        if self.gpus_per_node < 1 or self.nodes < 1:
            raise ValueError("gpus_per_node and nodes must be at least 1")
        if self.eks is not None and self.node_names:
            raise ValueError("an EKS pool creates its nodes; node_names only apply to existing on-prem nodes")
        if self.node_names and len(self.node_names) != self.nodes:
            raise ValueError(f"nodes={self.nodes} but {len(self.node_names)} node_names are listed")
        if self.eks is not None:
            e = self.eks
            if not e.min_size <= self.nodes <= e.max_size:
                raise ValueError(f"nodes={self.nodes} must lie between min_size={e.min_size} and max_size={e.max_size}")
            if e.capacity_type == "CAPACITY_BLOCK" and not e.capacity_reservation_id:
                raise ValueError("capacity_type CAPACITY_BLOCK needs capacity_reservation_id")
        if not self.node_selector:
            raise ValueError("node_selector is empty: GPU workloads must be pinned to the pool")


class GpuNodePool(pulumi.ComponentResource):
    """A GPU pool and its scheduling contract."""

    def __init__(self, name: str, args: GpuNodePoolArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("privatellm:gpu:GpuNodePool", name, None, opts)
        self.args = args
        tolerations = [args.taint.toleration()] if args.taint else []
        self.contract = SchedulingContract(
            node_selector=dict(args.node_selector),
            tolerations=[*tolerations, *args.extra_tolerations],
            gpu_resource=args.gpu_resource,
            gpu_type=args.gpu_type,
            gpus_per_node=args.gpus_per_node,
            nodes=args.nodes,
        )
        self.node_patches: list[k8s.core.v1.NodePatch] = []
        self.node_group: pulumi.CustomResource | None = None
        self.launch_template: pulumi.CustomResource | None = None
        if args.eks is not None:
            self._eks(name, args, args.eks)
        else:
            for node in args.node_names:
                self.node_patches.append(self._patch(name, node))
        self.register_outputs({"nodeSelector": dict(args.node_selector), "gpus": args.gpus_per_node * args.nodes})

    def _patch(self, name: str, node: str) -> k8s.core.v1.NodePatch:
        a = self.args
        taints = [*a.keep_taints, *([a.taint] if a.taint else [])]
        return k8s.core.v1.NodePatch(
            f"{name}-{node}",
            metadata=k8s.meta.v1.ObjectMetaPatchArgs(name=node, labels=dict(a.labels)),
            spec=k8s.core.v1.NodeSpecPatchArgs(
                taints=[k8s.core.v1.TaintPatchArgs(key=t.key, value=t.value, effect=t.effect) for t in taints]
            )
            if taints
            else None,
            # Never delete the node: deleting the patch only gives up the fields it owns.
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _eks(self, name: str, a: GpuNodePoolArgs, e: EksNodeGroup) -> None:
        import pulumi_aws as aws  # only stacks with EKS pools load the AWS SDK

        capacity_reservation = (
            aws.ec2.LaunchTemplateCapacityReservationSpecificationArgs(
                capacity_reservation_target=aws.ec2.LaunchTemplateCapacityReservationSpecificationCapacityReservationTargetArgs(
                    capacity_reservation_id=e.capacity_reservation_id
                )
            )
            if e.capacity_reservation_id
            else None
        )
        self.launch_template = aws.ec2.LaunchTemplate(
            f"{name}-launch-template",
            name=f"{a.instance}-{a.name}-gpu",
            description=f"private-llm GPU pool {a.name}: IMDSv2 only, encrypted root volume",
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=e.root_volume_gib,
                        volume_type="gp3",
                        encrypted="true",
                        kms_key_id=e.kms_key_arn,
                        delete_on_termination="true",
                    ),
                )
            ],
            instance_market_options=aws.ec2.LaunchTemplateInstanceMarketOptionsArgs(market_type="capacity-block")
            if e.capacity_type == "CAPACITY_BLOCK"
            else None,
            capacity_reservation_specification=capacity_reservation,
            tags={"privatellm.io/instance": a.instance, "privatellm.io/gpu-pool": a.name},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.node_group = aws.eks.NodeGroup(
            f"{name}-node-group",
            cluster_name=e.cluster_name,
            node_group_name=f"{a.instance}-{a.name}",
            node_role_arn=e.node_role_arn,
            subnet_ids=list(e.subnet_ids),
            instance_types=list(e.instance_types),
            ami_type=e.ami_type,
            capacity_type=e.capacity_type,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=e.min_size, desired_size=a.nodes, max_size=e.max_size
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=self.launch_template.id, version=self.launch_template.latest_version.apply(str)
            ),
            labels=dict(a.labels),
            taints=[aws.eks.NodeGroupTaintArgs(key=a.taint.key, value=a.taint.value, effect=EKS_EFFECT[a.taint.effect])]
            if a.taint
            else None,
            tags={"privatellm.io/instance": a.instance, "privatellm.io/gpu-pool": a.name},
            opts=pulumi.ResourceOptions(parent=self),
        )
