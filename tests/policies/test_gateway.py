"""Gateway routes authenticated and rate-limited; Harbor projects scanned, signed and private."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import PolicyResource, StackValidationArgs

from infra.offline import RecordedResource, Recording
from policies.gateway import AI_GATEWAY_ROUTES, GATEWAY_RULES, GATEWAY_STACK_RULES, HTTP_ROUTE
from policies.pack import policy_config
from tests.policies.fixtures import in_the_pack_with_report_metadata, violations
from tests.policies.fixtures import policy_resource as resource
from tests.policies.mutations import Mutation, StackMutation, is_kind, recorded

RULES = {r.name: r for r in GATEWAY_STACK_RULES}
RESOURCE_RULES = {r.name: r for r in GATEWAY_RULES}
AI_ROUTE = AI_GATEWAY_ROUTES[0]
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


# ---------------------------------------------------------------------------------------------------------- revisions


def model_rule(model: str, refs: list[dict[str, Any]], *extra_headers: dict[str, str]) -> dict[str, Any]:
    headers = [{"type": "Exact", "name": "x-ai-eg-model", "value": model}, *extra_headers]
    return {"name": model, "matches": [{"headers": headers}], "backendRefs": refs}


def ai_route(*rules: dict[str, Any], name: str = "gw-models") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS}, "spec": {"rules": list(rules)}}


PIN = {"type": "Exact", "name": "x-privatellm-revision", "value": "r2"}


@pytest.mark.parametrize(
    ("refs", "declared", "expected"),
    [
        ([{"name": "chat", "weight": 90}, {"name": "chat-r2", "weight": 10}], None, None),
        ([{"name": "chat", "weight": 90}, {"name": "chat-r2", "weight": 10}], {"chat": 90, "chat-r2": 10}, None),
        ([{"name": "chat", "weight": 100}, {"name": "chat-r2", "weight": 0}], None, None),
        ([{"name": "chat", "weight": 90}, {"name": "chat-r2", "weight": 20}], None, "add up to 110, not 100"),
        ([{"name": "chat", "weight": 9.5}, {"name": "chat-r2", "weight": 90.5}], None, "must be whole percents"),
        (
            [{"name": "a", "weight": 50}, {"name": "b", "weight": 30}, {"name": "c", "weight": 20}],
            None,
            "3 revisions take traffic (a, b, c); at most two",
        ),
        # the route splits as it should by its own numbers, but gives the canary more than the stack granted
        (
            [{"name": "chat", "weight": 70}, {"name": "chat-r2", "weight": 30}],
            {"chat": 90, "chat-r2": 10},
            "the stack file states {'chat': 90, 'chat-r2': 10}",
        ),
        # a backend the stack does not know
        (
            [{"name": "chat", "weight": 90}, {"name": "other", "weight": 10}],
            {"chat": 90, "chat-r2": 10},
            "the stack file states",
        ),
    ],
)
def test_revision_weights(refs: list[dict[str, Any]], declared: dict[str, int] | None, expected: str | None) -> None:
    config = policy_config(revision_weights={"chat": declared} if declared else None)
    found = violations(RESOURCE_RULES["revision-weights"], AI_ROUTE, ai_route(model_rule("chat", refs)), config=config)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0] and "model 'chat'" in found[0]


def test_pin_and_unweighted_rules_are_not_weight_splits() -> None:
    """A pin or cohort rule (more header matches) sends to one revision; a model without revisions has no weights."""
    route = ai_route(
        model_rule("chat", [{"name": "chat", "weight": 90}, {"name": "chat-r2", "weight": 10}]),
        model_rule("chat", [{"name": "chat-r2"}], PIN),
        model_rule("chat", [{"name": "chat-r2", "weight": 5}], PIN),
        model_rule("other", [{"name": "other"}]),
    )
    config = policy_config(revision_weights={"chat": {"chat": 90, "chat-r2": 10}})
    assert violations(RESOURCE_RULES["revision-weights"], AI_ROUTE, route, config=config) == []


def test_revision_rules_are_in_the_pack() -> None:
    in_the_pack_with_report_metadata(GATEWAY_RULES)
    assert violations(RESOURCE_RULES["revision-weights"], AI_ROUTE, {}) == []
    partial = {"spec": {"rules": [None, {"matches": None}]}}
    assert violations(RESOURCE_RULES["revision-weights"], AI_ROUTE, partial) == []


def hashing(target: str, lb: str = "ConsistentHash") -> PolicyResource:
    spec = {"loadBalancer": {"type": lb, "consistentHash": {"type": "SourceIP"}}}
    return policy("BackendTrafficPolicy", spec, "HTTPRoute", target)


def weighted_route(name: str = "gw-models") -> PolicyResource:
    rule = model_rule("chat", [{"name": "chat", "weight": 90}, {"name": "chat-r2", "weight": 10}])
    return resource(AI_ROUTE, ai_route(rule, name=name), name)


def test_no_consistent_hash_on_weighted_routes() -> None:
    rule = "no-hash-lb-on-weighted-routes"
    unweighted = resource(AI_ROUTE, ai_route(model_rule("other", [{"name": "other"}]), name="plain"), "plain")
    found_on = found(rule, [weighted_route(), hashing("gw-models")])
    assert len(found_on) == 1 and "whose revision weights consistent hashing would ignore" in found_on[0]
    assert found(rule, [weighted_route(), hashing("gw-models", lb="RoundRobin")]) == []
    assert found(rule, [weighted_route(), unweighted, hashing("plain")]) == []
    assert found(rule, [weighted_route(), policy("BackendTrafficPolicy", {}, "HTTPRoute", "gw-models")]) == []


# ---------------------------------------------------------------------------------------------------------------
# Mutations: each a violation injected into every shipped stack's render (tests/stacks/test_mutations.py)
# ---------------------------------------------------------------------------------------------------------------

STACK_MUTATIONS: dict[str, StackMutation] = {
    "gateway-authentication": lambda r: r.kind == "SecurityPolicy",
    "gateway-rate-limits": lambda r: r.kind == "BackendTrafficPolicy",
}

MUTATIONS: list[Mutation] = [
    Mutation(
        "revision-weights",
        "canary weight raised in the route only",
        lambda r: (
            is_kind("AIGatewayRoute")(r)
            and any("weight" in ref for rule in r.inputs["spec"]["rules"] for ref in rule["backendRefs"])
        ),
        lambda props: next(
            rule for rule in props["spec"]["rules"] if any("weight" in ref for ref in rule["backendRefs"])
        )["backendRefs"][-1].update(weight=40),
    ),
]


def hash_on_weighted_route(recording: Recording) -> RecordedResource | None:
    """A consistent-hash BackendTrafficPolicy on the HTTPRoute AI Gateway generates for a weighted model route."""
    route = next(
        (
            r
            for r in recording.resources
            if is_kind("AIGatewayRoute")(r)
            and any("weight" in ref for rule in r.inputs["spec"]["rules"] for ref in rule["backendRefs"])
        ),
        None,
    )
    if route is None:
        return None
    meta = route.inputs["metadata"]
    return recorded(
        recording.stack,
        "kubernetes:gateway.envoyproxy.io/v1alpha1:BackendTrafficPolicy",
        "sticky",
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "BackendTrafficPolicy",
            "metadata": {"name": "sticky", "namespace": meta["namespace"]},
            "spec": {
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": meta["name"]}],
                "loadBalancer": {"type": "ConsistentHash", "consistentHash": {"type": "SourceIP"}},
            },
        },
    )


STACK_ADDITIONS = {"no-hash-lb-on-weighted-routes": hash_on_weighted_route}
