"""Grafana dashboards of the platform, built with the Grafana Foundation SDK and shipped through ConfigMaps.

`build_dashboards(models, namespace, features)` returns file name → dashboard JSON model (a plain dict, as Grafana
imports it); `dashboard_configmaps_data(...)` returns the same dashboards as file name → JSON string, the `data` of
ConfigMaps labelled `SIDECAR_LABEL` that kube-prometheus-stack's Grafana sidecar loads.

Dashboards:
- `private-llm-inference.json`: vLLM engines (latency percentiles, throughput, queue, KV cache, prefix cache,
  preemptions), a `model` variable and a row repeated per model;
- `private-llm-gpus.json` (feature "gpu"): DCGM exporter (utilisation, memory, power, temperature, XID) by node/GPU;
- `private-llm-gateway.json` (feature "gateway"): Envoy Gateway and Envoy AI Gateway (requests, tokens per model
  and per tenant, 401/403/429 rejections, latency); with feature "audit-log", rejections per tenant counted in the
  gateway's audit log in Elasticsearch (Envoy's rate-limit and auth statistics carry no tenant);
- `private-llm-platform.json`: kube-state-metrics, kubelet and cert-manager (restarts, crash loops, certificate
  expiry, PVC usage).

Every metric a query selects must be in `METRICS`, which records the component exposing it and where the name was
checked; the tests parse every expression with `promql_parser` and enforce the allow-list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import elasticsearch, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from infra.observability.ilm import AUDIT_DATASOURCE_UID
from infra.observability.rules import REVISION_RECORDS

FEATURES = frozenset({"gpu", "gateway", "audit-log"})
"""Optional dashboards: the GPU one needs the GPU Operator's DCGM exporter, the gateway one Envoy (AI) Gateway;
"audit-log" adds the gateway panels read from the audit log (Grafana data source uid `AUDIT_DATASOURCE_UID`)."""

SIDECAR_LABEL = {"grafana_dashboard": "1"}
"""kube-prometheus-stack values `grafana.sidecar.dashboards.label` / `labelValue` (defaults: grafana_dashboard, "1")."""

DATASOURCE_VAR = "datasource"
MODEL_VAR = "model"
GATEWAY_NAMESPACE = "llm-gateway"
"""Default namespace of the Gateway: Envoy Gateway runs its proxies there (GatewayNamespace mode), with the AI
Gateway external processor beside them; the platform passes the stack's gateway namespace."""

TENANT_HEADER_ATTRIBUTE = "x-privatellm-tenant:tenant.id"
"""Envoy AI Gateway chart value `controller.metricsRequestHeaderAttributes` that adds the `tenant_id` label to the
gen_ai_* metrics (the gateway forwards the API key's client id, `<tenant>.<slot>`, in `x-privatellm-tenant`)."""

INFERENCE = "private-llm-inference.json"
GPUS = "private-llm-gpus.json"
GATEWAY = "private-llm-gateway.json"
PLATFORM = "private-llm-platform.json"

Kind = Literal["gauge", "counter", "histogram"]

_VLLM = "vLLM v0.33.0 vllm/v1/metrics/loggers.py (shared/notes/vllm.md); prometheus_client adds _total to counters"
_DCGM = "NVIDIA/dcgm-exporter etc/default-counters.csv (enabled by default)"
_AIGW = "envoyproxy/ai-gateway v1.1.0 internal/metrics/genai.go; Prometheus names in cmd/extproc/mainlib/admin_test.go"
_ENVOY_HTTP = "Envoy HCM statistics http.<stat_prefix>.*, tag envoy_http_conn_manager_prefix"
_ENVOY_CLUSTER = "Envoy cluster manager statistics cluster.<name>.*, tag envoy_cluster_name"
_KSM = "kube-state-metrics (kube-prometheus-stack subchart), docs/metrics/workload/pod-metrics.md"
_KUBELET = "kubelet /metrics volume stats (scraped by kube-prometheus-stack's kubelet ServiceMonitor)"
_CERT_MANAGER = "cert-manager controller metrics, pkg/metrics (certificate expiry/ready)"


@dataclass(frozen=True)
class Metric:
    name: str
    """Name as exposed to Prometheus (counters with their `_total`; histograms without a suffix)."""
    kind: Kind
    component: str
    source: str

    def series(self) -> tuple[str, ...]:
        """The series names a query may select."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


METRICS: tuple[Metric, ...] = (
    # vLLM engine (label model_name).
    Metric("vllm:num_requests_running", "gauge", "vllm", _VLLM),
    Metric("vllm:num_requests_waiting", "gauge", "vllm", _VLLM),
    Metric("vllm:kv_cache_usage_perc", "gauge", "vllm", _VLLM + "; a 0..1 ratio"),
    Metric("vllm:time_to_first_token_seconds", "histogram", "vllm", _VLLM),
    Metric("vllm:inter_token_latency_seconds", "histogram", "vllm", _VLLM),
    Metric("vllm:request_time_per_output_token_seconds", "histogram", "vllm", _VLLM),
    Metric("vllm:e2e_request_latency_seconds", "histogram", "vllm", _VLLM),
    Metric("vllm:request_queue_time_seconds", "histogram", "vllm", _VLLM),
    Metric("vllm:prompt_tokens_total", "counter", "vllm", _VLLM),
    Metric("vllm:generation_tokens_total", "counter", "vllm", _VLLM),
    Metric("vllm:prefix_cache_hits_total", "counter", "vllm", _VLLM + "; counted in tokens"),
    Metric("vllm:prefix_cache_queries_total", "counter", "vllm", _VLLM + "; counted in tokens"),
    Metric("vllm:num_preemptions_total", "counter", "vllm", _VLLM),
    Metric("vllm:request_success_total", "counter", "vllm", _VLLM + "; label finished_reason"),
    # NVIDIA DCGM exporter (labels gpu, UUID, Hostname, modelName).
    Metric("DCGM_FI_DEV_GPU_UTIL", "gauge", "dcgm-exporter", _DCGM + "; percent"),
    Metric("DCGM_FI_DEV_FB_USED", "gauge", "dcgm-exporter", _DCGM + "; MiB"),
    Metric("DCGM_FI_DEV_FB_FREE", "gauge", "dcgm-exporter", _DCGM + "; MiB"),
    Metric("DCGM_FI_DEV_POWER_USAGE", "gauge", "dcgm-exporter", _DCGM + "; W"),
    Metric("DCGM_FI_DEV_GPU_TEMP", "gauge", "dcgm-exporter", _DCGM + "; °C"),
    Metric("DCGM_FI_DEV_XID_ERRORS", "gauge", "dcgm-exporter", _DCGM + "; value of the last XID error"),
    # Envoy AI Gateway external processor (labels gen_ai_request_model, gen_ai_token_type, error_type, and
    # tenant_id once TENANT_HEADER_ATTRIBUTE is configured).
    Metric("gen_ai_client_token_usage", "histogram", "envoy-ai-gateway", _AIGW),
    Metric("gen_ai_server_request_duration_seconds", "histogram", "envoy-ai-gateway", _AIGW),
    Metric("gen_ai_server_time_to_first_token_seconds", "histogram", "envoy-ai-gateway", _AIGW),
    # Envoy proxy (Envoy Gateway data plane).
    Metric("envoy_http_downstream_rq_xx", "counter", "envoy", _ENVOY_HTTP + ", envoy_response_code_class"),
    Metric("envoy_http_downstream_rq_time", "histogram", "envoy", _ENVOY_HTTP + "; milliseconds"),
    Metric("envoy_cluster_upstream_rq_xx", "counter", "envoy", _ENVOY_CLUSTER + ", envoy_response_code_class"),
    Metric(
        "envoy_cluster_ratelimit_over_limit",
        "counter",
        "envoy",
        _ENVOY_CLUSTER + "; global rate limit filter (cluster.<name>.ratelimit.over_limit), answered 429",
    ),
    Metric(
        "envoy_http_api_key_auth_unauthorized",
        "counter",
        "envoy",
        "Envoy api_key_auth filter, stats prefix http.<stat_prefix>.api_key_auth. (answered 401)",
    ),
    Metric(
        "envoy_http_api_key_auth_forbidden",
        "counter",
        "envoy",
        "Envoy api_key_auth filter, stats prefix http.<stat_prefix>.api_key_auth. (answered 403)",
    ),
    # Kubernetes.
    Metric("kube_pod_container_status_restarts_total", "counter", "kube-state-metrics", _KSM),
    Metric("kube_pod_container_status_waiting_reason", "gauge", "kube-state-metrics", _KSM),
    Metric("kube_pod_status_ready", "gauge", "kube-state-metrics", _KSM),
    Metric("kube_pod_info", "gauge", "kube-state-metrics", _KSM),
    Metric("kubelet_volume_stats_used_bytes", "gauge", "kubelet", _KUBELET),
    Metric("kubelet_volume_stats_capacity_bytes", "gauge", "kubelet", _KUBELET),
    Metric("certmanager_certificate_expiration_timestamp_seconds", "gauge", "cert-manager", _CERT_MANAGER),
    Metric("certmanager_certificate_ready_status", "gauge", "cert-manager", _CERT_MANAGER + "; label condition"),
    # The platform's own recording rules per (namespace, model_name, revision) (infra/observability/rules.py).
    *(
        Metric(name, "gauge", "private-llm", "recording rule, infra/observability/rules.py")
        for name in REVISION_RECORDS.values()
    ),
)


def allowed_series() -> frozenset[str]:
    """Every series name a dashboard query may select."""
    return frozenset(s for m in METRICS for s in m.series())


_JS_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\/])")
_DS = model.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VAR}}}")
_RATE = "$__rate_interval"

PanelBuilder = timeseries.Panel | stat.Panel | table.Panel


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


class _Layout:
    """Assigns unique panel ids and grid positions (two panels of 12 columns per line unless told otherwise)."""

    def __init__(self, builder: dash.Dashboard) -> None:
        self.builder = builder
        self.next_id = 1
        self.x = 0
        self.y = 0

    def _take_id(self) -> int:
        pid = self.next_id
        self.next_id += 1
        return pid

    def row(self, title: str, repeat: str | None = None) -> None:
        if self.x:
            self.x, self.y = 0, self.y + 8
        row = dash.Row(title).id(self._take_id()).grid_pos(model.GridPos(h=1, w=24, x=0, y=self.y))
        if repeat:
            row = row.repeat(repeat)
        self.builder.with_row(row)
        self.y += 1

    def add(self, panel: PanelBuilder, width: int = 12, height: int = 8) -> None:
        if self.x + width > 24:
            self.x, self.y = 0, self.y + height
        panel.id(self._take_id()).grid_pos(model.GridPos(h=height, w=width, x=self.x, y=self.y))
        self.builder.with_panel(panel)
        self.x += width
        if self.x >= 24:
            self.x, self.y = 0, self.y + height


def _targets(panel: PanelBuilder, queries: Iterable[Query]) -> None:
    for i, q in enumerate(queries):
        target = prometheus.Dataquery().expr(q.expr).ref_id(chr(ord("A") + i)).datasource(_DS)
        if q.legend:
            target = target.legend_format(q.legend)
        target = target.instant() if q.instant else target.range()
        panel.with_target(target)


def _ts(title: str, description: str, unit: str, *queries: Query, stack: bool = False) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).description(description).unit(unit).datasource(_DS)
    panel = panel.fill_opacity(10).line_width(1)
    if stack:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    _targets(panel, queries)
    return panel


def _stat(title: str, description: str, unit: str, query: Query) -> stat.Panel:
    panel = stat.Panel().title(title).description(description).unit(unit).datasource(_DS)
    _targets(panel, [query])
    return panel


def _table(title: str, description: str, unit: str, query: Query) -> table.Panel:
    panel = table.Panel().title(title).description(description).unit(unit).datasource(_DS)
    _targets(panel, [Query(query.expr, query.legend, instant=True)])
    return panel


def _datasource_variable() -> dash.DatasourceVariable:
    return dash.DatasourceVariable(DATASOURCE_VAR).label("Data source").type("prometheus")


def _query_variable(name: str, label: str, query: str, regex: str = "", all_value: str = ".*") -> dash.QueryVariable:
    """Multi-value variable with "All"; `all_value=""` makes "All" the alternation of the offered values."""
    var = (
        dash.QueryVariable(name)
        .label(label)
        .datasource(_DS)
        .query(query)
        .multi(True)
        .include_all(True)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
    )
    if all_value:
        var = var.all_value(all_value)
    if regex:
        var = var.regex(regex)
    return var


def _dashboard(uid: str, title: str, description: str, tags: Sequence[str]) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["private-llm", *tags])
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(_datasource_variable())
    )


def _quantiles(metric: str, selector: str, by: str, legend: str) -> list[Query]:
    return [
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{_RATE}])))",
            f"p{int(q * 100)} {legend}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def _revisions_row(lay: _Layout) -> None:
    """Stable and candidate side by side: the per-revision recording rules of every selected model."""
    lay.row("Revisions")
    legend = "{{model_name}} {{revision}}"
    sel = f'model_name=~"${MODEL_VAR}"'
    for record, title, unit, description in (
        ("ttft_p95", "TTFT p95 by revision", "s", "Time to first token p95 of each revision over 5 minutes."),
        ("itl_p95", "Inter-token latency p95 by revision", "s", "Inter-token latency p95 of each revision."),
        ("error_ratio", "Failed requests by revision", "percentunit", "Share of requests ending in abort or error."),
        ("requests", "Finished requests by revision", "reqps", "Requests each revision finished per second."),
    ):
        lay.add(_ts(title, description, unit, Query(f"{REVISION_RECORDS[record]}{{{sel}}}", legend)), width=6)


def _inference(models: Sequence[str], namespace: str, revisions: bool = False) -> dash.Dashboard:
    builder = _dashboard(
        "private-llm-inference",
        "Private LLM / Inference",
        "vLLM engines: latency, throughput, queueing, KV and prefix cache, preemptions, per served model.",
        ["vllm"],
    )
    model_regex = "/^(" + "|".join(_JS_SPECIAL.sub(r"\\\1", m) for m in models) + ")$/" if models else ""
    builder.with_variable(
        _query_variable(
            MODEL_VAR,
            "Model",
            f'label_values(vllm:num_requests_running{{namespace="{namespace}"}}, model_name)',
            model_regex,
            all_value="",
        )
    )
    sel = f'namespace="{namespace}", model_name=~"${MODEL_VAR}"'
    lay = _Layout(builder)

    lay.row("Latency")
    lay.add(
        _ts(
            "Time to first token",
            "p50/p95/p99 time from request arrival to the first output token (queueing and prefill included).",
            "s",
            *_quantiles("vllm:time_to_first_token_seconds", sel, "model_name", "{{model_name}}"),
        )
    )
    lay.add(
        _ts(
            "Time per output token",
            "p50/p95/p99 mean decode time per output token of finished requests (TPOT).",
            "s",
            *_quantiles("vllm:request_time_per_output_token_seconds", sel, "model_name", "{{model_name}}"),
        )
    )
    lay.add(
        _ts(
            "Inter-token latency",
            "p50/p95/p99 time between two consecutive output tokens of a stream.",
            "s",
            *_quantiles("vllm:inter_token_latency_seconds", sel, "model_name", "{{model_name}}"),
        )
    )
    lay.add(
        _ts(
            "End-to-end request latency",
            "p50/p95/p99 time from arrival to the last token, as seen by the engine.",
            "s",
            *_quantiles("vllm:e2e_request_latency_seconds", sel, "model_name", "{{model_name}}"),
        )
    )
    lay.add(
        _ts(
            "Queue time",
            "p50/p95/p99 time requests wait in the engine queue before scheduling.",
            "s",
            *_quantiles("vllm:request_queue_time_seconds", sel, "model_name", "{{model_name}}"),
        )
    )

    lay.row("Throughput and load")
    lay.add(
        _ts(
            "Token throughput",
            "Prompt (prefill) and generation (decode) tokens processed per second.",
            "tps",
            Query(
                f"sum by (model_name) (rate(vllm:prompt_tokens_total{{{sel}}}[{_RATE}]))",
                "prompt {{model_name}}",
            ),
            Query(
                f"sum by (model_name) (rate(vllm:generation_tokens_total{{{sel}}}[{_RATE}]))",
                "generation {{model_name}}",
            ),
        )
    )
    lay.add(
        _ts(
            "Finished requests",
            "Requests finished per second by reason (stop, length, abort).",
            "reqps",
            Query(
                f"sum by (model_name, finished_reason) (rate(vllm:request_success_total{{{sel}}}[{_RATE}]))",
                "{{model_name}} {{finished_reason}}",
            ),
        )
    )
    lay.add(
        _ts(
            "Running and waiting requests",
            "Requests in the running batch and waiting in the queue; a growing queue means the model is saturated.",
            "short",
            Query(f"sum by (model_name) (vllm:num_requests_running{{{sel}}})", "running {{model_name}}"),
            Query(f"sum by (model_name) (vllm:num_requests_waiting{{{sel}}})", "waiting {{model_name}}"),
        )
    )
    lay.add(
        _ts(
            "Preemptions",
            "Requests preempted per second because the KV cache ran out; they are recomputed later.",
            "ops",
            Query(
                f"sum by (model_name) (rate(vllm:num_preemptions_total{{{sel}}}[{_RATE}]))",
                "{{model_name}}",
            ),
        )
    )

    lay.row("Caches")
    lay.add(
        _ts(
            "KV-cache usage",
            "Fraction of KV-cache blocks in use, highest engine per model (1 = full).",
            "percentunit",
            Query(f"max by (model_name) (vllm:kv_cache_usage_perc{{{sel}}})", "{{model_name}}"),
        )
    )
    lay.add(
        _ts(
            "Prefix-cache hit rate",
            "Share of queried prompt tokens found in the prefix cache (hits / queries, counted in tokens).",
            "percentunit",
            Query(
                f"sum by (model_name) (rate(vllm:prefix_cache_hits_total{{{sel}}}[{_RATE}]))"
                f" / sum by (model_name) (rate(vllm:prefix_cache_queries_total{{{sel}}}[{_RATE}]))",
                "{{model_name}}",
            ),
        )
    )

    if revisions:
        _revisions_row(lay)

    one = f'namespace="{namespace}", model_name="${MODEL_VAR}"'
    lay.row(f"Model ${MODEL_VAR}", repeat=MODEL_VAR)
    lay.add(
        _stat(
            "TTFT p95",
            "p95 time to first token of this model over the dashboard's rate interval.",
            "s",
            Query(
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(vllm:time_to_first_token_seconds_bucket{{{one}}}[{_RATE}])))"
            ),
        ),
        width=6,
        height=4,
    )
    lay.add(
        _stat(
            "Waiting requests",
            "Requests queued for this model now.",
            "short",
            Query(f"sum(vllm:num_requests_waiting{{{one}}})"),
        ),
        width=6,
        height=4,
    )
    lay.add(
        _stat(
            "KV-cache usage",
            "Highest KV-cache usage among this model's engines.",
            "percentunit",
            Query(f"max(vllm:kv_cache_usage_perc{{{one}}})"),
        ),
        width=6,
        height=4,
    )
    lay.add(
        _stat(
            "Generation throughput",
            "Output tokens per second of this model.",
            "tps",
            Query(f"sum(rate(vllm:generation_tokens_total{{{one}}}[{_RATE}]))"),
        ),
        width=6,
        height=4,
    )
    return builder


def _gpus() -> dash.Dashboard:
    builder = _dashboard(
        "private-llm-gpus",
        "Private LLM / GPUs",
        "NVIDIA DCGM exporter (GPU Operator): utilisation, memory, power, temperature and XID errors per GPU.",
        ["gpu", "dcgm"],
    )
    builder.with_variable(_query_variable("node", "Node", "label_values(DCGM_FI_DEV_GPU_UTIL, Hostname)"))
    sel = 'Hostname=~"$node"'
    by = "Hostname, gpu"
    legend = "{{Hostname}} GPU {{gpu}}"
    lay = _Layout(builder)
    lay.row("GPUs")
    lay.add(
        _ts(
            "GPU utilisation",
            "Percent of time a kernel was running on the GPU (DCGM_FI_DEV_GPU_UTIL).",
            "percent",
            Query(f"max by ({by}) (DCGM_FI_DEV_GPU_UTIL{{{sel}}})", legend),
        )
    )
    lay.add(
        _ts(
            "Framebuffer memory used",
            "GPU memory in use; vLLM preallocates --gpu-memory-utilization of it for weights and KV cache.",
            "decmbytes",
            Query(f"max by ({by}) (DCGM_FI_DEV_FB_USED{{{sel}}})", legend),
        )
    )
    lay.add(
        _ts(
            "Framebuffer memory used (share)",
            "Used / (used + free) GPU memory.",
            "percentunit",
            Query(
                f"max by ({by}) (DCGM_FI_DEV_FB_USED{{{sel}}})"
                f" / (max by ({by}) (DCGM_FI_DEV_FB_USED{{{sel}}}) + max by ({by}) (DCGM_FI_DEV_FB_FREE{{{sel}}}))",
                legend,
            ),
        )
    )
    lay.add(
        _ts(
            "Power draw",
            "Power drawn by each GPU.",
            "watt",
            Query(f"max by ({by}) (DCGM_FI_DEV_POWER_USAGE{{{sel}}})", legend),
        )
    )
    lay.add(
        _ts(
            "GPU temperature",
            "Core temperature of each GPU.",
            "celsius",
            Query(f"max by ({by}) (DCGM_FI_DEV_GPU_TEMP{{{sel}}})", legend),
        )
    )
    lay.add(
        _table(
            "Last XID error",
            "GPUs whose last XID error code is non-zero (e.g. 79 fallen off the bus, 48 double-bit ECC); "
            "the value is the XID code, not a count.",
            "none",
            Query(f"max by ({by}) (DCGM_FI_DEV_XID_ERRORS{{{sel}}}) > 0", legend),
        )
    )
    return builder


AUDIT_REJECTIONS_QUERY = 'status:(403 OR 413 OR 429) AND tenant:* AND NOT tenant:"-"'
"""Lucene query on the audit log: refusals of an identified tenant (forbidden, body too large, rate limited);
Envoy writes `-` for an absent header."""


AUDIT_BACKENDS_QUERY = 'backend:* AND NOT backend:"-"'
"""Lucene query on the audit log: requests a model server answered (the AI Gateway names the backend)."""


def _audit_panel(title: str, description: str, query: str, group: str, statuses: int) -> timeseries.Panel:
    """Audit-log records over time by `group` and status, from Elasticsearch."""
    source = model.DataSourceRef(type_val="elasticsearch", uid=AUDIT_DATASOURCE_UID)
    target = (
        elasticsearch.Dataquery()
        .ref_id("A")
        .datasource(source)
        .query(query)
        .time_field("@timestamp")
        .metrics([elasticsearch.Count().id("1")])
        .bucket_aggs(
            [
                elasticsearch.Terms()
                .id("2")
                .field(group)
                .settings(elasticsearch.ElasticsearchTermsSettings().size("20").min_doc_count("1")),
                elasticsearch.Terms()
                .id("3")
                .field("status")
                .settings(elasticsearch.ElasticsearchTermsSettings().size(str(statuses)).min_doc_count("1")),
                elasticsearch.DateHistogram()
                .id("4")
                .field("@timestamp")
                .settings(elasticsearch.ElasticsearchDateHistogramSettings().interval("auto").min_doc_count("0")),
            ]
        )
    )
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit("short")
        .datasource(source)
        .fill_opacity(10)
        .line_width(1)
        .with_target(target)
    )


def _audit_rejections_by_tenant() -> timeseries.Panel:
    """Rejections per tenant from the audit log: the one place where a refusal and the tenant key meet."""
    return _audit_panel(
        "Rejections by tenant (audit log)",
        "Requests of an identified tenant key refused with 403 (not allowed on the route), 413 (body over the "
        "cap) or 429 (request or token limit), counted in the gateway's audit log in Elasticsearch. A 401 has "
        "no tenant: see the authentication panel.",
        AUDIT_REJECTIONS_QUERY,
        "tenant",
        5,
    )


def _audit_status_by_revision() -> timeseries.Panel:
    """Answers per serving backend (one per model revision) and status: the canary's 5xx beside stable's."""
    return _audit_panel(
        "Answers by revision (audit log)",
        "Requests answered by each model server backend (a revision of a model: the AI Gateway records the "
        "backend `<namespace>/<model>-<revision>/route/...`), by HTTP status, from the gateway's audit log.",
        AUDIT_BACKENDS_QUERY,
        "backend",
        10,
    )


def _gateway(gateway_namespace: str, audit_log: bool, revisions: bool = False) -> dash.Dashboard:
    builder = _dashboard(
        "private-llm-gateway",
        "Private LLM / Gateway and tenants",
        "Envoy Gateway and Envoy AI Gateway: requests, tokens per model and tenant, rejections, latency.",
        ["gateway", "envoy"],
    )
    builder.with_variable(
        _query_variable(
            "tenant",
            "Tenant key",
            "label_values(gen_ai_client_token_usage_count, tenant_id)",
        )
    )
    ns = f'namespace="{gateway_namespace}"'
    lay = _Layout(builder)

    lay.row("Requests and rejections")
    lay.add(
        _ts(
            "Requests by status class",
            "Downstream requests per second answered by the gateway, by HTTP status class (2xx, 4xx, 5xx).",
            "reqps",
            Query(
                f"sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx{{{ns}}}[{_RATE}]))",
                "{{envoy_response_code_class}}xx",
            ),
            stack=True,
        )
    )
    lay.add(
        _ts(
            "AI requests by model",
            "Requests per second processed by the AI Gateway, by requested model; errors by error type.",
            "reqps",
            Query(
                "sum by (gen_ai_request_model) "
                f'(rate(gen_ai_server_request_duration_seconds_count{{{ns}, error_type=""}}[{_RATE}]))',
                "{{gen_ai_request_model}}",
            ),
            Query(
                "sum by (gen_ai_request_model, error_type) "
                f'(rate(gen_ai_server_request_duration_seconds_count{{{ns}, error_type!=""}}[{_RATE}]))',
                "{{gen_ai_request_model}} error {{error_type}}",
            ),
        )
    )
    lay.add(
        _ts(
            "Rejected: rate limited (429)",
            "Requests refused by the global (Redis-backed) per-tenant request/token limits, per upstream cluster "
            "(one per route). Local limits (no Redis) appear only in the 4xx class and the access log.",
            "reqps",
            Query(
                f"sum by (envoy_cluster_name) (rate(envoy_cluster_ratelimit_over_limit{{{ns}}}[{_RATE}]))",
                "{{envoy_cluster_name}}",
            ),
        )
    )
    lay.add(
        _ts(
            "Rejected: unauthenticated (401) and forbidden (403)",
            "API-key authentication failures per listener: a missing or unknown key (401), a known key not "
            "allowed on the route, e.g. a guest key on inference (403). No tenant is known for a 401.",
            "reqps",
            Query(
                "sum by (envoy_http_conn_manager_prefix) "
                f"(rate(envoy_http_api_key_auth_unauthorized{{{ns}}}[{_RATE}]))",
                "401 {{envoy_http_conn_manager_prefix}}",
            ),
            Query(
                f"sum by (envoy_http_conn_manager_prefix) (rate(envoy_http_api_key_auth_forbidden{{{ns}}}[{_RATE}]))",
                "403 {{envoy_http_conn_manager_prefix}}",
            ),
        )
    )
    if audit_log:
        lay.add(_audit_rejections_by_tenant())
        if revisions:
            lay.add(_audit_status_by_revision())
    lay.add(
        _ts(
            "Upstream responses by cluster",
            "Responses from the vLLM backends per second, by Envoy cluster (route) and status class.",
            "reqps",
            Query(
                "sum by (envoy_cluster_name, envoy_response_code_class) "
                f"(rate(envoy_cluster_upstream_rq_xx{{{ns}}}[{_RATE}]))",
                "{{envoy_cluster_name}} {{envoy_response_code_class}}xx",
            ),
        )
    )

    lay.row("Tokens")
    lay.add(
        _ts(
            "Tokens by model",
            "Input and output tokens per second through the gateway, by requested model.",
            "tps",
            Query(
                "sum by (gen_ai_request_model, gen_ai_token_type) "
                f"(rate(gen_ai_client_token_usage_sum{{{ns}}}[{_RATE}]))",
                "{{gen_ai_request_model}} {{gen_ai_token_type}}",
            ),
        )
    )
    tenant_rate = (
        f'label_replace(rate(gen_ai_client_token_usage_sum{{{ns}, tenant_id=~"$tenant", tenant_id!=""}}[{_RATE}]), '
        '"tenant", "$1", "tenant_id", "(.+)\\\\.[ab]")'
    )
    lay.add(
        _ts(
            "Tokens by tenant",
            "Input and output tokens per second per tenant (API key client id without its rotation slot). Needs "
            f"the AI Gateway chart value controller.metricsRequestHeaderAttributes={TENANT_HEADER_ATTRIBUTE}; "
            "otherwise use the audit access log (field tenant) in Kibana.",
            "tps",
            Query(f"sum by (tenant, gen_ai_token_type) ({tenant_rate})", "{{tenant}} {{gen_ai_token_type}}"),
            stack=True,
        )
    )
    lay.add(
        _ts(
            "Requests by tenant",
            "AI requests per second per tenant key (same prerequisite as tokens by tenant).",
            "reqps",
            Query(
                "sum by (tenant_id) "
                f'(rate(gen_ai_server_request_duration_seconds_count{{{ns}, tenant_id=~"$tenant", tenant_id!=""}}'
                f"[{_RATE}]))",
                "{{tenant_id}}",
            ),
        )
    )

    lay.row("Latency")
    lay.add(
        _ts(
            "Gateway request duration by model",
            "p50/p95/p99 AI Gateway request duration (headers in to last response byte) by requested model.",
            "s",
            *_quantiles(
                "gen_ai_server_request_duration_seconds", ns, "gen_ai_request_model", "{{gen_ai_request_model}}"
            ),
        )
    )
    lay.add(
        _ts(
            "Gateway time to first token",
            "p50/p95/p99 time to the first streamed token as seen by the gateway (includes the network to vLLM).",
            "s",
            *_quantiles(
                "gen_ai_server_time_to_first_token_seconds", ns, "gen_ai_request_model", "{{gen_ai_request_model}}"
            ),
        )
    )
    lay.add(
        _ts(
            "Downstream request time",
            "p50/p95/p99 total request time of every request through the Envoy listeners, rejected ones included.",
            "ms",
            *_quantiles("envoy_http_downstream_rq_time", ns, "envoy_http_conn_manager_prefix", ""),
        )
    )
    return builder


def _platform(namespace: str) -> dash.Dashboard:
    builder = _dashboard(
        "private-llm-platform",
        "Private LLM / Platform health",
        "Pod restarts and crash loops, readiness, certificate expiry (cert-manager) and volume usage.",
        ["kubernetes"],
    )
    ns_var = (
        dash.QueryVariable("namespace")
        .label("Namespace")
        .datasource(_DS)
        .query("label_values(kube_pod_info, namespace)")
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .current(model.VariableOption(selected=True, text=[namespace], value=[namespace]))
    )
    builder.with_variable(ns_var)
    sel = 'namespace=~"$namespace"'
    lay = _Layout(builder)
    lay.row("Workloads")
    lay.add(
        _ts(
            "Container restarts (1h)",
            "Container restarts over the last hour, per pod.",
            "short",
            Query(
                f"sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total{{{sel}}}[1h])) > 0",
                "{{namespace}}/{{pod}}",
            ),
        )
    )
    lay.add(
        _table(
            "Crash-looping containers",
            "Containers waiting in CrashLoopBackOff now.",
            "short",
            Query(
                "sum by (namespace, pod, container) "
                f'(kube_pod_container_status_waiting_reason{{{sel}, reason="CrashLoopBackOff"}}) > 0'
            ),
        )
    )
    lay.add(
        _table(
            "Pods not ready",
            "Pods whose Ready condition is false.",
            "short",
            Query(f'sum by (namespace, pod) (kube_pod_status_ready{{{sel}, condition="false"}}) > 0'),
        )
    )
    lay.row("Certificates and storage")
    lay.add(
        _table(
            "Certificate expiry",
            "Time left before each cert-manager Certificate expires (renewal normally happens at 2/3 of the lifetime).",
            "s",
            Query("min by (exported_namespace, name) (certmanager_certificate_expiration_timestamp_seconds) - time()"),
        )
    )
    lay.add(
        _table(
            "Certificates not ready",
            "cert-manager Certificates whose Ready condition is not True.",
            "short",
            Query('max by (exported_namespace, name) (certmanager_certificate_ready_status{condition!="True"}) == 1'),
        )
    )
    lay.add(
        _ts(
            "PVC usage",
            "Used share of each PersistentVolumeClaim (kubelet volume stats; only mounted volumes report).",
            "percentunit",
            Query(
                f"max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_used_bytes{{{sel}}})"
                " / max by (namespace, persistentvolumeclaim) "
                f"(kubelet_volume_stats_capacity_bytes{{{sel}}})",
                "{{namespace}}/{{persistentvolumeclaim}}",
            ),
        )
    )
    return builder


def _to_dict(builder: dash.Dashboard) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return out


def build_dashboards(
    models: Sequence[str],
    namespace: str,
    features: set[str],
    gateway_namespace: str = GATEWAY_NAMESPACE,
    revisions: bool = False,
) -> dict[str, dict[str, Any]]:
    """File name → Grafana dashboard JSON model. `models`: served model names (the `model` variable offers only
    these); `namespace`: where the vLLM engines run; `features` ⊆ FEATURES adds the GPU and gateway dashboards;
    `gateway_namespace`: where the Gateway's proxies run."""
    unknown = set(features) - FEATURES
    if unknown:
        raise ValueError(f"unknown dashboard features {sorted(unknown)}; known: {sorted(FEATURES)}")
    if not namespace:
        raise ValueError("namespace is empty")
    out = {INFERENCE: _to_dict(_inference(models, namespace, revisions))}
    if "gpu" in features:
        out[GPUS] = _to_dict(_gpus())
    if "gateway" in features:
        out[GATEWAY] = _to_dict(_gateway(gateway_namespace, "audit-log" in features, revisions))
    out[PLATFORM] = _to_dict(_platform(namespace))
    return out


def dashboard_configmaps_data(
    models: Sequence[str],
    namespace: str,
    features: set[str],
    gateway_namespace: str = GATEWAY_NAMESPACE,
    revisions: bool = False,
) -> dict[str, str]:
    """File name → dashboard JSON string: the `data` of a ConfigMap labelled SIDECAR_LABEL (`revisions`: a row
    comparing the revisions of the models that have them)."""
    return {
        name: json.dumps(board, indent=2, sort_keys=True)
        for name, board in build_dashboards(models, namespace, features, gateway_namespace, revisions).items()
    }
