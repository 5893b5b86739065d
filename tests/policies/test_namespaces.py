"""Namespace rules: the default-deny stack policy and the Pod Security Admission labels."""

from __future__ import annotations

from typing import Any

from pulumi_policy import PolicyCustomTimeouts, PolicyResource, PolicyResourceOptions, StackValidationArgs

from policies.namespaces import NAMESPACE_RULES, STACK_RULES, is_default_deny
from policies.pack import policy_config
from tests.policies.fixtures import policy_resource, violations
from tests.policies.fixtures import stack_violations as quota_violations
from tests.policies.mutations import Mutation, StackMutation, is_default_deny_policy, is_kind

PSA_RULE = NAMESPACE_RULES[0]
DENY_RULE = STACK_RULES[0]


def namespace(name: str, version: str = "v1.31", level: str = "restricted") -> dict[str, Any]:
    labels = {}
    for mode in ("enforce", "audit", "warn"):
        labels[f"pod-security.kubernetes.io/{mode}"] = level
        labels[f"pod-security.kubernetes.io/{mode}-version"] = version
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def deny(ns: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny-all", "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], **spec},
    }


def resource(typ: str, props: dict[str, Any]) -> PolicyResource:
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    name = props["metadata"]["name"]
    return PolicyResource(typ, props, f"urn:pulumi:t::p::{typ}::{name}", name, opts, None, None, [], {})


NS = "kubernetes:core/v1:Namespace"
NP = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def stack_violations(resources: list[PolicyResource], exempt: dict[str, str] | None = None) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    args = StackValidationArgs(resources=resources, config=policy_config("1.31", exempt))
    DENY_RULE.validate(args, lambda message, urn=None: found.append((message, urn)))
    return found


def test_every_namespace_with_default_deny_passes() -> None:
    resources = [
        resource(NS, namespace("a")),
        resource(NP, deny("a")),
        resource(NS, namespace("b")),
        resource(NP, deny("b")),
    ]
    assert stack_violations(resources) == []


def test_namespace_without_default_deny_fails_and_names_it() -> None:
    resources = [resource(NS, namespace("a")), resource(NP, deny("a")), resource(NS, namespace("b"))]
    found = stack_violations(resources)
    assert len(found) == 1
    assert "namespace 'b' has no default-deny NetworkPolicy" in found[0][0]
    assert found[0][1].endswith("::b")


def test_policies_that_allow_something_are_not_default_deny() -> None:
    allow_all = deny("a", ingress=[{}])
    only_ingress = deny("a")
    only_ingress["spec"]["policyTypes"] = ["Ingress"]
    some_pods = deny("a")
    some_pods["spec"]["podSelector"] = {"matchLabels": {"app": "x"}}
    for policy in (allow_all, only_ingress, some_pods):
        assert not is_default_deny(policy)
        assert stack_violations([resource(NS, namespace("a")), resource(NP, policy)])
    assert is_default_deny(deny("a"))


def test_exempt_namespace_is_not_required_to_deny() -> None:
    assert stack_violations([resource(NS, namespace("gpu-operator"))], exempt={"gpu-operator": "privileged"}) == []


def test_unrelated_resources_are_ignored() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "a"}}
    assert stack_violations([resource("kubernetes:core/v1:ConfigMap", cm)]) == []


def test_restricted_pinned_namespace_passes() -> None:
    assert violations(PSA_RULE, NS, namespace("a"), "1.31") == []


def test_namespace_psa_violations() -> None:
    assert violations(PSA_RULE, NS, namespace("a", level="baseline"))
    # The version must be pinned to the target version, not "latest" or another minor.
    assert violations(PSA_RULE, NS, namespace("a", version="latest"))
    assert violations(PSA_RULE, NS, namespace("a", version="v1.31"), "1.33")
    missing = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}
    assert len(violations(PSA_RULE, NS, missing)) == 6


def test_namespace_psa_exemption() -> None:
    privileged = namespace("gpu-operator", level="privileged")
    assert violations(PSA_RULE, NS, privileged)
    assert violations(PSA_RULE, NS, privileged, exempt={"gpu-operator": "driver containers"}) == []


QUOTA_RULE = next(r for r in STACK_RULES if r.name == "namespace-quota")


def test_namespace_quota() -> None:
    def ns(name: str) -> PolicyResource:
        return resource(NS, {"metadata": {"name": name}})

    def in_namespace(kind: str, namespace: str) -> PolicyResource:
        return policy_resource(
            f"kubernetes:core/v1:{kind}", {"metadata": {"name": "x", "namespace": namespace}}, f"{namespace}-{kind}"
        )

    complete = [ns("a"), in_namespace("ResourceQuota", "a"), in_namespace("LimitRange", "a")]
    assert quota_violations(QUOTA_RULE, complete) == []
    found = quota_violations(QUOTA_RULE, [ns("a"), in_namespace("ResourceQuota", "a")])
    assert found == ["namespace 'a' has no LimitRange: its pods' consumption is unbounded"]
    found = quota_violations(QUOTA_RULE, [ns("b"), in_namespace("ResourceQuota", "a")])
    assert found == ["namespace 'b' has no ResourceQuota and no LimitRange: its pods' consumption is unbounded"]
    assert quota_violations(QUOTA_RULE, [ns("b")], exempt_namespaces={"b": "reason"}) == []


# ---------------------------------------------------------------------------------------------------------------
# Mutations: each a violation injected into every shipped stack's render (tests/stacks/test_mutations.py)
# ---------------------------------------------------------------------------------------------------------------

MUTATIONS: list[Mutation] = [
    Mutation(
        "namespace-pod-security",
        "enforce privileged",
        is_kind("Namespace"),
        lambda props: props["metadata"]["labels"].update({"pod-security.kubernetes.io/enforce": "privileged"}),
    ),
]

STACK_MUTATIONS: dict[str, StackMutation] = {
    "namespace-default-deny": is_default_deny_policy,
    "namespace-quota": lambda r: r.kind == "ResourceQuota",
}
