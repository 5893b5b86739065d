"""Prometheus alert and recording rules for the platform: model SLOs, GPUs, gateway tokens and the platform services.

`build_rule_groups` returns the `groups` list of a PrometheusRule (or of a plain rule file, see `rule_file_yaml`).
Every alert carries a `severity` label (`critical|warning|info`) and `summary`, `description` and `runbook`
annotations; the runbook names a heading of `docs/alerts.md`.

Metric contracts (checked against the sources named in `docs/alerts.md`):
- vLLM v0.33.0: `vllm:time_to_first_token_seconds` (histogram), `vllm:num_requests_waiting`,
  `vllm:kv_cache_usage_perc`, the counters `vllm:num_preemptions`, `vllm:request_success` (label `finished_reason`:
  stop, length, abort, error, repetition), `vllm:prompt_tokens`, `vllm:generation_tokens` (scraped with `_total`);
  every series has the `model_name` label (the served model name).
- kube-state-metrics (kube-prometheus-stack), kubelet volume stats, DCGM exporter (GPU Operator), cert-manager,
  Harbor exporter, prometheus-community elasticsearch-exporter, Envoy AI Gateway `gen_ai_client_token_usage`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from components.base import DNS_LABEL

FEATURES = frozenset({"gpu", "gateway", "harbor", "elasticsearch", "cert-manager"})
RUNBOOK = "docs/alerts.md"

# vLLM v0.33.0 finish reasons that mean the request did not complete normally ("stop", "length" and "repetition"
# are normal ends). "abort": aborted (client gone, timeout, engine shutdown); "error": request-level internal error.
ERROR_FINISH_REASONS = ("abort", "error")

# The gateway puts the authenticated client id (`<tenant>.<slot>`) in this request header (components/gateway.py).
# Per-tenant token metrics exist only when the AI Gateway controller maps it onto a metric attribute:
# chart value `controller.metricsRequestHeaderAttributes: "x-privatellm-tenant:tenant.id"`, which Prometheus
# sees as the label `tenant_id`.
TENANT_HEADER_ATTRIBUTE = "x-privatellm-tenant:tenant.id"
TENANT_METRIC_LABEL = "tenant_id"

# ECK names the data claim of every Elasticsearch pod `elasticsearch-data-<cluster>-es-<nodeset>-<ordinal>`.
ES_DATA_CLAIMS = "elasticsearch-data-.*"

_VALUE = "{{ $value | humanize }}"


def _label(name: str) -> str:
    """A template reference to a label of the expression's result (a rule's own `labels` are not visible there)."""
    return "{{ $labels." + name + " }}"


@dataclass(frozen=True)
class ModelSlo:
    """SLO targets of one served model.

    `model` is the served model name (the `model_name` label of the vllm:* metrics). `workload` is the name of the
    model's Deployment or LeaderWorkerSet (`models[].name` of the stack file); when left out it is derived from
    `model` (lower case, every other character than a-z, 0-9 and '-' replaced by '-'). `multi_node` selects the
    LeaderWorkerSet form of the no-ready-replicas alert.
    """

    model: str
    ttft_p95_seconds: float
    ttft_p99_seconds: float
    max_waiting: int = 10
    error_ratio: float = 0.05
    workload: str | None = None
    multi_node: bool = False
    revisions: tuple[tuple[str, str, bool], ...] = ()
    """With revisions: (revision, workload, multi_node) of each; the alerts then judge every revision on its own
    (a 10% canary's errors are not diluted by stable's traffic)."""

    def __post_init__(self) -> None:
        if not self.model or not self.model.strip():
            raise ValueError("model must be a non-empty served model name")
        for field in ("ttft_p95_seconds", "ttft_p99_seconds"):
            value = getattr(self, field)
            if not value > 0:
                raise ValueError(f"{field}={value!r} for model {self.model!r} must be positive")
        if self.ttft_p99_seconds < self.ttft_p95_seconds:
            raise ValueError(
                f"ttft_p99_seconds={self.ttft_p99_seconds} for model {self.model!r} is below "
                f"ttft_p95_seconds={self.ttft_p95_seconds}; the 99th percentile target cannot be tighter"
            )
        if isinstance(self.max_waiting, bool) or not isinstance(self.max_waiting, int) or self.max_waiting <= 0:
            raise ValueError(f"max_waiting={self.max_waiting!r} for model {self.model!r} must be a positive integer")
        if not 0 < self.error_ratio < 1:
            raise ValueError(f"error_ratio={self.error_ratio!r} for model {self.model!r} must be between 0 and 1")
        if self.workload is not None and not _is_dns_label(self.workload):
            raise ValueError(
                f"workload={self.workload!r} for model {self.model!r} is not a Kubernetes name (RFC 1123 label)"
            )

    @property
    def workload_name(self) -> str:
        if self.workload is not None:
            return self.workload
        return re.sub(r"[^a-z0-9-]", "-", self.model.lower()).strip("-")[:63].strip("-")


def _is_dns_label(value: str) -> bool:
    return len(value) <= 63 and bool(DNS_LABEL.fullmatch(value))


def _quote(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sel(metric: str, *matchers: tuple[str, str, str]) -> str:
    inner = ", ".join(f"{name}{op}{_quote(value)}" for name, op, value in matchers)
    return f"{metric}{{{inner}}}"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _alert(
    name: str,
    expr: str,
    severity: str,
    summary: str,
    description: str,
    for_: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, **(labels or {})}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook": f"{RUNBOOK}#{name.lower()}",
    }
    return rule


# --------------------------------------------------------------------------------------------------- per model


def _model_alerts(slo: ModelSlo, namespace: str) -> list[dict[str, Any]]:
    ns = ("namespace", "=", namespace)
    model = ("model_name", "=", slo.model)
    static = {"model_name": slo.model}
    # With revisions every expression keeps the revision apart (the ServiceMonitor labels each server's series).
    by = "namespace, model_name, revision" if slo.revisions else "namespace, model_name"
    who = f"model {_label('model_name')} in namespace {_label('namespace')}" + (
        f", revision {_label('revision')}" if slo.revisions else ""
    )
    rules: list[dict[str, Any]] = []

    bucket_rate = f"sum by ({by}, le) (rate({_sel('vllm:time_to_first_token_seconds_bucket', ns, model)}[5m]))"
    for quantile, target, name, severity in (
        ("0.95", slo.ttft_p95_seconds, "VllmTtftP95High", "warning"),
        ("0.99", slo.ttft_p99_seconds, "VllmTtftP99High", "critical"),
    ):
        pct = quantile[2:]
        rules.append(
            _alert(
                name,
                f"histogram_quantile({quantile}, {bucket_rate}) > {_number(target)}",
                severity,
                f"TTFT p{pct} of {_label('model_name')} above {_number(target)}s",
                f"Time to first token p{pct} of {who} is {_VALUE}s over the last 5 minutes; the target is "
                f"{_number(target)}s.",
                for_="5m",
                labels=static,
            )
        )

    rules.append(
        _alert(
            "VllmRequestsQueueing",
            f"sum by ({by}, pod) ({_sel('vllm:num_requests_waiting', ns, model)}) > {slo.max_waiting}",
            "warning",
            f"Requests queueing for {_label('model_name')}",
            f"Pod {_label('pod')} of {who} has had more than {slo.max_waiting} requests waiting for 10 minutes "
            f"(now {_VALUE}).",
            for_="10m",
            labels=static,
        )
    )
    rules.append(
        _alert(
            "VllmKvCacheNearlyFull",
            f"max by ({by}, pod) ({_sel('vllm:kv_cache_usage_perc', ns, model)}) > 0.9",
            "warning",
            f"KV cache above 90% for {_label('model_name')}",
            f"KV-cache usage of pod {_label('pod')} of {who} is {{{{ $value | humanizePercentage }}}} "
            "(above 90% for 5 minutes).",
            for_="5m",
            labels=static,
        )
    )
    rules.append(
        _alert(
            "VllmPreemptions",
            f"sum by ({by}) (increase({_sel('vllm:num_preemptions_total', ns, model)}[15m])) > 0",
            "warning",
            f"vLLM preempting requests of {_label('model_name')}",
            f"{who[0].upper()}{who[1:]} preempted {_VALUE} requests in the last 15 minutes (KV cache exhausted).",
            labels=static,
        )
    )
    reasons = "|".join(ERROR_FINISH_REASONS)
    failed = _sel("vllm:request_success_total", ns, model, ("finished_reason", "=~", reasons))
    finished = _sel("vllm:request_success_total", ns, model)
    rules.append(
        _alert(
            "VllmErrorRatioHigh",
            f"sum by ({by}) (rate({failed}[5m])) / sum by ({by}) (rate({finished}[5m])) > {_number(slo.error_ratio)}",
            "critical",
            f"Failed requests of {_label('model_name')} above {_number(slo.error_ratio * 100)}%",
            f"{{{{ $value | humanizePercentage }}}} of the requests finished by {who} over the last 5 minutes ended "
            f"with finished_reason {reasons.replace('|', ' or ')}; the limit is "
            f"{_number(slo.error_ratio * 100)}%.",
            for_="5m",
            labels=static,
        )
    )

    for revision, workload, multi_node in slo.revisions or ((None, slo.workload_name, slo.multi_node),):
        rules.append(_no_ready_replicas(slo, ns, workload, multi_node, revision))
    return rules


def _no_ready_replicas(
    slo: ModelSlo, ns: tuple[str, str, str], workload: str, multi_node: bool, revision: str | None
) -> dict[str, Any]:
    static_w = {"model_name": slo.model, "workload": workload, **({"revision": revision} if revision else {})}
    if multi_node:
        # A LeaderWorkerSet's leader StatefulSet carries the LWS name and its replicas; leader pods are `<lws>-<group>`
        # (workers `<lws>-<group>-<index>`). A leader is ready only when its group serves.
        desired = _sel("kube_statefulset_replicas", ns, ("statefulset", "=", workload))
        ready = _sel("kube_pod_status_ready", ns, ("pod", "=~", f"{workload}-[0-9]+"), ("condition", "=", "true"))
        expr = f"({desired} > 0) unless on (namespace) (sum by (namespace) ({ready}) > 0)"
        kind = "LeaderWorkerSet"
    else:
        desired = _sel("kube_deployment_spec_replicas", ns, ("deployment", "=", workload))
        available = _sel("kube_deployment_status_replicas_available", ns, ("deployment", "=", workload))
        expr = f"({desired} > 0) and on (namespace, deployment) ({available} == 0)"
        kind = "Deployment"
    of = f"revision {revision} of {slo.model}" if revision else slo.model
    return _alert(
        "VllmNoReadyReplicas",
        expr,
        "critical",
        f"No ready replica of {of}",
        f"{kind} {workload} in namespace {_label('namespace')} wants {_VALUE} replicas but none has "
        "been ready for 10 minutes: " + ("the revision is not served." if revision else "the model is not served."),
        for_="10m",
        labels=static_w,
    )


# ------------------------------------------------------------------------------------------------ revisions

REVISION_RECORDS = {
    "requests": "model_name_revision:vllm_requests:rate5m",
    "error_ratio": "model_name_revision:vllm_request_error_ratio:rate5m",
    "ttft_p95": "model_name_revision:vllm_time_to_first_token_seconds:p95_5m",
    "itl_p95": "model_name_revision:vllm_inter_token_latency_seconds:p95_5m",
}
"""The recording rules per (namespace, model_name, revision) that the canary alerts, the Revisions dashboard row and
`private-llm rollout check` read."""


@dataclass(frozen=True)
class RevisionComparison:
    """A candidate revision judged against its model's stable one (the stack's gate thresholds)."""

    model: str
    """Served model name."""
    stable: str
    candidate: str
    max_error_ratio_delta: float
    max_ttft_p95_ratio: float
    max_itl_p95_ratio: float
    min_requests_per_second: float
    """Below this candidate traffic the comparison is not made (too few requests to judge)."""


def _revision_recording(namespace: str) -> list[dict[str, Any]]:
    ns = ("namespace", "=", namespace)
    revised = ("revision", "!=", "")
    by = "namespace, model_name, revision"
    finished = _sel("vllm:request_success_total", ns, revised)
    failed = _sel("vllm:request_success_total", ns, revised, ("finished_reason", "=~", "|".join(ERROR_FINISH_REASONS)))

    def p95(metric: str) -> str:
        return f"histogram_quantile(0.95, sum by ({by}, le) (rate({_sel(metric + '_bucket', ns, revised)}[5m])))"

    return [
        {"record": REVISION_RECORDS["requests"], "expr": f"sum by ({by}) (rate({finished}[5m]))"},
        {
            "record": REVISION_RECORDS["error_ratio"],
            # a revision without a failed request has a ratio of 0, not none (vLLM may not have the series yet)
            "expr": f"(sum by ({by}) (rate({failed}[5m])) or sum by ({by}) (rate({finished}[5m])) * 0) "
            f"/ sum by ({by}) (rate({finished}[5m]))",
        },
        {"record": REVISION_RECORDS["ttft_p95"], "expr": p95("vllm:time_to_first_token_seconds")},
        {"record": REVISION_RECORDS["itl_p95"], "expr": p95("vllm:inter_token_latency_seconds")},
    ]


def _comparison_alerts(c: RevisionComparison) -> list[dict[str, Any]]:
    def of(record: str, revision: str) -> str:
        return _sel(REVISION_RECORDS[record], ("model_name", "=", c.model), ("revision", "=", revision))

    enough = f"and on (namespace, model_name) ({of('requests', c.candidate)} > {_number(c.min_requests_per_second)})"
    labels = {"model_name": c.model, "revision": c.candidate, "stable": c.stable}
    versus = f"revision {c.candidate} of {c.model} against {c.stable}"
    return [
        _alert(
            "CanaryErrorRatioAboveStable",
            f"({of('error_ratio', c.candidate)} - ignoring (revision) {of('error_ratio', c.stable)}) "
            f"> {_number(c.max_error_ratio_delta)} {enough}",
            "warning",
            f"Canary {c.candidate} of {c.model} fails more requests than {c.stable}",
            f"The share of failed requests of {versus} is higher by {{{{ $value | humanizePercentage }}}} (the gate "
            f"allows {_number(c.max_error_ratio_delta * 100)} points): hold the rollout or roll back.",
            for_="15m",
            labels=labels,
        ),
        _alert(
            "CanaryTtftRegression",
            f"{of('ttft_p95', c.candidate)} / ignoring (revision) {of('ttft_p95', c.stable)} "
            f"> {_number(c.max_ttft_p95_ratio)} {enough}",
            "warning",
            f"Canary {c.candidate} of {c.model}: TTFT p95 {_VALUE}x stable's",
            f"Time to first token p95 of {versus} is {_VALUE} times stable's (the gate allows "
            f"{_number(c.max_ttft_p95_ratio)}).",
            for_="15m",
            labels=labels,
        ),
        _alert(
            "CanaryItlRegression",
            f"{of('itl_p95', c.candidate)} / ignoring (revision) {of('itl_p95', c.stable)} "
            f"> {_number(c.max_itl_p95_ratio)} {enough}",
            "warning",
            f"Canary {c.candidate} of {c.model}: inter-token latency p95 {_VALUE}x stable's",
            f"Inter-token latency p95 of {versus} is {_VALUE} times stable's (the gate allows "
            f"{_number(c.max_itl_p95_ratio)}).",
            for_="15m",
            labels=labels,
        ),
    ]


def _model_recording(namespace: str) -> list[dict[str, Any]]:
    ns = ("namespace", "=", namespace)
    return [
        {
            "record": "model_name:vllm_generation_tokens:rate1m",
            "expr": f"sum by (model_name) (rate({_sel('vllm:generation_tokens_total', ns)}[1m]))",
        },
        {
            "record": "model_name:vllm_prompt_tokens:rate1m",
            "expr": f"sum by (model_name) (rate({_sel('vllm:prompt_tokens_total', ns)}[1m]))",
        },
    ]


# --------------------------------------------------------------------------------------------------- features


def _gpu_alerts() -> list[dict[str, Any]]:
    gpu = f"GPU {_label('gpu')} ({_label('modelName')}, {_label('UUID')}) on {_label('Hostname')}"
    return [
        _alert(
            "GpuUtilisationHigh",
            "DCGM_FI_DEV_GPU_UTIL > 90",
            "info",
            f"GPU {_label('gpu')} on {_label('Hostname')} above 90% utilisation",
            f"{gpu} has been above 90% utilisation for 5 minutes (now {_VALUE}%). Check queueing and TTFT before "
            "adding capacity.",
            for_="5m",
        ),
        _alert(
            "GpuXidError",
            "DCGM_FI_DEV_XID_ERRORS != 0",
            "critical",
            f"XID error on GPU {_label('gpu')} on {_label('Hostname')}",
            f"{gpu} reported XID error {_VALUE}.",
        ),
        _alert(
            "GpuEccDoubleBitErrors",
            # DBE counters are not in dcgm-exporter's default counters (enable them with a custom counters CSV);
            # uncorrectable row remaps are, and are the same fault on HBM GPUs (A100, H100, H200).
            "increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[10m]) > 0"
            " or increase(DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS[10m]) > 0",
            "critical",
            f"Uncorrectable memory errors on GPU {_label('gpu')} on {_label('Hostname')}",
            f"{gpu} counted {_VALUE} uncorrectable (double-bit) memory errors in the last 10 minutes.",
        ),
    ]


def _gateway_recording() -> list[dict[str, Any]]:
    usage = _sel("gen_ai_client_token_usage_sum", ("gen_ai_token_type", "=~", "input|output"))
    tenant_usage = _sel(
        "gen_ai_client_token_usage_sum", ("gen_ai_token_type", "=~", "input|output"), (TENANT_METRIC_LABEL, "!=", "")
    )
    # The client id is `<tenant>.<slot>` (two key slots per tenant): the slot is dropped.
    by_tenant = (
        f'label_replace(rate({tenant_usage}[1m]), "tenant", "$1", "{TENANT_METRIC_LABEL}", "(.+?)(?:\\\\.[ab])?")'
    )
    return [
        {
            "record": "gen_ai_request_model_gen_ai_token_type:gen_ai_client_token_usage:rate1m",
            "expr": f"sum by (gen_ai_request_model, gen_ai_token_type) (rate({usage}[1m]))",
        },
        {
            "record": "tenant_gen_ai_token_type:gen_ai_client_token_usage:rate1m",
            "expr": f"sum by (tenant, gen_ai_token_type) ({by_tenant})",
        },
    ]


def _namespace_regex(namespaces: Sequence[str]) -> str:
    return "|".join(sorted(set(namespaces)))


def _platform_alerts(namespaces: Sequence[str]) -> list[dict[str, Any]]:
    ns = ("namespace", "=~", _namespace_regex(namespaces))
    restarts = _sel("kube_pod_container_status_restarts_total", ns)
    oom = _sel("kube_pod_container_status_last_terminated_reason", ns, ("reason", "=", "OOMKilled"))
    crash = _sel("kube_pod_container_status_waiting_reason", ns, ("reason", "=", "CrashLoopBackOff"))
    container = f"Container {_label('container')} of pod {_label('namespace')}/{_label('pod')}"
    return [
        _alert(
            "PodOomKilledRepeatedly",
            f"sum by (namespace, pod, container) (increase({restarts}[1d])) * on (namespace, pod, container) "
            f"max by (namespace, pod, container) (max_over_time({oom}[1d])) > 3",
            "warning",
            f"{_label('namespace')}/{_label('pod')} OOM-killed repeatedly",
            f"{container} restarted {_VALUE} times in the last day and was OOM-killed.",
        ),
        _alert(
            "PodCrashLooping",
            f"max by (namespace, pod, container) ({crash}) >= 1",
            "warning",
            f"{_label('namespace')}/{_label('pod')} is crash-looping",
            f"{container} has been in CrashLoopBackOff for 15 minutes.",
            for_="15m",
        ),
    ]


def _cert_manager_alerts() -> list[dict[str, Any]]:
    return [
        _alert(
            "CertificateExpiringSoon",
            "(certmanager_certificate_expiration_timestamp_seconds > 0) - time() < 14 * 86400",
            "warning",
            f"Certificate {_label('name')} expires within 14 days",
            f"cert-manager Certificate {_label('name')} (issuer {_label('issuer_name')}) expires in "
            "{{ $value | humanizeDuration }} and has not been renewed.",
            for_="1h",
        )
    ]


def _harbor_alerts() -> list[dict[str, Any]]:
    return [
        _alert(
            "HarborDown",
            "harbor_up == 0 or absent(harbor_up)",
            "critical",
            "Harbor registry down",
            f"Harbor component {_label('component')} has been down (or the Harbor exporter unscraped) for 5 minutes: "
            "image pulls and model rollouts fail.",
            for_="5m",
        )
    ]


def _elasticsearch_alerts() -> list[dict[str, Any]]:
    claims = ("persistentvolumeclaim", "=~", ES_DATA_CLAIMS)
    es_free = "elasticsearch_filesystem_data_available_bytes / elasticsearch_filesystem_data_size_bytes"
    available = _sel("kubelet_volume_stats_available_bytes", claims)
    pvc_free = f"{available} / {_sel('kubelet_volume_stats_capacity_bytes', claims)}"
    where = f"{_label('name')}{_label('persistentvolumeclaim')}"
    rules = [
        _alert(
            "ElasticsearchDown",
            'elasticsearch_cluster_health_status{color="red"} == 1 or elasticsearch_cluster_health_up == 0',
            "critical",
            "Elasticsearch cluster red or unreachable",
            f"Elasticsearch cluster {_label('cluster')} has been red (or its health endpoint unreachable) for 5 "
            "minutes: logs and the audit trail are not being written.",
            for_="5m",
        )
    ]
    for name, limit, severity, watermark in (
        ("ElasticsearchDiskLowWatermark", "0.15", "warning", "low (85%)"),
        ("ElasticsearchDiskHighWatermark", "0.1", "critical", "high (90%)"),
    ):
        rules.append(
            _alert(
                name,
                f"({es_free} < {limit}) or ({pvc_free} < {limit})",
                severity,
                f"Elasticsearch data disk past the {watermark} watermark",
                f"Elasticsearch data volume {where} has {{{{ $value | humanizePercentage }}}} free, past the "
                f"{watermark} disk watermark.",
                for_="5m",
            )
        )
    return rules


# --------------------------------------------------------------------------------------------------- API


def build_rule_groups(
    models: Sequence[ModelSlo],
    namespace: str,
    features: set[str],
    *,
    platform_namespaces: Sequence[str] = (),
    comparisons: Sequence[RevisionComparison] = (),
) -> list[dict[str, Any]]:
    """The `groups` of a Prometheus rule file for `models` served in `namespace`.

    `features` (a subset of FEATURES) adds the GPU, gateway, Harbor, Elasticsearch and cert-manager groups.
    Pod-level platform alerts (OOM kills, crash loops) watch `namespace` and `platform_namespaces`.
    """
    if not _is_dns_label(namespace):
        raise ValueError(f"namespace={namespace!r} is not a Kubernetes namespace name (RFC 1123 label)")
    for i, extra in enumerate(platform_namespaces):
        if not _is_dns_label(extra):
            raise ValueError(f"platform_namespaces[{i}]={extra!r} is not a Kubernetes namespace name")
    unknown = set(features) - FEATURES
    if unknown:
        raise ValueError(f"features: unknown {sorted(unknown)}; choose from {sorted(FEATURES)}")
    seen: dict[str, int] = {}
    workloads: dict[str, int] = {}
    for i, slo in enumerate(models):
        if not isinstance(slo, ModelSlo):
            raise ValueError(f"models[{i}] must be a ModelSlo, got {type(slo).__name__}")
        if slo.model in seen:
            raise ValueError(f"models[{i}].model={slo.model!r} repeats models[{seen[slo.model]}]")
        seen[slo.model] = i
        if not slo.workload_name:
            raise ValueError(f"models[{i}].workload: cannot derive a Kubernetes name from {slo.model!r}; set it")
        if slo.workload_name in workloads:
            raise ValueError(
                f"models[{i}].workload={slo.workload_name!r} repeats models[{workloads[slo.workload_name]}]"
            )
        workloads[slo.workload_name] = i

    groups: list[dict[str, Any]] = []
    if models:
        alerts = [rule for slo in models for rule in _model_alerts(slo, namespace)]
        groups.append({"name": "privatellm-models", "rules": alerts})
    groups.append({"name": "privatellm-models-recording", "rules": _model_recording(namespace)})
    if any(slo.revisions for slo in models):
        rules = _revision_recording(namespace) + [a for c in comparisons for a in _comparison_alerts(c)]
        groups.append({"name": "privatellm-revisions", "rules": rules})
    groups.append({"name": "privatellm-platform", "rules": _platform_alerts([namespace, *platform_namespaces])})
    if "gpu" in features:
        groups.append({"name": "privatellm-gpu", "rules": _gpu_alerts()})
    if "gateway" in features:
        groups.append({"name": "privatellm-gateway-recording", "rules": _gateway_recording()})
    if "cert-manager" in features:
        groups.append({"name": "privatellm-cert-manager", "rules": _cert_manager_alerts()})
    if "harbor" in features:
        groups.append({"name": "privatellm-harbor", "rules": _harbor_alerts()})
    if "elasticsearch" in features:
        groups.append({"name": "privatellm-elasticsearch", "rules": _elasticsearch_alerts()})
    return groups


def rule_file_yaml(groups: Sequence[dict[str, Any]]) -> str:
    """A Prometheus rule file (`promtool check rules` input); the same `groups` go into a PrometheusRule spec."""
    return yaml.safe_dump({"groups": list(groups)}, sort_keys=False, width=1_000_000, allow_unicode=True)
