"""SecureNamespace and TenantRoles under mocks: assertions on the recorded resources."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from components.namespaces import SecureNamespace, SecureNamespaceArgs, TenantRoles, TenantRolesArgs
from infra.offline import Recording
from tests.conftest import run


def args(**kw: Any) -> SecureNamespaceArgs:
    base: dict[str, Any] = {
        "name": "tenant-retail",
        "kubernetes_version": "1.33",
        "instance": "bank",
        "purpose": "tenant:retail",
        "quota_hard": {"requests.cpu": "4", "pods": "10"},
        "limit_default_request": {"cpu": "100m", "memory": "128Mi"},
        "limit_default": {"cpu": "1", "memory": "1Gi"},
        "role_bindings": {"admin": ["retail-admins"], "member": ["retail-devs", "retail-ops"], "guest": []},
    }
    base.update(kw)
    return SecureNamespaceArgs(**base)


def record(a: SecureNamespaceArgs) -> Recording:
    return run(program=lambda: SecureNamespace("retail", a))


def test_namespace_is_labelled_for_pod_security_with_pinned_version() -> None:
    rec = record(args())
    ns = rec.one("Namespace", "tenant-retail").inputs
    labels = ns["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "v1.33"
    assert labels["app.kubernetes.io/part-of"] == "private-llm"
    assert labels["app.kubernetes.io/managed-by"] == "pulumi"
    assert labels["app.kubernetes.io/instance"] == "bank"


def test_every_object_is_namespaced_labelled_and_parented() -> None:
    rec = record(args())
    component = [r for r in rec.resources if r.type == "privatellm:baseline:SecureNamespace"]
    assert len(component) == 1
    for r in rec.kubernetes_objects():
        assert r.parent == component[0].urn
        assert r.metadata.get("name")
        if r.kind != "Namespace":
            assert r.namespace == "tenant-retail"
            # Created after the namespace exists.
            assert any(dep.endswith("::retail-namespace") for dep in r.options["dependsOn"])
        for key in ("name", "instance", "component", "part-of", "managed-by"):
            assert f"app.kubernetes.io/{key}" in r.metadata["labels"]


def test_default_deny_and_dns_allow() -> None:
    rec = record(args(dns_namespace="kube-system", dns_pod_labels={"k8s-app": "coredns"}))
    deny = rec.one("NetworkPolicy", "default-deny-all").inputs["spec"]
    assert deny["podSelector"] == {}
    assert sorted(deny["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny and "egress" not in deny
    dns = rec.one("NetworkPolicy", "allow-dns-egress").inputs["spec"]
    assert dns["policyTypes"] == ["Egress"]
    [rule] = dns["egress"]
    [peer] = rule["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "coredns"}
    assert sorted((p["protocol"], p["port"]) for p in rule["ports"]) == [("TCP", 53), ("UDP", 53)]


def test_quota_and_limit_range_from_args() -> None:
    rec = record(args(limit_max={"cpu": "8"}))
    assert rec.one("ResourceQuota", "namespace-quota").inputs["spec"]["hard"] == {"requests.cpu": "4", "pods": "10"}
    [item] = rec.one("LimitRange", "container-limits").inputs["spec"]["limits"]
    assert item == {
        "type": "Container",
        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
        "default": {"cpu": "1", "memory": "1Gi"},
        "max": {"cpu": "8"},
    }


def test_role_bindings_bind_groups_to_tenant_cluster_roles() -> None:
    rec = record(args())
    bindings = {r.object_name: r.inputs for r in rec.of_kind("RoleBinding")}
    # No binding for a role without groups.
    assert sorted(bindings) == ["tenant-admin", "tenant-member"]
    member = bindings["tenant-member"]
    assert member["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "bank-tenant-member",
    }
    assert [s["name"] for s in member["subjects"]] == ["retail-devs", "retail-ops"]
    assert all(s["kind"] == "Group" for s in member["subjects"])


def test_tenant_roles() -> None:
    rec = run(program=lambda: TenantRoles("roles", TenantRolesArgs(instance="bank")))
    roles = {r.object_name: r.inputs["rules"] for r in rec.of_kind("ClusterRole")}
    assert sorted(roles) == ["bank-tenant-admin", "bank-tenant-guest", "bank-tenant-member"]

    def grants(role: str, resource: str, verb: str) -> bool:
        return any(resource in rule["resources"] and verb in rule["verbs"] for rule in roles[role])

    assert grants("bank-tenant-admin", "secrets", "get")
    assert grants("bank-tenant-admin", "deployments", "delete")
    # Admins cannot remove the namespace's isolation or grant roles.
    assert not grants("bank-tenant-admin", "networkpolicies", "delete")
    assert not any("rolebindings" in rule["resources"] for rule in roles["bank-tenant-admin"])
    assert grants("bank-tenant-member", "deployments", "create")
    assert not any("secrets" in rule["resources"] for rule in roles["bank-tenant-member"])
    assert not any("pods/exec" in rule["resources"] for rule in roles["bank-tenant-member"])
    # Guests read, never write, and never see Secrets or logs.
    for rule in roles["bank-tenant-guest"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
        assert "secrets" not in rule["resources"] and "pods/log" not in rule["resources"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"name": "Tenant_Retail"}, "name='Tenant_Retail' is not a DNS-1123 label"),
        ({"kubernetes_version": "v1.31"}, "kubernetes_version='v1.31' must look like '1.31'"),
        ({"pod_security_level": "baseline"}, "give exception_reason"),
        ({"pod_security_level": "lenient"}, "pod_security_level='lenient' must be one of"),
        ({"quota_hard": {}}, "quota_hard is empty"),
        ({"limit_default": {"cpu": "1"}}, "limit_default must set memory"),
        ({"role_bindings": {"admin": [" "]}}, "contains an empty group name"),
    ],
)
def test_bad_args_fail_before_anything_is_registered(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        args(**kw)


def test_documented_exception_is_visible_on_the_namespace() -> None:
    rec = record(args(pod_security_level="privileged", exception_reason="NVIDIA driver containers need the host"))
    ns = rec.one("Namespace", "tenant-retail").inputs
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    # Audit and warn stay at restricted so that every deviation is still reported.
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == "restricted"
    assert ns["metadata"]["annotations"]["privatellm.io/pod-security-exception"].startswith("NVIDIA")


def test_provider_comes_from_opts() -> None:
    def program() -> None:
        import pulumi_kubernetes as k8s

        provider = k8s.Provider("site", kubeconfig="/etc/site/kubeconfig")
        SecureNamespace("retail", args(), opts=pulumi.ResourceOptions(providers={"kubernetes": provider}))

    rec = run(program=program)
    providers = [r for r in rec.resources if r.type == "pulumi:providers:kubernetes"]
    assert [p.name for p in providers] == ["site"]
    assert all(r.provider == providers[0].urn for r in rec.kubernetes_objects())
