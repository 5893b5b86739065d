"""Secure namespaces: Pod Security Admission labels, default-deny network policy, quotas and tenant RBAC.

`SecureNamespace` creates, for one namespace:
- the Namespace, labelled for Pod Security Admission (enforce/audit/warn at the given level, versions pinned to the
  target Kubernetes minor so that a cluster upgrade never silently changes what is enforced);
- a NetworkPolicy that denies all ingress and egress, and one that allows DNS to the cluster's resolver only
  (every later component adds its own explicit allows);
- a ResourceQuota and a LimitRange (a container that states nothing still gets requests and limits);
- RoleBindings of directory groups to the tenant ClusterRoles of `TenantRoles`.

`TenantRoles` creates the three cluster-wide role definitions (admin, member, guest) that RoleBindings in tenant
namespaces refer to; a RoleBinding to a ClusterRole grants its rules inside that one namespace only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.base import check_dns_label
from components.labels import standard_labels

PSA_LEVELS = ("restricted", "baseline", "privileged")
_VERSION = re.compile(r"^1\.\d+$")
ALL_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
READ_VERBS = ["get", "list", "watch"]
WRITE_VERBS = ["create", "update", "patch"]


@dataclass(frozen=True)
class SecureNamespaceArgs:
    """What one secure namespace needs. Validated when the component is constructed."""

    name: str
    kubernetes_version: str
    instance: str
    purpose: str
    quota_hard: Mapping[str, str]
    limit_default_request: Mapping[str, str]
    limit_default: Mapping[str, str]
    limit_max: Mapping[str, str] = field(default_factory=dict)
    dns_namespace: str = "kube-system"
    dns_pod_labels: Mapping[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    pod_security_level: str = "restricted"
    exception_reason: str | None = None
    role_bindings: Mapping[str, Sequence[str]] = field(default_factory=dict)
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    # Controllers (operators, webhooks) talk to the API server and among themselves: explicit allows for that.
    api_server_cidrs: Sequence[str] = ()
    api_server_ports: Sequence[int] = (443, 6443)
    webhook_ports: Sequence[int] = ()
    allow_within_namespace: bool = False
    egress_to_namespaces: Mapping[str, Sequence[int]] = field(default_factory=dict)
    ingress_from_namespaces: Mapping[str, Sequence[int]] = field(default_factory=dict)
    ingress_from_anywhere_ports: Sequence[int] = ()
    egress_cidrs: Sequence[str] = ()
    egress_ports: Sequence[int] = (443,)

    def __post_init__(self) -> None:
        check_dns_label("name", self.name)
        check_dns_label("instance", self.instance)
        check_dns_label("dns_namespace", self.dns_namespace)
        if not _VERSION.fullmatch(self.kubernetes_version):
            raise ValueError(f"kubernetes_version={self.kubernetes_version!r} must look like '1.31'")
        if self.pod_security_level not in PSA_LEVELS:
            raise ValueError(f"pod_security_level={self.pod_security_level!r} must be one of {', '.join(PSA_LEVELS)}")
        if self.pod_security_level != "restricted" and not (self.exception_reason or "").strip():
            raise ValueError(
                f"pod_security_level={self.pod_security_level!r} is an exception to the restricted baseline; "
                "give exception_reason so that the policy pack and the auditor can see why"
            )
        if not self.quota_hard:
            raise ValueError("quota_hard is empty: every namespace gets a ResourceQuota")
        for what, limits in (
            ("limit_default_request", self.limit_default_request),
            ("limit_default", self.limit_default),
        ):
            missing = {"cpu", "memory"} - set(limits)
            if missing:
                raise ValueError(f"{what} must set {', '.join(sorted(missing))}")
        if not self.dns_pod_labels:
            raise ValueError("dns_pod_labels is empty: the DNS allow rule must select the resolver pods")
        for role, groups in self.role_bindings.items():
            check_dns_label("role_bindings key", role)
            if any(not g.strip() for g in groups):
                raise ValueError(f"role_bindings[{role!r}] contains an empty group name")


class SecureNamespace(pulumi.ComponentResource):
    """A namespace with the platform's security baseline applied."""

    namespace_name: str

    def __init__(self, name: str, args: SecureNamespaceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("privatellm:baseline:SecureNamespace", name, None, opts)
        self.namespace_name = args.name
        child = pulumi.ResourceOptions(parent=self)
        version = f"v{args.kubernetes_version}"
        level = args.pod_security_level

        def labels(component: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
            return standard_labels(
                name=args.name,
                instance=args.instance,
                component=component,
                extra={**args.extra_labels, **(extra or {})},
            )

        annotations = {"privatellm.io/purpose": args.purpose}
        if args.exception_reason:
            annotations["privatellm.io/pod-security-exception"] = args.exception_reason
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.name,
                labels=labels(
                    "namespace",
                    {
                        "pod-security.kubernetes.io/enforce": level,
                        "pod-security.kubernetes.io/enforce-version": version,
                        "pod-security.kubernetes.io/audit": "restricted",
                        "pod-security.kubernetes.io/audit-version": version,
                        "pod-security.kubernetes.io/warn": "restricted",
                        "pod-security.kubernetes.io/warn-version": version,
                    },
                ),
                annotations=annotations,
            ),
            opts=child,
        )
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])

        def meta(object_name: str, component: str) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=object_name, namespace=args.name, labels=labels(component))

        self.default_deny = k8s.networking.v1.NetworkPolicy(
            f"{name}-default-deny",
            metadata=meta("default-deny-all", "network-policy"),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(),
                policy_types=["Ingress", "Egress"],
            ),
            opts=in_ns,
        )
        self.allow_dns = k8s.networking.v1.NetworkPolicy(
            f"{name}-allow-dns",
            metadata=meta("allow-dns-egress", "network-policy"),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(),
                policy_types=["Egress"],
                egress=[
                    k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                        to=[
                            k8s.networking.v1.NetworkPolicyPeerArgs(
                                namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                                    match_labels={"kubernetes.io/metadata.name": args.dns_namespace}
                                ),
                                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=dict(args.dns_pod_labels)),
                            )
                        ],
                        ports=[
                            k8s.networking.v1.NetworkPolicyPortArgs(protocol="UDP", port=53),
                            k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=53),
                        ],
                    )
                ],
            ),
            opts=in_ns,
        )
        self.allows = self._allows(name, args, meta, in_ns)
        self.quota = k8s.core.v1.ResourceQuota(
            f"{name}-quota",
            metadata=meta("namespace-quota", "quota"),
            spec=k8s.core.v1.ResourceQuotaSpecArgs(hard=dict(args.quota_hard)),
            opts=in_ns,
        )
        container_limits = k8s.core.v1.LimitRangeItemArgs(
            type="Container",
            default_request=dict(args.limit_default_request),
            default=dict(args.limit_default),
            max=dict(args.limit_max) or None,
        )
        self.limit_range = k8s.core.v1.LimitRange(
            f"{name}-limits",
            metadata=meta("container-limits", "quota"),
            spec=k8s.core.v1.LimitRangeSpecArgs(limits=[container_limits]),
            opts=in_ns,
        )
        self.role_bindings: list[k8s.rbac.v1.RoleBinding] = []
        for role, groups in args.role_bindings.items():
            if not groups:
                continue
            self.role_bindings.append(
                k8s.rbac.v1.RoleBinding(
                    f"{name}-{role}",
                    metadata=meta(f"tenant-{role}", "rbac"),
                    role_ref=k8s.rbac.v1.RoleRefArgs(
                        api_group="rbac.authorization.k8s.io",
                        kind="ClusterRole",
                        name=tenant_role_name(args.instance, role),
                    ),
                    subjects=[
                        k8s.rbac.v1.SubjectArgs(kind="Group", api_group="rbac.authorization.k8s.io", name=group)
                        for group in groups
                    ],
                    opts=in_ns,
                )
            )
        self.register_outputs({"namespace": args.name})

    def _allows(
        self, name: str, args: SecureNamespaceArgs, meta: Any, opts: pulumi.ResourceOptions
    ) -> list[k8s.networking.v1.NetworkPolicy]:
        """Explicit allows on top of default-deny, for namespaces that run controllers."""
        policies = []
        all_pods = k8s.meta.v1.LabelSelectorArgs()
        if args.api_server_cidrs:
            api_peers = [
                k8s.networking.v1.NetworkPolicyPeerArgs(ip_block=k8s.networking.v1.IPBlockArgs(cidr=c))
                for c in args.api_server_cidrs
            ]
            ingress = (
                [
                    k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                        from_=api_peers,
                        ports=[
                            k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=p) for p in args.webhook_ports
                        ],
                    )
                ]
                if args.webhook_ports
                else None
            )
            policies.append(
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-allow-api-server",
                    metadata=meta("allow-api-server", "network-policy"),
                    spec=k8s.networking.v1.NetworkPolicySpecArgs(
                        pod_selector=all_pods,
                        policy_types=["Egress", "Ingress"] if ingress else ["Egress"],
                        egress=[
                            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                                to=api_peers,
                                ports=[
                                    k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=p)
                                    for p in args.api_server_ports
                                ],
                            )
                        ],
                        ingress=ingress,
                    ),
                    opts=opts,
                )
            )
        if args.allow_within_namespace:
            same = [k8s.networking.v1.NetworkPolicyPeerArgs(pod_selector=all_pods)]
            policies.append(
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-allow-same-namespace",
                    metadata=meta("allow-same-namespace", "network-policy"),
                    spec=k8s.networking.v1.NetworkPolicySpecArgs(
                        pod_selector=all_pods,
                        policy_types=["Ingress", "Egress"],
                        ingress=[k8s.networking.v1.NetworkPolicyIngressRuleArgs(from_=same)],
                        egress=[k8s.networking.v1.NetworkPolicyEgressRuleArgs(to=same)],
                    ),
                    opts=opts,
                )
            )
        if args.ingress_from_anywhere_ports:
            policies.append(
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-allow-service-ingress",
                    metadata=meta("allow-service-ingress", "network-policy"),
                    spec=k8s.networking.v1.NetworkPolicySpecArgs(
                        pod_selector=all_pods,
                        policy_types=["Ingress"],
                        ingress=[
                            k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                                ports=[
                                    k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=p)
                                    for p in args.ingress_from_anywhere_ports
                                ]
                            )
                        ],
                    ),
                    opts=opts,
                )
            )
        if args.egress_cidrs:
            policies.append(
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-allow-backends",
                    metadata=meta("allow-egress-to-backends", "network-policy"),
                    spec=k8s.networking.v1.NetworkPolicySpecArgs(
                        pod_selector=all_pods,
                        policy_types=["Egress"],
                        egress=[
                            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                                to=[
                                    k8s.networking.v1.NetworkPolicyPeerArgs(
                                        ip_block=k8s.networking.v1.IPBlockArgs(cidr=c)
                                    )
                                    for c in args.egress_cidrs
                                ],
                                ports=[
                                    k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=p)
                                    for p in args.egress_ports
                                ],
                            )
                        ],
                    ),
                    opts=opts,
                )
            )
        for source, ports in sorted(args.ingress_from_namespaces.items()):
            policies.append(
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-allow-from-{source}",
                    metadata=meta(f"allow-ingress-from-{source}", "network-policy"),
                    spec=k8s.networking.v1.NetworkPolicySpecArgs(
                        pod_selector=all_pods,
                        policy_types=["Ingress"],
                        ingress=[
                            k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                                from_=[_namespace_peer(source)],
                                ports=[k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=p) for p in ports],
                            )
                        ],
                    ),
                    opts=opts,
                )
            )
        for target, ports in sorted(args.egress_to_namespaces.items()):
            policies.append(
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-allow-to-{target}",
                    metadata=meta(f"allow-egress-to-{target}", "network-policy"),
                    spec=k8s.networking.v1.NetworkPolicySpecArgs(
                        pod_selector=all_pods,
                        policy_types=["Egress"],
                        egress=[
                            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                                to=[_namespace_peer(target)],
                                ports=[k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=p) for p in ports],
                            )
                        ],
                    ),
                    opts=opts,
                )
            )
        return policies


def _namespace_peer(namespace: str) -> k8s.networking.v1.NetworkPolicyPeerArgs:
    return k8s.networking.v1.NetworkPolicyPeerArgs(
        namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": namespace})
    )


def tenant_role_name(instance: str, role: str) -> str:
    """Name of the ClusterRole that `TenantRoles` creates for `role`."""
    return f"{instance}-tenant-{role}"


def _rule(groups: Sequence[str], resources: Sequence[str], verbs: Sequence[str]) -> k8s.rbac.v1.PolicyRuleArgs:
    return k8s.rbac.v1.PolicyRuleArgs(api_groups=list(groups), resources=list(resources), verbs=list(verbs))


def tenant_role_rules() -> dict[str, list[k8s.rbac.v1.PolicyRuleArgs]]:
    """The rules of each tenant role, bound per namespace.

    - admin: manages workloads, config, Secrets and volumes of the tenant namespace; may exec into pods. It can read but
      not change NetworkPolicies, quotas and limits, and cannot grant roles (no privilege escalation past the baseline).
    - member: deploys and reads workloads, config and volumes; no Secrets, no exec, no deleting volumes.
    - guest: reads workload status and configuration; no Secrets, no logs (logs may hold request data), no exec.
    """
    workloads = ["deployments", "deployments/scale", "statefulsets", "statefulsets/scale", "replicasets"]
    status_read = ["pods", "services", "endpoints", "events", "resourcequotas", "limitranges"]
    return {
        "admin": [
            _rule(
                [""],
                ["pods", "services", "configmaps", "secrets", "persistentvolumeclaims", "serviceaccounts"],
                ALL_VERBS,
            ),
            _rule([""], ["pods/log", "endpoints", "events", "resourcequotas", "limitranges"], READ_VERBS),
            _rule([""], ["pods/exec", "pods/portforward"], ["get", "create"]),
            _rule(["apps"], workloads, ALL_VERBS),
            _rule(["batch"], ["jobs", "cronjobs"], ALL_VERBS),
            _rule(["autoscaling"], ["horizontalpodautoscalers"], ALL_VERBS),
            _rule(["policy"], ["poddisruptionbudgets"], ALL_VERBS),
            _rule(["networking.k8s.io"], ["networkpolicies"], READ_VERBS),
        ],
        "member": [
            _rule([""], [*status_read, "pods/log", "configmaps", "persistentvolumeclaims"], READ_VERBS),
            _rule([""], ["configmaps", "services", "persistentvolumeclaims"], WRITE_VERBS),
            _rule([""], ["pods"], ["delete"]),
            _rule(["apps"], workloads, [*READ_VERBS, *WRITE_VERBS, "delete"]),
            _rule(["batch"], ["jobs", "cronjobs"], [*READ_VERBS, *WRITE_VERBS, "delete"]),
            _rule(["autoscaling"], ["horizontalpodautoscalers"], [*READ_VERBS, *WRITE_VERBS]),
        ],
        "guest": [
            _rule([""], [*status_read, "configmaps", "persistentvolumeclaims"], READ_VERBS),
            _rule(["apps"], ["deployments", "statefulsets", "replicasets"], READ_VERBS),
            _rule(["batch"], ["jobs", "cronjobs"], READ_VERBS),
        ],
    }


@dataclass(frozen=True)
class TenantRolesArgs:
    instance: str

    def __post_init__(self) -> None:
        check_dns_label("instance", self.instance)


class TenantRoles(pulumi.ComponentResource):
    """The admin, member and guest ClusterRoles that tenant RoleBindings refer to."""

    def __init__(self, name: str, args: TenantRolesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("privatellm:baseline:TenantRoles", name, None, opts)
        self.roles: dict[str, k8s.rbac.v1.ClusterRole] = {}
        for role, rules in tenant_role_rules().items():
            role_name = tenant_role_name(args.instance, role)
            self.roles[role] = k8s.rbac.v1.ClusterRole(
                f"{name}-{role}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=role_name,
                    labels=standard_labels(name=role_name, instance=args.instance, component="rbac"),
                ),
                rules=rules,
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"roles": {role: tenant_role_name(args.instance, role) for role in self.roles}})
