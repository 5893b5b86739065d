"""The OpenAI-compatible entry: Envoy Gateway with Envoy AI Gateway, per-tenant keys, limits and an audit log.

`LlmGateway` creates in the gateway namespace:
- a GatewayClass whose EnvoyProxy presents the gateway's client certificate to backends (mTLS to every vLLM),
  writes a JSON access log (tenant, model, token counts, status, latency; no bodies) and exposes one Service;
- a Gateway with one HTTPS listener (certificate from the PKI) and a ClientTrafficPolicy: TLS 1.3 minimum, a
  request buffer limit;
- per model: an Envoy Gateway Backend (the vLLM Service), a BackendTLSPolicy (platform CA, service hostname) and an
  AIServiceBackend (OpenAI schema); one AIGatewayRoute routing by model name, recording token usage;
- per tenant: two API keys (pulumi_random) in staggered rotation windows scheduled with pulumiverse-time: each
  key lives one rotation period, the two slots start their windows half a period apart, so a new key appears every
  half period and the previous one keeps working for the other half (the overlap); a SecurityPolicy accepting
  inference keys on the model route and every key (guests included) on a `/v1/models` route; per-tenant request
  and token limits (BackendTrafficPolicy, global limits in Redis) and a request body cap;
- with the monitoring stack: a PodMonitor scraping the proxies (Envoy statistics and AI Gateway GenAI metrics).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import pulumiverse_time as time

from components.base import check_dns_label
from components.labels import standard_labels

TENANT_HEADER = "x-privatellm-tenant"
RULES_PER_ROUTE = 15
"""An AIGatewayRoute holds at most 15 rules (`spec.rules` maxItems in the v1beta1 CRD): one rule per model."""
API_KEY_PURPOSE = "gateway-api-key"
"""The `purpose` keeper of tenant API keys: the key-rotation-period policy finds them by it."""
MODEL_HEADER = "x-ai-eg-model"
TOKEN_METADATA = "io.envoy.ai_gateway"
SLOTS = ("a", "b")

# The audit trail: one JSON line per request; never prompt or completion bodies.
ACCESS_LOG_FIELDS: dict[str, str] = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "tenant": f"%REQ({TENANT_HEADER.upper()})%",
    "model": f"%REQ({MODEL_HEADER.upper()})%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "status": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "prompt_tokens": f"%DYNAMIC_METADATA({TOKEN_METADATA}:llm_input_token)%",
    "completion_tokens": f"%DYNAMIC_METADATA({TOKEN_METADATA}:llm_output_token)%",
    "total_tokens": f"%DYNAMIC_METADATA({TOKEN_METADATA}:llm_total_token)%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
}


REVISION_HEADER = "x-privatellm-revision"
"""What an evaluator tenant sends to pin one revision of a model (offline evaluation, A/B)."""

# With revisions: which backend (AIServiceBackend `<model>-<revision>`) served the request, and the revision an
# evaluator pinned. The AI Gateway's external processor writes the backend into its dynamic metadata.
REVISION_LOG_FIELDS: dict[str, str] = {
    "backend": f"%DYNAMIC_METADATA({TOKEN_METADATA}:backend_name)%",
    "pinned_revision": "%REQ(X-PRIVATELLM-REVISION)%",
}


@dataclass(frozen=True)
class GatewayModel:
    name: str
    """Served model name, as clients send it."""
    service: str
    namespace: str
    port: int = 8000
    model: str = ""
    """The stack's model this server belongs to (default: `service`); its revisions share the public name."""
    revision: str | None = None
    """The revision this server is, when the model has several."""
    weight: int | None = None
    """Its share of the model's requests (percent), when the model has revisions."""

    @property
    def group(self) -> str:
        return self.model or self.service


@dataclass(frozen=True)
class GatewayRollout:
    """Who may pin a revision of a model (the x-privatellm-revision header) and which tenants always get one."""

    evaluators: Sequence[str] = ()
    cohorts: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Revision → tenants that always get it."""


@dataclass(frozen=True)
class GatewayTenant:
    name: str
    requests_per_minute: int
    tokens_per_minute: int
    access: Literal["inference", "list-models"] = "inference"


@dataclass(frozen=True)
class LlmGatewayArgs:
    namespace: str
    instance: str
    hostname: str
    tls_secret: str
    client_certificate_secret: str
    ca_configmap: str
    models: Sequence[GatewayModel]
    tenants: Sequence[GatewayTenant]
    rotation_days: int
    key_epoch: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    """Where the rotation windows are counted from; moving it rotates every key at the next `pulumi up`."""
    now: datetime | None = None
    """The clock the windows are read against (None: the time `pulumi up` runs; tests pin it)."""
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = "LoadBalancer"
    source_ranges: Sequence[str] = ()
    max_request_body: str = "1Mi"
    global_limits: bool = True
    extra_log_fields: Mapping[str, str] = field(default_factory=dict)
    rollouts: Mapping[str, GatewayRollout] = field(default_factory=dict)
    """Per stack model with revisions: its evaluators and cohorts."""
    pod_monitor: bool = False
    """Create a PodMonitor for the proxies (needs the Prometheus Operator CRDs, i.e. the monitoring stack)."""

    def __post_init__(self) -> None:
        for what, value in (("namespace", self.namespace), ("instance", self.instance)):
            check_dns_label(what, value)
        if not self.models:
            raise ValueError("models is empty: the gateway routes to at least one model")
        if self.rotation_days < 2:
            raise ValueError("rotation_days must be at least 2 (a new key every half period)")
        if self.key_epoch.tzinfo is None or (self.now is not None and self.now.tzinfo is None):
            raise ValueError("key_epoch and now must be timezone-aware (UTC)")
        names = [t.name for t in self.tenants]
        if len(set(names)) != len(names):
            raise ValueError(f"tenant names repeat: {names}")
        for key, value in self.extra_log_fields.items():
            if "BODY" in value.upper():
                raise ValueError(f"extra_log_fields[{key!r}]: request and response bodies never enter the audit log")
        for group, members in self.model_groups.items():
            if len({m.name for m in members}) != 1:
                raise ValueError(f"model {group}: its revisions must share one served name")
            if len(members) > 1 and sum(m.weight or 0 for m in members) != 100:
                raise ValueError(f"model {group}: revision weights must add up to 100")
        for group, rollout in self.rollouts.items():
            revisions = {m.revision for m in self.model_groups.get(group, [])}
            for revision in rollout.cohorts:
                if revision not in revisions:
                    raise ValueError(f"rollouts[{group}].cohorts: {revision!r} is not a revision of {group}")
            known = {t.name for t in self.tenants}
            for tenant in [*rollout.evaluators, *(t for ts in rollout.cohorts.values() for t in ts)]:
                if tenant not in known:
                    raise ValueError(f"rollouts[{group}]: {tenant!r} is not a tenant of the gateway")

    @property
    def model_groups(self) -> dict[str, list[GatewayModel]]:
        """Stack model → its servers (one, or one per revision), in order."""
        groups: dict[str, list[GatewayModel]] = {}
        for m in self.models:
            groups.setdefault(m.group, []).append(m)
        return groups

    @property
    def has_revisions(self) -> bool:
        return any(len(members) > 1 for members in self.model_groups.values())


def clock() -> datetime:
    """The time the program runs (tests replace it)."""
    return datetime.now(UTC)


def key_windows(epoch: datetime, rotation_days: int, now: datetime) -> dict[str, datetime]:
    """Start of the current window of each key slot. Windows last `rotation_days`; slot `a` starts one at every
    even half period after `epoch`, slot `b` at every odd one, so a new key appears each half period and the one
    before it stays valid for the other half."""
    half = timedelta(days=rotation_days) / 2
    index = math.floor((now - epoch) / half)
    return {
        "a": epoch + half * (index - index % 2),
        "b": epoch + half * (index - (index - 1) % 2),
    }


def tenants_match(tenants: Sequence[str]) -> dict[str, str]:
    """A header match on the tenant the SecurityPolicy forwards (`<tenant>.<slot>`) for any of `tenants`."""
    names = "|".join(re.escape(t) for t in sorted(tenants))
    return {"type": "RegularExpression", "name": TENANT_HEADER, "value": rf"({names})\.(a|b)"}


def bearer(key: str) -> str:
    """The credential value Envoy compares with the Authorization header OpenAI clients send."""
    return f"Bearer {key}"


class LlmGateway(pulumi.ComponentResource):
    def __init__(self, name: str, args: LlmGatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("privatellm:gateway:LlmGateway", name, None, opts)
        self.args = a = args
        child = pulumi.ResourceOptions(parent=self)
        self.gateway_name = f"{a.instance}-llm"

        def meta(object_name: str, component: str, namespace: str | None = None) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=object_name,
                namespace=namespace if namespace is not None else a.namespace,
                labels=standard_labels(name=object_name, instance=a.instance, component=component),
            )

        self.meta = meta
        self.proxy = self._envoy_proxy(name, child)
        self.gateway_class = k8s.apiextensions.CustomResource(
            f"{name}-class",
            api_version="gateway.networking.k8s.io/v1",
            kind="GatewayClass",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=self.gateway_name,
                labels=standard_labels(name=self.gateway_name, instance=a.instance, component="gateway"),
            ),
            spec={
                "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
                "parametersRef": {
                    "group": "gateway.envoyproxy.io",
                    "kind": "EnvoyProxy",
                    "name": f"{self.gateway_name}-proxy",
                    "namespace": a.namespace,
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.proxy]),
        )
        self.gateway = k8s.apiextensions.CustomResource(
            f"{name}-gateway",
            api_version="gateway.networking.k8s.io/v1",
            kind="Gateway",
            metadata=meta(self.gateway_name, "gateway"),
            spec={
                "gatewayClassName": self.gateway_name,
                "listeners": [
                    {
                        "name": "https",
                        "protocol": "HTTPS",
                        "port": 443,
                        "hostname": a.hostname,
                        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": a.tls_secret}]},
                        "allowedRoutes": {"namespaces": {"from": "Same"}},
                    }
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.gateway_class]),
        )
        gateway_ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": self.gateway_name}
        self.client_policy = k8s.apiextensions.CustomResource(
            f"{name}-client-policy",
            api_version="gateway.envoyproxy.io/v1alpha1",
            kind="ClientTrafficPolicy",
            metadata=meta(f"{self.gateway_name}-clients", "gateway"),
            spec={
                "targetRefs": [gateway_ref],
                # TLS 1.3 only: its cipher suites are fixed by the protocol (all AEAD).
                "tls": {"minVersion": "1.3"},
                "connection": {"bufferLimit": a.max_request_body},
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.gateway]),
        )
        self.backends = [self._backend(name, m) for m in a.models]
        self.routes = self._ai_routes(name)
        self.route = self.routes[0]
        self.models_route = self._models_route(name)
        self.keys = self._tenant_keys(name, child)
        self.security = self._security(name)
        self.limits = self._limits(name)
        self.monitor = self._pod_monitor(name) if a.pod_monitor else None
        self.register_outputs({"url": f"https://{a.hostname}/v1", "gateway": self.gateway_name})

    # -------------------------------------------------------------------------------------------------- proxy

    def _envoy_proxy(self, name: str, child: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
        a = self.args
        service: dict[str, Any] = {"type": a.service_type, "externalTrafficPolicy": "Local"}
        if a.service_type == "ClusterIP":
            service.pop("externalTrafficPolicy")
        if a.source_ranges and a.service_type == "LoadBalancer":
            service["loadBalancerSourceRanges"] = list(a.source_ranges)
        return k8s.apiextensions.CustomResource(
            f"{name}-proxy",
            api_version="gateway.envoyproxy.io/v1alpha1",
            kind="EnvoyProxy",
            metadata=self.meta(f"{self.gateway_name}-proxy", "gateway"),
            spec={
                "provider": {"type": "Kubernetes", "kubernetes": {"envoyService": service}},
                # mTLS to the model servers: the proxy presents the gateway's client certificate.
                "backendTLS": {
                    "clientCertificateRef": {"kind": "Secret", "name": a.client_certificate_secret},
                    "minVersion": "1.3",
                },
                "telemetry": {
                    "accessLog": {
                        "settings": [
                            {
                                "format": {
                                    "type": "JSON",
                                    "json": {
                                        **ACCESS_LOG_FIELDS,
                                        **(REVISION_LOG_FIELDS if a.has_revisions else {}),
                                        **a.extra_log_fields,
                                    },
                                },
                                "sinks": [{"type": "File", "file": {"path": "/dev/stdout"}}],
                            }
                        ]
                    }
                },
            },
            opts=child,
        )

    def _pod_monitor(self, name: str) -> k8s.apiextensions.CustomResource:
        """Scrape every proxy of this Gateway: Envoy's own statistics (port `metrics`, 19001) and the AI Gateway
        external processor's GenAI metrics (sidecar port `aigw-metrics`, 1064: token usage per model and tenant,
        time to first token). Proxies run in the gateway namespace (Envoy Gateway's GatewayNamespace mode)."""
        a = self.args
        return k8s.apiextensions.CustomResource(
            f"{name}-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="PodMonitor",
            metadata=self.meta(f"{self.gateway_name}-proxy", "metrics"),
            spec={
                "selector": {
                    "matchLabels": {
                        "gateway.envoyproxy.io/owning-gateway-name": self.gateway_name,
                        "gateway.envoyproxy.io/owning-gateway-namespace": a.namespace,
                    }
                },
                "namespaceSelector": {"matchNames": [a.namespace]},
                "podMetricsEndpoints": [
                    {"port": "metrics", "path": "/stats/prometheus", "interval": "15s"},
                    {"port": "aigw-metrics", "path": "/metrics", "interval": "15s"},
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.gateway]),
        )

    # ------------------------------------------------------------------------------------------------ routing

    def _backend(self, name: str, model: GatewayModel) -> k8s.apiextensions.CustomResource:
        a = self.args
        host = f"{model.service}.{model.namespace}.svc.cluster.local"
        backend = k8s.apiextensions.CustomResource(
            f"{name}-backend-{model.service}",
            api_version="gateway.envoyproxy.io/v1alpha1",
            kind="Backend",
            metadata=self.meta(model.service, "gateway"),
            spec={"endpoints": [{"fqdn": {"hostname": host, "port": model.port}}]},
            opts=pulumi.ResourceOptions(parent=self),
        )
        k8s.apiextensions.CustomResource(
            f"{name}-backend-tls-{model.service}",
            api_version="gateway.networking.k8s.io/v1",
            kind="BackendTLSPolicy",
            metadata=self.meta(f"{model.service}-tls", "gateway"),
            spec={
                "targetRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": model.service}],
                "validation": {
                    "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": a.ca_configmap}],
                    "hostname": host,
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[backend]),
        )
        k8s.apiextensions.CustomResource(
            f"{name}-ai-backend-{model.service}",
            api_version="aigateway.envoyproxy.io/v1beta1",
            kind="AIServiceBackend",
            metadata=self.meta(model.service, "gateway"),
            spec={
                "schema": {"name": "OpenAI", "prefix": "/v1"},
                "backendRef": {"name": model.service, "kind": "Backend", "group": "gateway.envoyproxy.io"},
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[backend]),
        )
        return backend

    def _rules_of(self, group: str, members: Sequence[GatewayModel]) -> list[dict[str, Any]]:
        """The AIGatewayRoute rules of one stack model: by model name to its server; with revisions, one rule whose
        backendRefs carry the weights, then per cohort a rule that sends those tenants to their revision and per
        revision a pin rule for the evaluator tenants (more header matches win: pin over cohort over weights)."""
        model_header = {"type": "Exact", "name": MODEL_HEADER, "value": members[0].name}
        if len(members) == 1 and members[0].revision is None:
            return [
                {
                    "name": members[0].service,
                    "matches": [{"headers": [model_header]}],
                    "backendRefs": [{"name": members[0].service}],
                }
            ]
        rules: list[dict[str, Any]] = [
            {
                "name": group,
                "matches": [{"headers": [model_header]}],
                "backendRefs": [{"name": m.service, "weight": m.weight or 0} for m in members],
            }
        ]
        rollout = self.args.rollouts.get(group, GatewayRollout())
        by_revision = {m.revision: m for m in members}
        for revision, tenants in sorted(rollout.cohorts.items()):
            if tenants:
                rules.append(
                    {
                        "name": f"{group}-cohort-{revision}",
                        "matches": [{"headers": [model_header, tenants_match(tenants)]}],
                        "backendRefs": [{"name": by_revision[revision].service}],
                    }
                )
        if rollout.evaluators:
            for m in members:
                pin = {"type": "Exact", "name": REVISION_HEADER, "value": m.revision}
                rules.append(
                    {
                        "name": f"{group}-pin-{m.revision}",
                        "matches": [{"headers": [model_header, pin, tenants_match(rollout.evaluators)]}],
                        "backendRefs": [{"name": m.service}],
                    }
                )
        return rules

    @property
    def route_rules(self) -> list[list[dict[str, Any]]]:
        """The rules of each AIGatewayRoute: every model's rules kept in one route, at most RULES_PER_ROUTE each."""
        routes: list[list[dict[str, Any]]] = [[]]
        for group, members in self.args.model_groups.items():
            rules = self._rules_of(group, members)
            if len(rules) > RULES_PER_ROUTE:
                raise ValueError(
                    f"model {group} needs {len(rules)} route rules; at most {RULES_PER_ROUTE} fit one route"
                )
            if len(routes[-1]) + len(rules) > RULES_PER_ROUTE:
                routes.append([])
            routes[-1].extend(rules)
        return routes

    @property
    def model_route_names(self) -> list[str]:
        """The AIGatewayRoutes (and the HTTPRoutes AI Gateway generates with the same names): one per
        RULES_PER_ROUTE rules, the first keeps the plain `<gateway>-models` name."""
        return [f"{self.gateway_name}-models" + (f"-{i + 1}" if i else "") for i in range(len(self.route_rules))]

    def _ai_routes(self, name: str) -> list[k8s.apiextensions.CustomResource]:
        routes = []
        for i, (route_name, rules) in enumerate(zip(self.model_route_names, self.route_rules, strict=True)):
            routes.append(
                k8s.apiextensions.CustomResource(
                    f"{name}-route" + (f"-{i + 1}" if i else ""),
                    api_version="aigateway.envoyproxy.io/v1beta1",
                    kind="AIGatewayRoute",
                    metadata=self.meta(route_name, "gateway"),
                    spec={
                        "parentRefs": [
                            {"name": self.gateway_name, "kind": "Gateway", "group": "gateway.networking.k8s.io"}
                        ],
                        "rules": rules,
                        "llmRequestCosts": [
                            {"metadataKey": "llm_input_token", "type": "InputToken"},
                            {"metadataKey": "llm_output_token", "type": "OutputToken"},
                            {"metadataKey": "llm_total_token", "type": "TotalToken"},
                        ],
                    },
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[self.gateway, *self.backends]),
                )
            )
        return routes

    def model_list(self) -> str:
        """The body of GET /v1/models (OpenAI's list format): every model the gateway serves, by public name, once
        however many revisions it has."""
        names = list(dict.fromkeys(m.name for m in self.args.models))
        data = [{"id": n, "object": "model", "created": 0, "owned_by": self.args.instance} for n in names]
        return json.dumps({"object": "list", "data": data}, separators=(",", ":"))

    def _models_route(self, name: str) -> k8s.apiextensions.CustomResource:
        """GET /v1/models only: the one thing a guest tenant's key opens. Envoy answers it itself (an HTTPRouteFilter
        direct response) with every model of the gateway: no model server is asked, so the list is complete."""
        a = self.args
        list_name = f"{self.gateway_name}-model-list"
        self.model_list_filter = k8s.apiextensions.CustomResource(
            f"{name}-model-list",
            api_version="gateway.envoyproxy.io/v1alpha1",
            kind="HTTPRouteFilter",
            metadata=self.meta(list_name, "gateway"),
            spec={
                "directResponse": {
                    "contentType": "application/json",
                    "statusCode": 200,
                    # Envoy reads command operators (%…%) in the body: a literal % is written %%.
                    "body": {"type": "Inline", "inline": self.model_list().replace("%", "%%")},
                }
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        return k8s.apiextensions.CustomResource(
            f"{name}-models-route",
            api_version="gateway.networking.k8s.io/v1",
            kind="HTTPRoute",
            metadata=self.meta(f"{self.gateway_name}-list-models", "gateway"),
            spec={
                "parentRefs": [{"name": self.gateway_name}],
                "hostnames": [a.hostname],
                "rules": [
                    {
                        "matches": [{"path": {"type": "Exact", "value": "/v1/models"}, "method": "GET"}],
                        "filters": [
                            {
                                "type": "ExtensionRef",
                                "extensionRef": {
                                    "group": "gateway.envoyproxy.io",
                                    "kind": "HTTPRouteFilter",
                                    "name": list_name,
                                },
                            }
                        ],
                    }
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.gateway, self.model_list_filter]),
        )

    # --------------------------------------------------------------------------------------------------- keys

    def _tenant_keys(self, name: str, child: pulumi.ResourceOptions) -> dict[str, dict[str, random.RandomPassword]]:
        """Two keys per tenant, one per slot. Each slot has a pulumiverse-time Rotating whose base timestamp is the
        start of the slot's current window (read from the clock when the program runs, see `key_windows`) and whose
        period is the rotation period; a key is kept by its slot's Rotating id and window. When a window ends, the
        next `pulumi up` moves that slot's base to the new window: the Rotating is replaced, and with it the key,
        while the other slot's key, half way through its window, keeps working.

        (A Rotating with a fixed base cannot do this: once expired it is recreated from the same base, so it stays
        expired and its id, the base timestamp, never changes.)"""
        a = self.args
        windows = key_windows(a.key_epoch, a.rotation_days, a.now or clock())
        self.windows = windows
        self.slots = {
            slot: time.Rotating(
                f"{name}-key-slot-{slot}",
                rfc3339=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                rotation_days=a.rotation_days,
                opts=child,
            )
            for slot, start in windows.items()
        }
        keys: dict[str, dict[str, random.RandomPassword]] = {}
        for tenant in a.tenants:
            keys[tenant.name] = {
                slot: random.RandomPassword(
                    f"{name}-key-{tenant.name}-{slot}",
                    length=48,
                    special=False,
                    keepers={
                        "purpose": API_KEY_PURPOSE,
                        "rotation": rotating.id,
                        "window": windows[slot].strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "rotationDays": str(a.rotation_days),
                    },
                    opts=child,
                )
                for slot, rotating in self.slots.items()
            }
        return keys

    def _key_secret(self, secret_name: str, tenants: Sequence[GatewayTenant]) -> k8s.core.v1.Secret:
        """Client id (`<tenant>.<slot>`) → `Bearer <key>`: the credential layout of Envoy Gateway's API key auth."""
        data: dict[str, pulumi.Input[str]] = {}
        for tenant in tenants:
            for slot, password in self.keys[tenant.name].items():
                data[f"{tenant.name}.{slot}"] = pulumi.Output.secret(password.result.apply(bearer))
        return k8s.core.v1.Secret(
            f"{self._prefix}-{secret_name}",
            metadata=self.meta(secret_name, "api-keys"),
            type="Opaque",
            string_data=data,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["data", "stringData"]),
        )

    @property
    def _prefix(self) -> str:
        return self.gateway_name

    def _security(self, name: str) -> list[k8s.apiextensions.CustomResource]:
        a = self.args
        inference = [t for t in a.tenants if t.access == "inference"]
        secrets = {
            "inference": self._key_secret("tenant-inference-keys", inference),
            "all": self._key_secret("tenant-all-keys", list(a.tenants)),
        }
        policies = []
        for label, targets, secret in (
            ("inference", self.model_route_names, "inference"),
            ("list-models", [f"{self.gateway_name}-list-models"], "all"),
        ):
            policies.append(
                k8s.apiextensions.CustomResource(
                    f"{name}-auth-{label}",
                    api_version="gateway.envoyproxy.io/v1alpha1",
                    kind="SecurityPolicy",
                    metadata=self.meta(f"{self.gateway_name}-{label}-auth", "gateway"),
                    spec={
                        "targetRefs": [
                            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": t} for t in targets
                        ],
                        "apiKeyAuth": {
                            "credentialRefs": [{"kind": "Secret", "name": secrets[secret].metadata.name}],
                            "extractFrom": [{"headers": ["authorization"]}],
                            "forwardClientIDHeader": TENANT_HEADER,
                            "sanitize": True,
                        },
                    },
                    opts=pulumi.ResourceOptions(
                        parent=self, depends_on=[secrets[secret], *self.routes, self.models_route]
                    ),
                )
            )
        return policies

    def _limits(self, name: str) -> k8s.apiextensions.CustomResource:
        a = self.args
        rules: list[dict[str, Any]] = []
        for tenant in a.tenants:
            selector = [
                {
                    "headers": [
                        {
                            "name": TENANT_HEADER,
                            "type": "RegularExpression",
                            "value": rf"{re.escape(tenant.name)}\.(a|b)",
                        }
                    ]
                }
            ]
            rules.append(
                {"clientSelectors": selector, "limit": {"requests": tenant.requests_per_minute, "unit": "Minute"}}
            )
            rules.append(
                {
                    "clientSelectors": selector,
                    "limit": {"requests": tenant.tokens_per_minute, "unit": "Minute"},
                    # Counted in tokens: nothing is charged on the request, the response charges its total tokens.
                    "cost": {
                        "request": {"from": "Number", "number": 0},
                        "response": {
                            "from": "Metadata",
                            "metadata": {"namespace": TOKEN_METADATA, "key": "llm_total_token"},
                        },
                    },
                }
            )
        # Both routes: the model listing is rate-limited per tenant too (its token cost is zero: no usage metadata).
        spec: dict[str, Any] = {
            "targetRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route}
                for route in [*self.model_route_names, f"{self.gateway_name}-list-models"]
            ],
            "requestBuffer": {"limit": a.max_request_body},
        }
        if rules:
            spec["rateLimit"] = {"global": {"rules": rules}} if a.global_limits else {"local": {"rules": rules}}
        return k8s.apiextensions.CustomResource(
            f"{name}-limits",
            api_version="gateway.envoyproxy.io/v1alpha1",
            kind="BackendTrafficPolicy",
            metadata=self.meta(f"{self.gateway_name}-limits", "gateway"),
            spec=spec,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self.routes, self.models_route]),
        )

    def tenant_keys_output(self) -> pulumi.Output[dict[str, dict[str, str]]]:
        """Secret output: per tenant, the two valid keys (`a`, `b` slots) — hand out the newer, both work."""
        pairs = {
            tenant: pulumi.Output.all(**{slot: p.result for slot, p in slots.items()})
            for tenant, slots in self.keys.items()
        }
        return pulumi.Output.secret(pulumi.Output.all(**pairs))
