"""Grafana dashboards: PromQL parses, metric names are allow-listed, JSON is importable, variables and features."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import promql_parser
import pytest

from infra.observability import dashboards as d
from infra.observability.ilm import AUDIT_DATASOURCE_UID, AUDIT_PROPERTIES, REVISION_AUDIT_PROPERTIES
from infra.observability.rules import REVISION_RECORDS

MODELS = ["llama-3.1-8b-instruct", "qwen2.5-coder-32b"]
NAMESPACE = "inference"
ALL = {"gpu", "gateway", "audit-log"}

# Grafana's interval macros are not PromQL; they are replaced by a duration before parsing. Other variables only
# ever appear inside label-matcher strings, where they parse as they are.
_MACROS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\)$")


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return d.build_dashboards(MODELS, NAMESPACE, ALL, revisions=True)


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", []) or []


def content_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(board) if p["type"] != "row"]


def exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p.get("targets") or [] if t["datasource"]["type"] == "prometheus"]


def parse(expr: str) -> promql_parser.Expr:
    return promql_parser.parse(_MACROS.sub("5m", expr))


def selector_names(expr: str) -> list[str | None]:
    names: list[str | None] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            names.append(node.name)
        return True

    promql_parser.walk(parse(expr), visit)
    return names


def unknown_metrics(expr: str) -> list[str | None]:
    allowed = d.allowed_series()
    return [n for n in selector_names(expr) if n not in allowed]


def test_every_expression_parses(boards: dict[str, dict[str, Any]]) -> None:
    seen = 0
    for board in boards.values():
        for expr in exprs(board):
            parse(expr)  # raises ValueError on a syntax error
            seen += 1
    assert seen >= 40


def test_parser_rejects_broken_promql() -> None:
    with pytest.raises(ValueError):
        parse("sum(rate(vllm:generation_tokens_total[$__rate_interval])")


def test_every_selector_is_allow_listed(boards: dict[str, dict[str, Any]]) -> None:
    bad = {(name, expr) for board in boards.values() for expr in exprs(board) for name in unknown_metrics(expr)}
    assert not bad


def test_allow_list_catches_retired_and_nameless_selectors() -> None:
    assert unknown_metrics("avg(vllm:gpu_cache_usage_perc)") == ["vllm:gpu_cache_usage_perc"]
    assert unknown_metrics('sum({__name__=~"vllm:.*"})') == [None]
    assert unknown_metrics("vllm:prefix_cache_hits") == ["vllm:prefix_cache_hits"]  # counters carry _total
    assert unknown_metrics("vllm:kv_cache_usage_perc") == []


def test_allow_list_is_data_with_sources() -> None:
    names = [m.name for m in d.METRICS]
    assert len(names) == len(set(names))
    for metric in d.METRICS:
        assert metric.component and metric.source, metric
        # prometheus_client (vLLM) appends _total to counters; Envoy's exposition does not.
        if metric.component == "vllm" and metric.kind == "counter":
            assert metric.name.endswith("_total"), metric
        assert not metric.name.endswith(("_bucket", "_sum", "_count")), metric
    assert "vllm:time_to_first_token_seconds_bucket" in d.allowed_series()
    assert "vllm:time_to_first_token_seconds" not in d.allowed_series()


def test_every_metric_in_the_allow_list_is_used(boards: dict[str, dict[str, Any]]) -> None:
    used = {n for board in boards.values() for e in exprs(board) for n in selector_names(e)}
    for board in boards.values():
        for var in board["templating"]["list"]:
            m = _LABEL_VALUES.match(var.get("query") or "") if isinstance(var.get("query"), str) else None
            if m:
                used |= set(selector_names(m["selector"]))
    unused = {m.name for m in d.METRICS if not set(m.series()) & used}
    assert not unused


def test_variable_queries_use_allow_listed_metrics(boards: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for board in boards.values():
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = _LABEL_VALUES.match(var["query"])
            assert m, var["query"]
            assert not unknown_metrics(m["selector"]), var["query"]
            assert var["datasource"]["uid"] == "${datasource}"
            checked += 1
    assert checked == 4


def test_json_round_trips(boards: dict[str, dict[str, Any]]) -> None:
    for name, board in boards.items():
        assert json.loads(json.dumps(board)) == board, name
        assert board["uid"] and len(board["uid"]) <= 40
        assert board["title"].startswith("Private LLM")
    data = d.dashboard_configmaps_data(MODELS, NAMESPACE, ALL, revisions=True)
    assert set(data) == set(boards)
    for name, text in data.items():
        assert json.loads(text) == boards[name]
        assert len(text.encode()) < 1024 * 1024  # a ConfigMap holds at most 1 MiB
    assert len({b["uid"] for b in boards.values()}) == len(boards)


def test_every_panel_has_datasource_title_unit_description(boards: dict[str, dict[str, Any]]) -> None:
    for name, board in boards.items():
        for panel in content_panels(board):
            where = (name, panel.get("title"))
            assert panel.get("title"), where
            assert panel.get("description"), where
            assert panel["fieldConfig"]["defaults"].get("unit"), where
            assert panel["targets"], where
            if panel["datasource"]["type"] == "elasticsearch":
                assert panel["datasource"] == {"type": "elasticsearch", "uid": AUDIT_DATASOURCE_UID}, where
            else:
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], where
                assert target["refId"], where
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"


def test_panel_ids_unique(boards: dict[str, dict[str, Any]]) -> None:
    for name, board in boards.items():
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), name
        assert all(isinstance(i, int) and i > 0 for i in ids), name


def test_model_variable(boards: dict[str, dict[str, Any]]) -> None:
    board = boards[d.INFERENCE]
    var = {v["name"]: v for v in board["templating"]["list"]}["model"]
    assert var["type"] == "query"
    assert var["multi"] and var["includeAll"]
    assert "allValue" not in var  # "All" = the listed models, not every model in the namespace
    assert var["query"] == f'label_values(vllm:num_requests_running{{namespace="{NAMESPACE}"}}, model_name)'
    pattern = re.compile(var["regex"].strip("/").replace("\\/", "/"))
    assert all(pattern.fullmatch(m) for m in MODELS)
    assert not pattern.fullmatch("llama-3.1-8b-instructX")
    vllm_exprs = [e for e in exprs(board) if "vllm:" in e]
    assert vllm_exprs
    for expr in vllm_exprs:
        assert re.search(r'model_name=~?"\$model"', expr), expr
        assert f'namespace="{NAMESPACE}"' in expr, expr
    repeated = [p for p in panels(board) if p.get("repeat") == "model"]
    assert len(repeated) == 1 and repeated[0]["type"] == "row"


def test_inference_covers_required_signals(boards: dict[str, dict[str, Any]]) -> None:
    text = "\n".join(exprs(boards[d.INFERENCE]))
    for needle in (
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:request_time_per_output_token_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:generation_tokens_total",
        "vllm:prompt_tokens_total",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_queries_total",
        "vllm:num_preemptions_total",
    ):
        assert needle in text, needle
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, model_name) (rate(vllm:time_to_first_token" in text


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        (set(), {d.INFERENCE, d.PLATFORM}),
        ({"gpu"}, {d.INFERENCE, d.PLATFORM, d.GPUS}),
        ({"gateway"}, {d.INFERENCE, d.PLATFORM, d.GATEWAY}),
        ({"gpu", "gateway"}, {d.INFERENCE, d.PLATFORM, d.GPUS, d.GATEWAY}),
    ],
)
def test_feature_selection(features: set[str], expected: set[str]) -> None:
    built = d.build_dashboards(MODELS, NAMESPACE, features)
    assert set(built) == expected
    metrics = {n for b in built.values() for e in exprs(b) for n in selector_names(e) if n}
    assert any(n.startswith("DCGM_") for n in metrics) == ("gpu" in features)
    assert any(n.startswith(("gen_ai_", "envoy_")) for n in metrics) == ("gateway" in features)


def test_unknown_feature_rejected() -> None:
    with pytest.raises(ValueError, match="unknown dashboard features"):
        d.build_dashboards(MODELS, NAMESPACE, {"gpus"})


def test_gateway_rejections_and_tenants(boards: dict[str, dict[str, Any]]) -> None:
    text = "\n".join(exprs(boards[d.GATEWAY]))
    assert "envoy_cluster_ratelimit_over_limit" in text
    assert "envoy_http_api_key_auth_unauthorized" in text
    assert "gen_ai_token_type" in text and "tenant_id" in text
    for expr in exprs(boards[d.GATEWAY]):
        assert f'namespace="{d.GATEWAY_NAMESPACE}"' in expr, expr


def test_sidecar_label_matches_chart_default() -> None:
    assert d.SIDECAR_LABEL == {"grafana_dashboard": "1"}


def audit_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in content_panels(board) if p["datasource"]["type"] == "elasticsearch"]


def test_rejections_per_tenant_come_from_the_audit_log(boards: dict[str, dict[str, Any]]) -> None:
    [panel] = [p for p in audit_panels(boards[d.GATEWAY]) if p["title"].startswith("Rejections")]
    [target] = panel["targets"]
    assert target["query"] == d.AUDIT_REJECTIONS_QUERY
    assert "status:(403 OR 413 OR 429)" in target["query"] and 'NOT tenant:"-"' in target["query"]
    grouped = [a["field"] for a in target["bucketAggs"] if a["type"] == "terms"]
    assert grouped == ["tenant", "status"]
    # the fields it groups on are keywords / numbers in the audit index template, not analysed text
    assert {AUDIT_PROPERTIES[f]["type"] for f in grouped} == {"keyword", "integer"}
    assert target["bucketAggs"][-1] == {
        "field": "@timestamp",
        "id": "4",
        "settings": {"interval": "auto", "min_doc_count": "0"},
        "type": "date_histogram",
    }
    without = d.build_dashboards(MODELS, NAMESPACE, {"gateway"})
    assert audit_panels(without[d.GATEWAY]) == []


def test_gateway_namespace_follows_the_stack() -> None:
    board = d.build_dashboards(MODELS, NAMESPACE, {"gateway"}, gateway_namespace="ai-entry")[d.GATEWAY]
    assert all('namespace="ai-entry"' in e for e in exprs(board))


def revision_row(board: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels of the inference board's Revisions row (between its header and the next row)."""
    out: list[dict[str, Any]] = []
    inside = False
    for panel in board["panels"]:
        if panel["type"] == "row":
            inside = panel["title"] == "Revisions"
        elif inside:
            out.append(panel)
    return out


def test_revisions_row_compares_revisions_from_the_recording_rules(boards: dict[str, dict[str, Any]]) -> None:
    panels_ = revision_row(boards[d.INFERENCE])
    assert [p["title"] for p in panels_] == [
        "TTFT p95 by revision",
        "Inter-token latency p95 by revision",
        "Failed requests by revision",
        "Finished requests by revision",
    ]
    for panel, record in zip(panels_, ("ttft_p95", "itl_p95", "error_ratio", "requests"), strict=True):
        [target] = panel["targets"]
        assert target["expr"] == REVISION_RECORDS[record] + '{model_name=~"$model"}'
        assert "{{revision}}" in target["legendFormat"]


def test_revision_panels_only_with_revisions() -> None:
    without = d.build_dashboards(MODELS, NAMESPACE, ALL)
    assert revision_row(without[d.INFERENCE]) == []
    assert not any(REVISION_RECORDS["requests"] in e for b in without.values() for e in exprs(b))
    assert [p["title"] for p in audit_panels(without[d.GATEWAY])] == ["Rejections by tenant (audit log)"]


def test_answers_by_revision_come_from_the_audit_log(boards: dict[str, dict[str, Any]]) -> None:
    [panel] = [p for p in audit_panels(boards[d.GATEWAY]) if p["title"] == "Answers by revision (audit log)"]
    [target] = panel["targets"]
    assert target["query"] == d.AUDIT_BACKENDS_QUERY
    grouped = [a["field"] for a in target["bucketAggs"] if a["type"] == "terms"]
    assert grouped == ["backend", "status"]
    assert REVISION_AUDIT_PROPERTIES["backend"]["type"] == "keyword" and AUDIT_PROPERTIES["status"]["type"] == "integer"
