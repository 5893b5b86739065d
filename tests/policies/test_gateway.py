"""Gateway routes authenticated and rate-limited; Harbor projects scanned, signed and private."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import PolicyResource, StackValidationArgs

from policies.gateway import AI_GATEWAY_ROUTES, GATEWAY_STACK_RULES, HTTP_ROUTE
from policies.pack import policy_config
from tests.policies.fixtures import policy_resource as resource
from tests.policies.mutations import StackMutation

RULES = {r.name: r for r in GATEWAY_STACK_RULES}
NS = "llm-gateway"


def route(name: str, resource_type: str = HTTP_ROUTE, namespace: str = NS) -> PolicyResource:
    props = {"metadata": {"name": name, "namespace": namespace}, "spec": {"parentRefs": [{"name": "gw"}]}}
    return resource(resource_type, props, name)


def policy(kind: str, spec: dict[str, Any], target_kind: str, target: str, namespace: str = NS) -> PolicyResource:
    props = {
        "metadata": {"name": f"{target}-{kind.lower()}", "namespace": namespace},
        "spec": {**spec, "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": target_kind, "name": target}]},
    }
    return resource(f"kubernetes:gateway.envoyproxy.io/v1alpha1:{kind}", props, f"{target}-{kind}")


def found(rule: str, resources: list[PolicyResource], **config: Any) -> list[str]:
    out: list[str] = []
    RULES[rule].validate(
        StackValidationArgs(resources=resources, config=policy_config(**config)),
        lambda message, urn=None: out.append(message),
    )
    return out


AUTH = {"apiKeyAuth": {"credentialRefs": [{"name": "keys"}], "extractFrom": [{"headers": ["x-api-key"]}]}}
LIMIT = {"rateLimit": {"global": {"rules": [{"limit": {"requests": 10, "unit": "Minute"}}]}}}


@pytest.mark.parametrize("route_type", [HTTP_ROUTE, *AI_GATEWAY_ROUTES])
@pytest.mark.parametrize(
    ("rule", "kind", "spec"),
    [("gateway-authentication", "SecurityPolicy", AUTH), ("gateway-rate-limits", "BackendTrafficPolicy", LIMIT)],
)
def test_routes_need_their_policy(rule: str, kind: str, spec: dict[str, Any], route_type: str) -> None:
    r = route("models", route_type)
    assert found(rule, [r]) and "route llm-gateway/models" in found(rule, [r])[0]
    assert found(rule, [r, policy(kind, spec, "HTTPRoute", "models")]) == []
    # on the parent Gateway it covers every route
    assert found(rule, [r, policy(kind, spec, "Gateway", "gw")]) == []
    # a policy without the setting, on another route, or in another namespace does not count
    assert found(rule, [r, policy(kind, {}, "HTTPRoute", "models")])
    assert found(rule, [r, policy(kind, spec, "HTTPRoute", "other")])
    assert found(rule, [r, policy(kind, spec, "HTTPRoute", "models", namespace="elsewhere")])
    # documented exceptions
    assert found(rule, [r], exempt_namespaces={NS: "a lab gateway with no tenant data"}) == []


@pytest.mark.parametrize("auth", ["jwt", "oidc", "basicAuth", "extAuth"])
def test_every_authentication_kind_counts(auth: str) -> None:
    r = route("models")
    assert found("gateway-authentication", [r, policy("SecurityPolicy", {auth: {"x": 1}}, "HTTPRoute", "models")]) == []


def test_stack_without_routes_passes() -> None:
    assert found("gateway-authentication", []) == [] and found("gateway-rate-limits", []) == []


# ---------------------------------------------------------------------------------------------------------------
# Mutations: each a violation injected into every shipped stack's render (tests/stacks/test_mutations.py)
# ---------------------------------------------------------------------------------------------------------------

STACK_MUTATIONS: dict[str, StackMutation] = {
    "gateway-authentication": lambda r: r.kind == "SecurityPolicy",
    "gateway-rate-limits": lambda r: r.kind == "BackendTrafficPolicy",
}
