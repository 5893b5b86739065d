"""Canary and A/B rollouts between a model's revisions: is the candidate fit for its next step, and is a stack change
safe to apply.

`check_rollout` judges the candidate revision against the stable one over the gate's window, from the same series the
canary alerts read (vLLM's metrics with the `revision` label the ServiceMonitor adds) and, when given, the gateway's
audit log in Elasticsearch (5xx answers by serving backend). Every gate is pass, hold (not enough evidence yet) or fail;
the report names the next weight from the gate's steps. Nothing here writes: promotion and rollback are stack changes
applied with `pulumi up`, which `removal_problems` checks against the previous stack file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import requests

from infra.config import BASE_REVISION, GateSpec, ModelDeploymentSpec, PlatformSpec, RevisionSpec
from infra.observability.ilm import AUDIT_PREFIX
from infra.observability.rules import ERROR_FINISH_REASONS
from infra.placement import plan_models

Verdict = Literal["pass", "hold", "fail"]
TIMEOUT_SECONDS = 15
MAX_RESPONSE = 4 * 1024 * 1024
"""A query answer is a few hundred bytes; anything beyond this is not the API we asked."""


NOT_YET = "not judged before the sample is complete"


class RolloutError(Exception):
    """The check could not be made (unknown model, unreachable or unexpected Prometheus/Elasticsearch)."""


@dataclass(frozen=True)
class GateResult:
    gate: str
    verdict: Verdict
    measured: str
    limit: str
    detail: str


@dataclass(frozen=True)
class RolloutReport:
    model: str
    served_model_name: str
    stable: str
    candidate: str
    weights: dict[str, int]
    gates: list[GateResult]
    verdict: Verdict
    next_weight: int
    next_step: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------- clients


@dataclass
class HttpSource:
    """A JSON API over HTTP(S): Prometheus' query API or Elasticsearch's search API."""

    url: str
    what: str
    ca_file: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", self.url):
            raise RolloutError(f"--{self.what.lower()}: {self.url!r} is not an http(s):// URL")
        self.url = self.url.rstrip("/")

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(
                method,
                f"{self.url}{path}",
                headers=self.headers,
                auth=self.auth,
                verify=str(self.ca_file) if self.ca_file else True,
                timeout=TIMEOUT_SECONDS,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise RolloutError(f"{self.what} at {self.url} cannot be reached: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise RolloutError(f"{self.what} at {self.url} refused the credentials (HTTP {response.status_code})")
        if len(response.content) > MAX_RESPONSE:
            raise RolloutError(f"{self.what} at {self.url} answered more than {MAX_RESPONSE // 1024 // 1024} MiB")
        try:
            body = response.json()
        except ValueError:
            status = response.status_code
            raise RolloutError(f"{self.what} at {self.url}{path} answered HTTP {status}, not JSON") from None
        if response.status_code >= 400:
            reason = body.get("error") if isinstance(body, dict) else None
            raise RolloutError(f"{self.what} at {self.url}{path} answered HTTP {response.status_code}: {reason!s:.300}")
        return body


class Prometheus:
    def __init__(self, source: HttpSource) -> None:
        self.source = source

    def value(self, query: str) -> float | None:
        """The single number an aggregated instant query gives; None when it gives nothing (no series) or NaN."""
        body = self.source.request("GET", "/api/v1/query", params={"query": query})
        data = body.get("data") if isinstance(body, dict) and body.get("status") == "success" else None
        if not isinstance(data, dict):
            raise RolloutError(f"Prometheus at {self.source.url} did not answer a query result for {query}")
        result = data.get("result")
        if data.get("resultType") == "scalar":
            result = [{"value": result}]
        if not isinstance(result, list):
            raise RolloutError(f"Prometheus at {self.source.url}: unexpected result for {query}")
        if not result:
            return None
        if len(result) > 1:
            raise RolloutError(f"Prometheus at {self.source.url}: {query} gave {len(result)} series, expected one")
        try:
            number = float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise RolloutError(f"Prometheus at {self.source.url}: unexpected sample for {query}") from None
        return None if math.isnan(number) or math.isinf(number) else number


@dataclass(frozen=True)
class AuditCounts:
    requests: int
    server_errors: int


class AuditLog:
    """The gateway's access log in Elasticsearch (`privatellm-audit-*`): answers per serving backend."""

    def __init__(self, source: HttpSource) -> None:
        self.source = source

    def by_backend(self, served_name: str, window_minutes: int) -> dict[str, AuditCounts]:
        body = self.source.request(
            "POST",
            f"/{AUDIT_PREFIX}-*/_search",
            json={
                "size": 0,
                "query": {
                    "bool": {
                        "filter": [
                            {"term": {"model": served_name}},
                            {"range": {"@timestamp": {"gte": f"now-{window_minutes}m"}}},
                        ]
                    }
                },
                "aggs": {
                    "backends": {
                        "terms": {"field": "backend", "size": 100},
                        "aggs": {"server_errors": {"filter": {"range": {"status": {"gte": 500}}}}},
                    }
                },
            },
        )
        try:
            buckets = body["aggregations"]["backends"]["buckets"]
            counts: dict[str, AuditCounts] = {}
            for bucket in buckets:
                service = backend_service(str(bucket["key"]))
                before = counts.get(service, AuditCounts(0, 0))
                counts[service] = AuditCounts(
                    before.requests + int(bucket["doc_count"]),
                    before.server_errors + int(bucket["server_errors"]["doc_count"]),
                )
        except (KeyError, TypeError, ValueError):
            raise RolloutError(f"Elasticsearch at {self.source.url}: unexpected answer to the audit search") from None
        return counts


def backend_service(backend: str) -> str:
    """The AIServiceBackend (= the revision's Service) of an audit record's `backend`: the AI Gateway names a route
    rule's backend `<namespace>/<AIServiceBackend>/route/<route>/rule/<i>/ref/<j>`."""
    parts = backend.split("/")
    return parts[1] if len(parts) > 2 else backend


# ------------------------------------------------------------------------------------------------------ gates


def find_model(spec: PlatformSpec, name: str) -> tuple[int, ModelDeploymentSpec]:
    for i, m in enumerate(spec.models):
        if name in (m.name, m.served_name):
            return i, m
    known = ", ".join(m.name for m in spec.models) or "none"
    raise RolloutError(f"--model {name!r} is not a model of this stack (models: {known})")


def pods_of(workload: str, multi_node: bool) -> str:
    """A regular expression for the pods of one workload, and not those of `<workload>-<revision>`: a Deployment's
    are `<name>-<template hash>-<5 characters>`, a LeaderWorkerSet's `<name>-<group>[-<index>]`."""
    if not re.fullmatch(r"[a-z0-9-]+", workload):  # a DNS label: nothing to escape in a PromQL regex string
        raise RolloutError(f"workload name {workload!r} is not a DNS label")
    name = workload
    return rf"{name}-[0-9]+(-[0-9]+)?" if multi_node else rf"{name}-[a-z0-9]{{1,10}}-[a-z0-9]{{5}}"


def _selector(namespace: str, served: str, revision: str, *extra: str) -> str:
    labels = [f'namespace="{namespace}"', f'model_name="{_escape(served)}"', f'revision="{revision}"', *extra]
    return "{" + ",".join(labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class Measures:
    """What one revision did over the window."""

    requests: float | None
    failed: float
    ttft_p95: float | None
    itl_p95: float | None

    @property
    def error_ratio(self) -> float | None:
        if not self.requests:
            return None
        return self.failed / self.requests


def measure(prometheus: Prometheus, namespace: str, served: str, revision: str, window: int) -> Measures:
    sel = _selector(namespace, served, revision)
    failed = _selector(namespace, served, revision, f'finished_reason=~"{"|".join(ERROR_FINISH_REASONS)}"')

    def p95(metric: str) -> float | None:
        return prometheus.value(f"histogram_quantile(0.95, sum by (le) (rate({metric}_bucket{sel}[{window}m])))")

    return Measures(
        requests=prometheus.value(f"sum(increase(vllm:request_success_total{sel}[{window}m]))"),
        failed=prometheus.value(f"sum(increase(vllm:request_success_total{failed}[{window}m]))") or 0.0,
        ttft_p95=p95("vllm:time_to_first_token_seconds"),
        itl_p95=p95("vllm:inter_token_latency_seconds"),
    )


def _ratio_gate(
    gate: str, candidate: float | None, stable: float | None, limit: float, sampled: bool, what: str
) -> GateResult:
    bound = f"<= {limit:g}x stable"
    if candidate is None or stable is None or stable <= 0:
        return GateResult(gate, "hold", "no data", bound, f"no {what} for both revisions over the window yet")
    ratio = candidate / stable
    measured = f"{ratio:.2f}x ({candidate * 1000:.0f} ms vs {stable * 1000:.0f} ms)"
    if not sampled:
        return GateResult(gate, "hold", measured, bound, NOT_YET)
    if ratio > limit:
        return GateResult(gate, "fail", measured, bound, f"the candidate's {what} is {ratio:.2f} times stable's")
    return GateResult(gate, "pass", measured, bound, f"{what} within the gate")


def judge(
    gate: GateSpec,
    candidate: Measures,
    stable: Measures,
    candidate_age_s: float | None,
    audit: tuple[AuditCounts | None, AuditCounts | None] | None = None,
) -> list[GateResult]:
    """The verdict of every gate from the measurements (pure: tested without Prometheus)."""
    results = []
    need = (gate.warmup_minutes + gate.window_minutes) * 60
    warm_limit = f">= {gate.warmup_minutes + gate.window_minutes} min (warm-up + window)"
    if candidate_age_s is None:
        results.append(GateResult("warmup", "hold", "no pod", warm_limit, "no running pod of the candidate found"))
    elif candidate_age_s < need:
        results.append(
            GateResult(
                "warmup",
                "hold",
                f"{candidate_age_s / 60:.0f} min",
                warm_limit,
                f"the candidate's newest pod needs {math.ceil((need - candidate_age_s) / 60)} more minutes",
            )
        )
    else:
        results.append(GateResult("warmup", "pass", f"{candidate_age_s / 60:.0f} min", warm_limit, "warm"))

    n_cand = candidate.requests or 0.0
    n_stable = stable.requests or 0.0
    sample_limit = f">= {gate.min_requests} requests"
    sampled = n_cand >= gate.min_requests and n_stable > 0
    if sampled:
        results.append(GateResult("sample", "pass", f"{n_cand:.0f} requests", sample_limit, "enough to judge"))
    else:
        detail = (
            "stable finished no request in the window"
            if n_stable <= 0
            else f"{gate.min_requests - n_cand:.0f} more candidate requests needed"
        )
        results.append(GateResult("sample", "hold", f"{n_cand:.0f} requests", sample_limit, detail))

    delta_limit = f"<= stable + {gate.max_error_ratio_delta * 100:g} points"
    c_err, s_err = candidate.error_ratio, stable.error_ratio
    if c_err is None or s_err is None:
        results.append(GateResult("errors", "hold", "no data", delta_limit, "no finished requests to compare"))
    else:
        measured = f"{c_err * 100:.2f}% vs {s_err * 100:.2f}%"
        if not sampled:
            results.append(GateResult("errors", "hold", measured, delta_limit, NOT_YET))
        elif c_err - s_err > gate.max_error_ratio_delta:
            results.append(
                GateResult("errors", "fail", measured, delta_limit, f"{(c_err - s_err) * 100:.2f} points more failures")
            )
        else:
            results.append(GateResult("errors", "pass", measured, delta_limit, "failures within the gate"))

    results.append(
        _ratio_gate("ttft_p95", candidate.ttft_p95, stable.ttft_p95, gate.max_ttft_p95_ratio, sampled, "TTFT p95")
    )
    results.append(
        _ratio_gate(
            "itl_p95", candidate.itl_p95, stable.itl_p95, gate.max_itl_p95_ratio, sampled, "inter-token latency p95"
        )
    )

    if audit is not None:
        c, s = audit
        if c is None or s is None or not c.requests or not s.requests:
            results.append(GateResult("audit_5xx", "hold", "no data", delta_limit, "no audit records for both yet"))
        else:
            c_5xx, s_5xx = c.server_errors / c.requests, s.server_errors / s.requests
            measured = f"{c_5xx * 100:.2f}% vs {s_5xx * 100:.2f}% ({c.requests} records)"
            if c.requests < gate.min_requests:
                results.append(GateResult("audit_5xx", "hold", measured, delta_limit, "too few audit records"))
            elif c_5xx - s_5xx > gate.max_error_ratio_delta:
                results.append(
                    GateResult("audit_5xx", "fail", measured, delta_limit, "the gateway answered more 5xx for it")
                )
            else:
                results.append(GateResult("audit_5xx", "pass", measured, delta_limit, "5xx within the gate"))
    return results


def verdict_of(results: list[GateResult]) -> Verdict:
    verdicts = {r.verdict for r in results}
    return "fail" if "fail" in verdicts else "hold" if "hold" in verdicts else "pass"


def next_weight(gate: GateSpec, weight: int, verdict: Verdict) -> int:
    if verdict == "fail":
        return 0
    if verdict == "hold":
        return weight
    return next((step for step in gate.steps if step > weight), 100)


def _where(i: int, model: ModelDeploymentSpec, revision: RevisionSpec) -> str:
    return f"models[{i}].revisions[{model.revisions.index(revision)}]"


def next_step(
    spec: PlatformSpec, i: int, model: ModelDeploymentSpec, stable: RevisionSpec, candidate: RevisionSpec, weight: int
) -> str:
    """The stack change that takes the next step (or rolls back), in words."""
    c_at, s_at = _where(i, model, candidate), _where(i, model, stable)
    if weight == candidate.weight:
        return f"keep the weights (candidate {candidate.label} at {candidate.weight}) and check again later"
    change = f"set {c_at}.weight to {weight} and {s_at}.weight to {100 - weight}, then `pulumi up`"
    if weight == 0:
        return f"roll back: {change}; {stable.label} was never changed and takes everything again"
    if weight > 50 and candidate.name and not candidate.approved_by and spec.profile != "baseline":
        change += f" (the {spec.profile} profile needs {c_at}.approved_by first)"
    if weight == 100:
        change += f"; {stable.label} stays deployed and warm at 0 until a later change removes it"
    return change


def check_rollout(
    spec: PlatformSpec,
    project_dir: Path,
    model_name: str,
    prometheus: Prometheus,
    audit: AuditLog | None = None,
) -> RolloutReport:
    """The candidate of `model_name` (stack or served name) against its stable revision; the stack is planned first
    (a stack that does not build is reported as such, not judged)."""
    i, model = find_model(spec, model_name)
    if not model.revisions:
        raise RolloutError(f"--model {model.name}: the model has no revisions (models[{i}].revisions), nothing to roll")
    pair = model.stable_and_candidate()
    weights = {r.label: r.weight for r in model.revisions}
    if pair is None:
        serving = next(r for r in model.revisions if r.weight > 0)
        return RolloutReport(
            model.name,
            model.served_name,
            serving.label,
            "",
            weights,
            [],
            "pass",
            serving.weight,
            f"no canary in progress: {serving.label} takes all the traffic",
        )
    stable, candidate = pair
    gate = model.rollout.gate if model.rollout else GateSpec()
    namespace = spec.namespaces.inference.name
    served = model.served_name
    window = gate.window_minutes
    measured = {r.label: measure(prometheus, namespace, served, r.label, window) for r in pair}
    unit = model.revision(candidate)
    placed = next(p for p in plan_models(spec, project_dir) if p.spec.name == unit.name)
    pods = pods_of(unit.name, placed.plan.pipeline_parallel_size > 1)
    age = prometheus.value(f'time() - max(kube_pod_start_time{{namespace="{namespace}",pod=~"{pods}"}})')
    audit_counts = None
    if audit is not None:
        counts = audit.by_backend(served, window)
        audit_counts = (counts.get(unit.name), counts.get(model.revision(stable).name))
    results = judge(gate, measured[candidate.label], measured[stable.label], age, audit_counts)
    verdict = verdict_of(results)
    weight = next_weight(gate, candidate.weight, verdict)
    return RolloutReport(
        model.name,
        served,
        stable.label,
        candidate.label,
        weights,
        results,
        verdict,
        weight,
        next_step(spec, i, model, stable, candidate, weight),
    )


# ------------------------------------------------------------------------------------------------ stack changes


def removal_problems(before: PlatformSpec, after: PlatformSpec) -> list[str]:
    """What a stack change removes that still takes traffic: a revision (or a whole model's revisions) whose weight
    was above 0 in `before`. Lower it to 0 in one change, apply it, and remove it in a later one."""
    problems = []
    now = {m.name: m for m in after.models}
    for m in before.models:
        if not m.revisions:
            continue
        later = now.get(m.name)
        kept = {r.label for r in later.revisions} if later is not None and later.revisions else None
        for r in m.revisions:
            if r.weight == 0:
                continue
            if later is None:
                gone = f"model {m.name} is removed while its revision {r.label} takes {r.weight}%"
            elif kept is None:
                if r.label == BASE_REVISION:
                    continue  # the model without revisions is its unnamed revision: same objects, all the traffic
                gone = f"model {m.name} drops its revisions while {r.label} takes {r.weight}%"
            elif r.label not in kept:
                gone = f"model {m.name}: revision {r.label} is removed while it takes {r.weight}%"
            else:
                continue
            problems.append(
                f"{gone}; set its weight to 0 and apply that first (the other revision takes the traffic), then "
                "remove it in a later change"
            )
    return problems


def weight_changes(before: PlatformSpec, after: PlatformSpec) -> list[dict[str, Any]]:
    """Per revision of every model that has them before or after: its weight before and after (None: absent)."""
    rows = []
    old = {m.name: m for m in before.models}
    for m in after.models:
        previous = old.get(m.name)
        labels = [r.label for r in (previous.revisions if previous else [])]
        labels += [r.label for r in m.revisions if r.label not in labels]
        if not labels:
            continue
        was = {r.label: r.weight for r in (previous.revisions if previous else [])}
        now = {r.label: r.weight for r in m.revisions}
        for label in labels:
            rows.append({"model": m.name, "revision": label, "before": was.get(label), "after": now.get(label)})
    return rows


def audit_credentials(env: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Elasticsearch credentials from the environment (never flags, which shells keep in their history):
    ELASTICSEARCH_API_KEY, or ELASTICSEARCH_USERNAME with ELASTICSEARCH_PASSWORD."""
    if env.get("ELASTICSEARCH_API_KEY"):
        return {"Authorization": f"ApiKey {env['ELASTICSEARCH_API_KEY']}"}, None
    if env.get("ELASTICSEARCH_USERNAME"):
        return {}, (env["ELASTICSEARCH_USERNAME"], env.get("ELASTICSEARCH_PASSWORD", ""))
    return {}, None
