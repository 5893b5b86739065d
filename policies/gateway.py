"""The gateway's routes: every route into the models is authenticated and rate-limited.

Sources: OWASP Top 10 for LLM Applications 2025 (LLM02 sensitive information disclosure: authenticated endpoints;
LLM10 unbounded consumption: rate limits per client), NSA/CISA hardening guidance (authentication and
authorization). The objects are Gateway API routes and Envoy Gateway policies; an Envoy AI Gateway AIGatewayRoute
generates the HTTPRoute of the same name and namespace, which is what the policies target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import PolicyResource, Severity, StackValidationArgs

from policies.base import Rule, StackRule, exemption_for, get_path, nist, nsa, owasp

HTTP_ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
AI_GATEWAY_ROUTES = (
    "kubernetes:aigateway.envoyproxy.io/v1alpha1:AIGatewayRoute",
    "kubernetes:aigateway.envoyproxy.io/v1beta1:AIGatewayRoute",
)
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
SECURITY_POLICY = "kubernetes:gateway.envoyproxy.io/v1alpha1:SecurityPolicy"
BACKEND_TRAFFIC_POLICY = "kubernetes:gateway.envoyproxy.io/v1alpha1:BackendTrafficPolicy"
AUTHENTICATIONS = ("apiKeyAuth", "jwt", "oidc", "basicAuth", "extAuth")


def _targets(resource: PolicyResource) -> set[tuple[str | None, str, str]]:
    """(namespace, kind, name) of everything a policy attaches to (targetRefs and the older targetRef)."""
    spec = resource.props.get("spec") if isinstance(resource.props.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    refs: list[Any] = list(spec.get("targetRefs") or [])
    if isinstance(spec.get("targetRef"), Mapping):
        refs.append(spec["targetRef"])
    namespace = get_path(resource.props, ("metadata", "namespace"))
    return {(namespace, str(r.get("kind")), str(r.get("name"))) for r in refs if isinstance(r, Mapping)}


def _routes(resources: Iterable[PolicyResource]) -> list[tuple[PolicyResource, str | None, str, list[str]]]:
    """Routes into the platform: (resource, namespace, name, parent Gateway names)."""
    out = []
    for r in resources:
        if r.resource_type not in (HTTP_ROUTE, *AI_GATEWAY_ROUTES):
            continue
        name = get_path(r.props, ("metadata", "name"))
        namespace = get_path(r.props, ("metadata", "namespace"))
        parents = [
            str(p.get("name"))
            for p in get_path(r.props, ("spec", "parentRefs")) or []
            if isinstance(p, Mapping) and p.get("kind", "Gateway") == "Gateway"
        ]
        if isinstance(name, str):
            out.append((r, namespace if isinstance(namespace, str) else None, name, parents))
    return out


def _covered(
    args: StackValidationArgs, policy_type: str, has_setting: Any, message: str
) -> list[tuple[str, str | None]]:
    config = args.get_config()
    attached: set[tuple[str | None, str, str]] = set()
    for r in args.resources:
        if r.resource_type == policy_type and has_setting(r.props.get("spec") or {}):
            attached |= _targets(r)
    out: list[tuple[str, str | None]] = []
    for route, namespace, name, parents in _routes(args.resources):
        if exemption_for(config, namespace) is not None:
            continue
        if (namespace, "HTTPRoute", name) in attached or any((namespace, "Gateway", g) in attached for g in parents):
            continue
        out.append((f"route {namespace}/{name} {message}", route.urn))
    return out


def authenticated_routes(args: StackValidationArgs) -> list[tuple[str, str | None]]:
    return _covered(
        args,
        SECURITY_POLICY,
        lambda spec: any(spec.get(a) for a in AUTHENTICATIONS),
        "has no SecurityPolicy with authentication (apiKeyAuth, jwt, oidc, basicAuth or extAuth) on it or its "
        "Gateway: anyone who reaches the gateway can call the models",
    )


def rate_limited_routes(args: StackValidationArgs) -> list[tuple[str, str | None]]:
    return _covered(
        args,
        BACKEND_TRAFFIC_POLICY,
        lambda spec: bool(spec.get("rateLimit")),
        "has no BackendTrafficPolicy with a rateLimit on it or its Gateway: one client can take every GPU",
    )


MODEL_HEADER = "x-ai-eg-model"


def _weighted_rules(props: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(model name, {backend: weight}) of every AIGatewayRoute rule that splits a model by weight: the rules whose
    only match is the model header (pin and cohort rules add matches) and whose backendRefs carry weights."""
    out = []
    for rule in get_path(props, ("spec", "rules")) or []:
        if not isinstance(rule, Mapping):
            continue
        refs = [r for r in rule.get("backendRefs") or [] if isinstance(r, Mapping)]
        if not any("weight" in r for r in refs):
            continue
        model = None
        for match in rule.get("matches") or []:
            headers = (
                [h for h in (match.get("headers") or []) if isinstance(h, Mapping)]
                if isinstance(match, Mapping)
                else []
            )
            if len(headers) == 1 and headers[0].get("name") == MODEL_HEADER:
                model = str(headers[0].get("value"))
        if model is not None:
            out.append((model, {str(r.get("name")): r.get("weight", 1) for r in refs}))
    return out


def revision_weights(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    declared: Mapping[str, Any] = config.get("revisionWeights") or {}
    out = []
    for model, weights in _weighted_rules(props):
        values = list(weights.values())
        if not all(isinstance(w, int | float) and float(w).is_integer() for w in values):
            out.append(f"model {model!r}: revision weights {weights} must be whole percents")
            continue
        total = sum(int(w) for w in values)
        if total != 100:
            out.append(f"model {model!r}: revision weights {weights} add up to {total}, not 100")
        serving = [b for b, w in weights.items() if int(w) > 0]
        if len(serving) > 2:
            out.append(f"model {model!r}: {len(serving)} revisions take traffic ({', '.join(serving)}); at most two")
        expected = declared.get(model)
        if expected is not None and {b: int(w) for b, w in weights.items()} != {b: int(w) for b, w in expected.items()}:
            out.append(f"model {model!r}: the route gives {weights}, the stack file states {dict(expected)}")
    return out


def no_hash_on_weighted_routes(args: StackValidationArgs) -> list[tuple[str, str | None]]:
    """Envoy Gateway implements weights as weighted localities, which a consistent-hash (Maglev) load balancer
    ignores: a weighted route must not get one."""
    weighted = {
        (get_path(r.props, ("metadata", "namespace")), get_path(r.props, ("metadata", "name")))
        for r in args.resources
        if r.resource_type in AI_GATEWAY_ROUTES and _weighted_rules(r.props)
    }
    out: list[tuple[str, str | None]] = []
    for r in args.resources:
        if r.resource_type != BACKEND_TRAFFIC_POLICY:
            continue
        if get_path(r.props, ("spec", "loadBalancer", "type")) != "ConsistentHash":
            continue
        for namespace, kind, name in sorted(_targets(r), key=str):
            if kind == "HTTPRoute" and (namespace, name) in weighted:
                out.append(
                    (
                        f"BackendTrafficPolicy {namespace}/{get_path(r.props, ('metadata', 'name'))} hashes requests "
                        f"onto route {name}, whose revision weights consistent hashing would ignore",
                        r.urn,
                    )
                )
    return out


GATEWAY_RULES: list[Rule] = [
    Rule(
        name="revision-weights",
        description=(
            "A model served in several revisions splits its traffic in whole percents that add up to 100, two "
            "revisions at most take traffic, and the route gives each exactly what the stack file states (a canary "
            "gets no more than it was granted)."
        ),
        check=revision_weights,
        resource_types=AI_GATEWAY_ROUTES,
        standards=(owasp("LLM09: Misinformation"), nist("CM-3")),
        remediation="Set models[].revisions[].weight in the stack file (integers adding up to 100) and render again.",
        severity=Severity.HIGH,
    ),
]


GATEWAY_STACK_RULES: list[StackRule] = [
    StackRule(
        name="gateway-authentication",
        description=(
            "Every route into the models requires authentication at the gateway: per-tenant API keys (or JWT/OIDC), "
            "so every request is attributable and can be refused."
        ),
        check=authenticated_routes,
        standards=(owasp("LLM02: Sensitive Information Disclosure"), nsa("Authentication and authorization")),
        remediation="Attach an Envoy Gateway SecurityPolicy (apiKeyAuth) to the route; LlmGateway does for tenants.",
        severity=Severity.CRITICAL,
    ),
    StackRule(
        name="gateway-rate-limits",
        description=(
            "Every route into the models is rate-limited per client: a runaway or hostile client cannot exhaust the "
            "GPUs of every other tenant."
        ),
        check=rate_limited_routes,
        standards=(owasp("LLM10: Unbounded Consumption"),),
        remediation="Attach a BackendTrafficPolicy with rateLimit to the route (gateway tenants[].limits).",
        severity=Severity.HIGH,
    ),
    StackRule(
        name="no-hash-lb-on-weighted-routes",
        description=(
            "A route that splits a model between revisions by weight is never load-balanced by consistent hashing: "
            "Envoy Gateway implements the weights as localities, which a hash load balancer silently ignores."
        ),
        check=no_hash_on_weighted_routes,
        standards=(nist("CM-3"),),
        remediation="Remove loadBalancer.type ConsistentHash from BackendTrafficPolicies on weighted model routes.",
        severity=Severity.HIGH,
    ),
]
