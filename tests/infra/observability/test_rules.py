"""Alert and recording rules: promtool checks every generated file and unit-tests every rule on synthetic series."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.observability.rules import (
    FEATURES,
    REVISION_RECORDS,
    ModelSlo,
    RevisionComparison,
    build_rule_groups,
    rule_file_yaml,
)
from tests.conftest import ROOT

NS = "inference"
LLAMA = ModelSlo("meta/llama-3.3-70b", ttft_p95_seconds=2.0, ttft_p99_seconds=4.0, workload="llama")
QWEN = ModelSlo(
    "qwen3-32b",
    ttft_p95_seconds=1.0,
    ttft_p99_seconds=2.0,
    max_waiting=5,
    error_ratio=0.1,
    workload="qwen",
    multi_node=True,
)
MODELS = [LLAMA, QWEN]


def all_groups() -> list[dict[str, Any]]:
    return build_rule_groups(MODELS, NS, set(FEATURES), platform_namespaces=("registry",))


def alert_rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def record_names(groups: list[dict[str, Any]]) -> set[str]:
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)


# ------------------------------------------------------------------------------------------ promtool check rules


@pytest.mark.parametrize(
    "features",
    [set(), {"gpu"}, {"gateway"}, {"harbor"}, {"elasticsearch"}, {"cert-manager"}, set(FEATURES)],
    ids=lambda f: "+".join(sorted(f)) or "none",
)
def test_generated_rule_files_pass_promtool_check(promtool: str, tmp_path: Path, features: set[str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rule_file_yaml(build_rule_groups(MODELS, NS, features)))
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_check_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The check above can fail: the same tool refuses a rule file with bad PromQL."""
    groups = all_groups()
    groups[0]["rules"][0]["expr"] = "sum by (model_name (broken"
    path = tmp_path / "rules.yaml"
    path.write_text(rule_file_yaml(groups))
    assert run_promtool(promtool, "check", "rules", str(path)).returncode != 0


# ------------------------------------------------------------------------------------------ promtool test rules

_LABEL = re.compile(r"\{\{ \$labels\.(\w+) \}\}")
_VALUE = re.compile(r"\{\{ \$value \| humanize\w* \}\}")


def render(template: str, labels: dict[str, str], value: str) -> str:
    """The two template forms the rules use: `{{ $labels.x }}` and `{{ $value | humanize… }}` (value given rendered)."""
    return _VALUE.sub(value, _LABEL.sub(lambda m: labels.get(m.group(1), ""), template))


def expected_alert(groups: list[dict[str, Any]], name: str, series: dict[str, str], value: str) -> dict[str, Any]:
    """exp_alerts entry: the result series' labels plus the rule's labels, annotations rendered for them."""
    candidates = [
        r
        for r in alert_rules(groups)
        if r["alert"] == name and all(series.get(k, v) == v for k, v in r["labels"].items())
    ]
    rule = next(r for r in candidates if all(k == "severity" or k in series for k in r["labels"]))
    labels = {**series, **rule["labels"]}
    # Templates see the result series' labels only, not the rule's static labels.
    annotations = {k: render(v, series, value) for k, v in rule["annotations"].items()}
    return {"exp_labels": labels, "exp_annotations": annotations}


def hist(model: str, namespace: str, counts: dict[str, int]) -> list[dict[str, str]]:
    """TTFT histogram buckets growing by `counts[le]` observations per minute (cumulative per bucket)."""
    return [
        {
            "series": f'vllm:time_to_first_token_seconds_bucket{{namespace="{namespace}", model_name="{model}", '
            f'pod="p-0", le="{le}"}}',
            "values": f"0+{n}x20",
        }
        for le, n in counts.items()
    ]


def s(series: str, values: str) -> dict[str, str]:
    return {"series": series, "values": values}


L = LLAMA.model
Q = QWEN.model
ES_PVC = "elasticsearch-data-logs-es-default-0"
GPU = 'gpu="0", UUID="GPU-1", Hostname="node-1", modelName="NVIDIA H100 80GB HBM3"'
GPU_LABELS = {"gpu": "0", "UUID": "GPU-1", "Hostname": "node-1", "modelName": "NVIDIA H100 80GB HBM3"}

# alert: (eval_time, firing series, [(labels of the result series, rendered value)], quiet series)
ALERT_CASES: dict[str, tuple[str, list[dict[str, str]], list[tuple[dict[str, str], str]], list[dict[str, str]]]] = {
    "VllmTtftP95High": (
        "15m",
        # every first token in (2, 4]: p95 = 2 + 2 * 0.95 = 3.9 > 2 (and p99 3.98 stays under its 4 s target)
        hist(L, NS, {"0.5": 0, "1": 0, "2": 0, "4": 10, "+Inf": 10}),
        [({"namespace": NS, "model_name": L}, "3.9")],
        # p95 1.95 < 2; a model of the same name in another namespace is not ours
        hist(L, NS, {"0.5": 0, "1": 0, "2": 10, "4": 10, "+Inf": 10})
        + hist(L, "other", {"0.5": 0, "1": 0, "2": 0, "4": 0, "+Inf": 10}),
    ),
    "VllmTtftP99High": (
        "15m",
        hist(Q, NS, {"0.5": 0, "1": 0, "2": 0, "4": 10, "+Inf": 10}),  # p99 3.98 > 2
        [({"namespace": NS, "model_name": Q}, "3.98")],
        hist(Q, NS, {"0.5": 0, "1": 0, "2": 10, "4": 10, "+Inf": 10})  # p99 1.99 < 2
        + hist(L, NS, {"0.5": 0, "1": 0, "2": 0, "4": 10, "+Inf": 10}),  # llama p99 3.98 < 4
    ),
    "VllmRequestsQueueing": (
        "15m",
        [s(f'vllm:num_requests_waiting{{namespace="{NS}", model_name="{L}", pod="llama-a", engine="0"}}', "12x20")],
        [({"namespace": NS, "model_name": L, "pod": "llama-a"}, "12")],
        [
            s(f'vllm:num_requests_waiting{{namespace="{NS}", model_name="{L}", pod="llama-a", engine="0"}}', "10x20"),
            s(f'vllm:num_requests_waiting{{namespace="{NS}", model_name="{Q}", pod="qwen-0", engine="0"}}', "5x20"),
            s(f'vllm:num_requests_waiting{{namespace="other", model_name="{L}", pod="x", engine="0"}}', "50x20"),
            # above the limit for 5 minutes only
            s(
                f'vllm:num_requests_waiting{{namespace="{NS}", model_name="{L}", pod="llama-b", engine="0"}}',
                "0x9 30x5",
            ),
        ],
    ),
    "VllmKvCacheNearlyFull": (
        "10m",
        [s(f'vllm:kv_cache_usage_perc{{namespace="{NS}", model_name="{Q}", pod="qwen-0", engine="0"}}', "0.95x20")],
        [({"namespace": NS, "model_name": Q, "pod": "qwen-0"}, "95%")],
        [s(f'vllm:kv_cache_usage_perc{{namespace="{NS}", model_name="{Q}", pod="qwen-0", engine="0"}}', "0.9x20")],
    ),
    "VllmPreemptions": (
        "20m",
        [s(f'vllm:num_preemptions_total{{namespace="{NS}", model_name="{L}", pod="llama-a", engine="0"}}', "0+1x20")],
        [({"namespace": NS, "model_name": L}, "15")],
        [s(f'vllm:num_preemptions_total{{namespace="{NS}", model_name="{L}", pod="llama-a", engine="0"}}', "7x20")],
    ),
    "VllmErrorRatioHigh": (
        "15m",
        [
            s(f'vllm:request_success_total{{namespace="{NS}", model_name="{L}", finished_reason="stop"}}', "0+80x20"),
            s(f'vllm:request_success_total{{namespace="{NS}", model_name="{L}", finished_reason="length"}}', "0+10x20"),
            s(f'vllm:request_success_total{{namespace="{NS}", model_name="{L}", finished_reason="abort"}}', "0+6x20"),
            s(f'vllm:request_success_total{{namespace="{NS}", model_name="{L}", finished_reason="error"}}', "0+4x20"),
        ],
        [({"namespace": NS, "model_name": L}, "10%")],
        [
            s(f'vllm:request_success_total{{namespace="{NS}", model_name="{L}", finished_reason="stop"}}', "0+98x20"),
            s(f'vllm:request_success_total{{namespace="{NS}", model_name="{L}", finished_reason="abort"}}', "0+2x20"),
            # qwen: 8 % failed, under its 10 % limit
            s(f'vllm:request_success_total{{namespace="{NS}", model_name="{Q}", finished_reason="stop"}}', "0+92x20"),
            s(f'vllm:request_success_total{{namespace="{NS}", model_name="{Q}", finished_reason="error"}}', "0+8x20"),
        ],
    ),
    "VllmNoReadyReplicas": (
        "15m",
        [
            s(f'kube_deployment_spec_replicas{{namespace="{NS}", deployment="llama"}}', "2x20"),
            s(f'kube_deployment_status_replicas_available{{namespace="{NS}", deployment="llama"}}', "0x20"),
            s(f'kube_statefulset_replicas{{namespace="{NS}", statefulset="qwen"}}', "1x20"),
            # the worker is ready, the leader (the group's server) is not
            s(f'kube_pod_status_ready{{namespace="{NS}", pod="qwen-0", condition="true"}}', "0x20"),
            s(f'kube_pod_status_ready{{namespace="{NS}", pod="qwen-0-1", condition="true"}}', "1x20"),
        ],
        [
            ({"namespace": NS, "deployment": "llama", "model_name": L, "workload": "llama"}, "2"),
            ({"namespace": NS, "statefulset": "qwen", "model_name": Q, "workload": "qwen"}, "1"),
        ],
        [
            # llama scaled to zero on purpose (KEDA), qwen's leader ready
            s(f'kube_deployment_spec_replicas{{namespace="{NS}", deployment="llama"}}', "0x20"),
            s(f'kube_deployment_status_replicas_available{{namespace="{NS}", deployment="llama"}}', "0x20"),
            s(f'kube_statefulset_replicas{{namespace="{NS}", statefulset="qwen"}}', "1x20"),
            s(f'kube_pod_status_ready{{namespace="{NS}", pod="qwen-0", condition="true"}}', "1x20"),
            s(f'kube_pod_status_ready{{namespace="{NS}", pod="qwen-0-1", condition="true"}}', "1x20"),
        ],
    ),
    "GpuUtilisationHigh": (
        "10m",
        [s(f"DCGM_FI_DEV_GPU_UTIL{{{GPU}}}", "95x20")],
        [(GPU_LABELS, "95")],
        [s(f"DCGM_FI_DEV_GPU_UTIL{{{GPU}}}", "90x20")],
    ),
    "GpuXidError": (
        "5m",
        [s(f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", "79x10")],
        [(GPU_LABELS, "79")],
        [s(f"DCGM_FI_DEV_XID_ERRORS{{{GPU}}}", "0x10")],
    ),
    "GpuEccDoubleBitErrors": (
        "20m",
        [s(f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}", "0x15 2x10")],
        [(GPU_LABELS, "2")],
        # old errors (no increase in 10 minutes) stay quiet
        [
            s(f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}", "0x5 2x20"),
            s(f"DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{{{GPU}}}", "1x25"),
        ],
    ),
    "PodOomKilledRepeatedly": (
        "26h",
        [
            s(
                'kube_pod_container_status_restarts_total{namespace="registry", pod="harbor-core-0", container="core"}',
                "0+1x30",
            ),
            s(
                'kube_pod_container_status_last_terminated_reason{namespace="registry", pod="harbor-core-0", '
                'container="core", reason="OOMKilled"}',
                "1x30",
            ),
        ],
        [({"namespace": "registry", "pod": "harbor-core-0", "container": "core"}, "24")],
        [
            # restarts for another reason; OOM kills twice a day; a namespace outside the platform
            s(f'kube_pod_container_status_restarts_total{{namespace="{NS}", pod="a", container="c"}}', "0+1x30"),
            s(
                f'kube_pod_container_status_last_terminated_reason{{namespace="{NS}", pod="a", container="c", '
                'reason="Error"}',
                "1x30",
            ),
            s(f'kube_pod_container_status_restarts_total{{namespace="{NS}", pod="b", container="c"}}', "0+0.08x30"),
            s(
                f'kube_pod_container_status_last_terminated_reason{{namespace="{NS}", pod="b", container="c", '
                'reason="OOMKilled"}',
                "1x30",
            ),
            s('kube_pod_container_status_restarts_total{namespace="default", pod="d", container="c"}', "0+1x30"),
            s(
                'kube_pod_container_status_last_terminated_reason{namespace="default", pod="d", container="c", '
                'reason="OOMKilled"}',
                "1x30",
            ),
        ],
    ),
    "PodCrashLooping": (
        "20m",
        [
            s(
                f'kube_pod_container_status_waiting_reason{{namespace="{NS}", pod="llama-a", container="vllm", '
                'reason="CrashLoopBackOff"}',
                "1x30",
            )
        ],
        [({"namespace": NS, "pod": "llama-a", "container": "vllm"}, "1")],
        [
            s(
                f'kube_pod_container_status_waiting_reason{{namespace="{NS}", pod="llama-a", container="vllm", '
                'reason="CrashLoopBackOff"}',
                "0x30",
            ),
            s(
                'kube_pod_container_status_waiting_reason{namespace="default", pod="x", container="c", '
                'reason="CrashLoopBackOff"}',
                "1x30",
            ),
            # crash-looping for 10 minutes only
            s(
                f'kube_pod_container_status_waiting_reason{{namespace="{NS}", pod="b", container="c", '
                'reason="CrashLoopBackOff"}',
                "0x10 1x10",
            ),
        ],
    ),
    "CertificateExpiringSoon": (
        "2h",
        # expires 10 days after the evaluation time (promtool's clock starts at 0)
        [
            s(
                'certmanager_certificate_expiration_timestamp_seconds{name="gateway-tls", namespace="gateway", '
                'issuer_name="platform-ca", issuer_kind="ClusterIssuer"}',
                f"{7200 + 10 * 86400}x200",
            )
        ],
        [
            (
                {
                    "name": "gateway-tls",
                    "namespace": "gateway",
                    "issuer_name": "platform-ca",
                    "issuer_kind": "ClusterIssuer",
                },
                "10d 0h 0m 0s",
            )
        ],
        [
            s(
                'certmanager_certificate_expiration_timestamp_seconds{name="a", namespace="gateway", '
                'issuer_name="platform-ca", issuer_kind="ClusterIssuer"}',
                f"{30 * 86400}x200",
            ),
            s(
                'certmanager_certificate_expiration_timestamp_seconds{name="b", namespace="gateway", '
                'issuer_name="platform-ca", issuer_kind="ClusterIssuer"}',
                "0x200",
            ),
        ],
    ),
    "HarborDown": (
        "10m",
        [
            s('harbor_up{component="core", namespace="registry"}', "0x20"),
            s('harbor_up{component="registry", namespace="registry"}', "1x20"),
        ],
        [({"component": "core", "namespace": "registry"}, "0")],
        [
            s('harbor_up{component="core", namespace="registry"}', "1x20"),
            s('harbor_up{component="registry", namespace="registry"}', "1x20"),
        ],
    ),
    "ElasticsearchDown": (
        "10m",
        [
            s('elasticsearch_cluster_health_status{cluster="logs", color="red"}', "1x20"),
            s('elasticsearch_cluster_health_status{cluster="logs", color="green"}', "0x20"),
        ],
        [({"cluster": "logs", "color": "red"}, "1")],
        [
            s('elasticsearch_cluster_health_status{cluster="logs", color="red"}', "0x20"),
            s('elasticsearch_cluster_health_status{cluster="logs", color="green"}', "1x20"),
            s('elasticsearch_cluster_health_up{cluster="logs"}', "1x20"),
        ],
    ),
    "ElasticsearchDiskLowWatermark": (
        "10m",
        [
            s('elasticsearch_filesystem_data_available_bytes{name="logs-es-default-0", mount="/data"}', "12x20"),
            s('elasticsearch_filesystem_data_size_bytes{name="logs-es-default-0", mount="/data"}', "100x20"),
        ],
        [({"name": "logs-es-default-0", "mount": "/data"}, "12%")],
        [
            s('elasticsearch_filesystem_data_available_bytes{name="logs-es-default-0", mount="/data"}', "20x20"),
            s('elasticsearch_filesystem_data_size_bytes{name="logs-es-default-0", mount="/data"}', "100x20"),
            s('kubelet_volume_stats_available_bytes{namespace="logging", persistentvolumeclaim="other"}', "1x20"),
            s('kubelet_volume_stats_capacity_bytes{namespace="logging", persistentvolumeclaim="other"}', "100x20"),
        ],
    ),
    "ElasticsearchDiskHighWatermark": (
        "10m",
        [
            s(f'kubelet_volume_stats_available_bytes{{namespace="logging", persistentvolumeclaim="{ES_PVC}"}}', "5x20"),
            s(
                f'kubelet_volume_stats_capacity_bytes{{namespace="logging", persistentvolumeclaim="{ES_PVC}"}}',
                "100x20",
            ),
        ],
        [({"namespace": "logging", "persistentvolumeclaim": ES_PVC}, "5%")],
        # 12 % free: past the low watermark only
        [
            s(
                f'kubelet_volume_stats_available_bytes{{namespace="logging", persistentvolumeclaim="{ES_PVC}"}}',
                "12x20",
            ),
            s(
                f'kubelet_volume_stats_capacity_bytes{{namespace="logging", persistentvolumeclaim="{ES_PVC}"}}',
                "100x20",
            ),
        ],
    ),
}


def unit_test_file(tmp_path: Path, tests: list[dict[str, Any]], groups: list[dict[str, Any]] | None = None) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(rule_file_yaml(all_groups() if groups is None else groups))
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests}))
    return path


def alert_test(name: str, eval_time: str, series: list[dict[str, str]], alerts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "interval": "1h" if name == "PodOomKilledRepeatedly" else "1m",  # a day of samples for the 1d window
        "input_series": series,
        "alert_rule_test": [{"eval_time": eval_time, "alertname": name, "exp_alerts": alerts}],
    }


def test_every_alert_has_a_unit_test() -> None:
    assert {r["alert"] for r in alert_rules(all_groups())} == set(ALERT_CASES)


@pytest.mark.parametrize("name", sorted(ALERT_CASES))
def test_alert_fires_on_its_series_and_stays_quiet_otherwise(promtool: str, tmp_path: Path, name: str) -> None:
    eval_time, firing, expected, quiet = ALERT_CASES[name]
    groups = all_groups()
    alerts = [expected_alert(groups, name, labels, value) for labels, value in expected]
    path = unit_test_file(
        tmp_path, [alert_test(name, eval_time, firing, alerts), alert_test(name, eval_time, quiet, [])]
    )
    result = run_promtool(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_harbor_down_fires_when_the_exporter_is_missing(promtool: str, tmp_path: Path) -> None:
    other = [s('up{job="node-exporter"}', "1x20")]
    path = unit_test_file(
        tmp_path, [alert_test("HarborDown", "10m", other, [expected_alert(all_groups(), "HarborDown", {}, "1")])]
    )
    result = run_promtool(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: expecting the wrong severity is reported by promtool."""
    eval_time, firing, expected, _ = ALERT_CASES["VllmKvCacheNearlyFull"]
    alert = expected_alert(all_groups(), "VllmKvCacheNearlyFull", *expected[0])
    alert["exp_labels"]["severity"] = "critical"
    path = unit_test_file(tmp_path, [alert_test("VllmKvCacheNearlyFull", eval_time, firing, [alert])])
    assert run_promtool(promtool, "test", "rules", str(path)).returncode != 0


def test_ttft_description_reads_well(promtool: str, tmp_path: Path) -> None:
    """One annotation spelled out in full, independent of the test's own template renderer."""
    eval_time, firing, expected, _ = ALERT_CASES["VllmTtftP95High"]
    alert = expected_alert(all_groups(), "VllmTtftP95High", *expected[0])
    assert alert["exp_annotations"]["description"] == (
        "Time to first token p95 of model meta/llama-3.3-70b in namespace inference is 3.9s over the last 5 minutes; "
        "the target is 2s."
    )
    path = unit_test_file(tmp_path, [alert_test("VllmTtftP95High", eval_time, firing, [alert])])
    result = run_promtool(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


RECORDING_SERIES = [
    s(f'vllm:generation_tokens_total{{namespace="{NS}", model_name="{L}", pod="a"}}', "0+60x10"),
    s(f'vllm:generation_tokens_total{{namespace="{NS}", model_name="{L}", pod="b"}}', "0+120x10"),
    s(f'vllm:generation_tokens_total{{namespace="other", model_name="{L}", pod="z"}}', "0+6000x10"),
    s(f'vllm:prompt_tokens_total{{namespace="{NS}", model_name="{Q}", pod="qwen-0"}}', "0+600x10"),
    s(
        'gen_ai_client_token_usage_sum{gen_ai_request_model="llama", gen_ai_token_type="input", tenant_id="acme.a"}',
        "0+60x10",
    ),
    s(
        'gen_ai_client_token_usage_sum{gen_ai_request_model="llama", gen_ai_token_type="input", tenant_id="acme.b"}',
        "0+120x10",
    ),
    s(
        'gen_ai_client_token_usage_sum{gen_ai_request_model="qwen", gen_ai_token_type="output", tenant_id="globex.a"}',
        "0+300x10",
    ),
    s(
        'gen_ai_client_token_usage_sum{gen_ai_request_model="llama", gen_ai_token_type="total", tenant_id="acme.a"}',
        "0+6000x10",
    ),
    s('gen_ai_client_token_usage_sum{gen_ai_request_model="qwen", gen_ai_token_type="input"}', "0+60x10"),
]

RECORDING_EXPECTED = {
    "model_name:vllm_generation_tokens:rate1m": [({"model_name": L}, 3)],
    "model_name:vllm_prompt_tokens:rate1m": [({"model_name": Q}, 10)],
    "gen_ai_request_model_gen_ai_token_type:gen_ai_client_token_usage:rate1m": [
        ({"gen_ai_request_model": "llama", "gen_ai_token_type": "input"}, 3),
        ({"gen_ai_request_model": "qwen", "gen_ai_token_type": "input"}, 1),
        ({"gen_ai_request_model": "qwen", "gen_ai_token_type": "output"}, 5),
    ],
    "tenant_gen_ai_token_type:gen_ai_client_token_usage:rate1m": [
        ({"tenant": "acme", "gen_ai_token_type": "input"}, 3),
        ({"tenant": "globex", "gen_ai_token_type": "output"}, 5),
    ],
}


def _series_text(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def test_every_recording_rule_has_a_unit_test() -> None:
    assert record_names(all_groups()) == set(RECORDING_EXPECTED)


@pytest.mark.parametrize("record", sorted(RECORDING_EXPECTED))
def test_recording_rule_values(promtool: str, tmp_path: Path, record: str) -> None:
    expr_test = {
        "expr": record,
        "eval_time": "5m",
        "exp_samples": [
            {"labels": _series_text(record, labels), "value": value} for labels, value in RECORDING_EXPECTED[record]
        ],
    }
    path = unit_test_file(
        tmp_path, [{"interval": "1m", "input_series": RECORDING_SERIES, "promql_expr_test": [expr_test]}]
    )
    result = run_promtool(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


# ------------------------------------------------------------------------------------------ structure, docs


def test_every_alert_is_labelled_annotated_and_has_a_runbook_heading() -> None:
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in (ROOT / "docs" / "alerts.md").read_text().splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules(all_groups()) + alert_rules(revision_groups()):
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
        assert "{{" in rule["annotations"]["description"], rule["alert"]
        doc, anchor = rule["annotations"]["runbook"].split("#")
        assert doc == "docs/alerts.md"
        assert anchor in headings, f"{rule['alert']}: no heading #{anchor} in docs/alerts.md"


def test_model_selectors_are_restricted_to_the_namespace_and_model() -> None:
    for rule in alert_rules(build_rule_groups([LLAMA], NS, set()))[:6]:
        for selector in re.findall(r"vllm:\w+\{[^}]*\}", rule["expr"]):
            assert f'namespace="{NS}"' in selector and f'model_name="{L}"' in selector, selector


def test_error_ratio_counts_abort_and_error() -> None:
    rule = next(r for r in alert_rules(build_rule_groups([LLAMA], NS, set())) if r["alert"] == "VllmErrorRatioHigh")
    assert 'finished_reason=~"abort|error"' in rule["expr"]


@pytest.mark.parametrize(
    ("feature", "marker"),
    [
        ("gpu", "DCGM_FI_DEV_"),
        ("gateway", "gen_ai_client_token_usage_sum"),
        ("harbor", "harbor_up"),
        ("elasticsearch", "elasticsearch_cluster_health_status"),
        ("cert-manager", "certmanager_certificate_expiration_timestamp_seconds"),
    ],
)
def test_feature_selection(feature: str, marker: str) -> None:
    without = rule_file_yaml(build_rule_groups(MODELS, NS, set(FEATURES) - {feature}))
    alone = rule_file_yaml(build_rule_groups(MODELS, NS, {feature}))
    assert marker not in without
    assert marker in alone
    assert "vllm:time_to_first_token_seconds_bucket" in without and "vllm:time_to_first_token_seconds_bucket" in alone


def test_no_gpu_alerts_without_gpu() -> None:
    names = {r["alert"] for r in alert_rules(build_rule_groups(MODELS, NS, {"harbor", "gateway"}))}
    assert not {n for n in names if n.startswith("Gpu")}
    assert {"GpuXidError", "GpuUtilisationHigh", "GpuEccDoubleBitErrors"} <= {
        r["alert"] for r in alert_rules(build_rule_groups(MODELS, NS, {"gpu"}))
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ttft_p95_seconds": 0.0}, "ttft_p95_seconds"),
        ({"ttft_p95_seconds": -1.0}, "ttft_p95_seconds"),
        ({"ttft_p99_seconds": 0.0, "ttft_p95_seconds": 0.0}, "ttft_p95_seconds"),
        ({"ttft_p99_seconds": 1.0}, "ttft_p99_seconds"),
        ({"max_waiting": 0}, "max_waiting"),
        ({"error_ratio": 0.0}, "error_ratio"),
        ({"error_ratio": 1.5}, "error_ratio"),
        ({"workload": "Not_A_Name"}, "workload"),
        ({"model": ""}, "model"),
    ],
)
def test_model_slo_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"model": "m", "ttft_p95_seconds": 2.0, "ttft_p99_seconds": 4.0, **kwargs}
    with pytest.raises(ValueError, match=rf"^{field}"):
        ModelSlo(**args)


def test_duplicate_model_names_are_refused() -> None:
    twin = ModelSlo(L, ttft_p95_seconds=3.0, ttft_p99_seconds=5.0, workload="other")
    with pytest.raises(ValueError, match=r"models\[1\]\.model='meta/llama-3.3-70b' repeats models\[0\]"):
        build_rule_groups([LLAMA, twin], NS, set())


def test_duplicate_workloads_are_refused() -> None:
    twin = ModelSlo("another", ttft_p95_seconds=3.0, ttft_p99_seconds=5.0, workload="llama")
    with pytest.raises(ValueError, match=r"models\[1\]\.workload='llama'"):
        build_rule_groups([LLAMA, twin], NS, set())


def test_unknown_features_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^features: unknown \['gpus'\]"):
        build_rule_groups(MODELS, NS, {"gpu", "gpus"})


@pytest.mark.parametrize("namespace", ["", "Inference", "a_b", "x" * 64])
def test_bad_namespace_is_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match=r"^namespace="):
        build_rule_groups(MODELS, namespace, set())


def test_workload_defaults_from_the_served_name() -> None:
    assert ModelSlo("Meta/Llama-3.3-70B", 1.0, 2.0).workload_name == "meta-llama-3-3-70b"
    rule = next(
        r
        for r in alert_rules(build_rule_groups([ModelSlo("Meta/Llama-3.3-70B", 1.0, 2.0)], NS, set()))
        if r["alert"] == "VllmNoReadyReplicas"
    )
    assert 'deployment="meta-llama-3-3-70b"' in rule["expr"]


# ------------------------------------------------------------------------------------------ revisions

CHAT = ModelSlo(
    "chat",
    ttft_p95_seconds=5.0,
    ttft_p99_seconds=10.0,
    workload="chat",
    revisions=(("base", "chat", False), ("r2", "chat-r2", False)),
)
CANARY = RevisionComparison(
    "chat",
    stable="base",
    candidate="r2",
    max_error_ratio_delta=0.005,
    max_ttft_p95_ratio=1.2,
    max_itl_p95_ratio=1.15,
    min_requests_per_second=0.5,
)


def revision_groups() -> list[dict[str, Any]]:
    return build_rule_groups([CHAT], NS, set(), comparisons=[CANARY])


def finished(revision: str, per_minute: dict[str, int], model: str = "chat") -> list[dict[str, str]]:
    """vLLM's finished-request counter of one revision (the ServiceMonitor adds `revision`), by finish reason."""
    return [
        s(
            f'vllm:request_success_total{{namespace="{NS}", model_name="{model}", revision="{revision}", '
            f'finished_reason="{reason}"}}',
            f"0+{n}x40",
        )
        for reason, n in per_minute.items()
    ]


def revision_hist(metric: str, revision: str, counts: dict[str, int]) -> list[dict[str, str]]:
    return [
        s(
            f'{metric}_bucket{{namespace="{NS}", model_name="chat", revision="{revision}", pod="p", le="{le}"}}',
            f"0+{n}x40",
        )
        for le, n in counts.items()
    ]


TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
# 600 requests a minute on stable, 60 on the candidate (a 90/10 split), 10 % of the candidate's failing
TRAFFIC = finished("base", {"stop": 600, "error": 0}) + finished("r2", {"stop": 54, "error": 6})
HEALTHY = finished("base", {"stop": 600, "error": 0}) + finished("r2", {"stop": 60, "error": 0})
# stable's first tokens all in (0.5, 1] s: p95 0.975; the candidate's in (1, 2] s: p95 1.95, twice stable's
SLOW_TTFT = revision_hist(TTFT, "base", {"0.5": 0, "1": 10, "2": 10, "+Inf": 10}) + revision_hist(
    TTFT, "r2", {"0.5": 0, "1": 0, "2": 10, "+Inf": 10}
)
SAME_TTFT = revision_hist(TTFT, "base", {"0.5": 0, "1": 10, "2": 10, "+Inf": 10}) + revision_hist(
    TTFT, "r2", {"0.5": 0, "1": 10, "2": 10, "+Inf": 10}
)
SLOW_ITL = revision_hist(ITL, "base", {"0.05": 0, "0.1": 10, "0.2": 10, "+Inf": 10}) + revision_hist(
    ITL, "r2", {"0.05": 0, "0.1": 0, "0.2": 10, "+Inf": 10}
)
SAME_ITL = revision_hist(ITL, "base", {"0.05": 0, "0.1": 10, "0.2": 10, "+Inf": 10}) + revision_hist(
    ITL, "r2", {"0.05": 0, "0.1": 10, "0.2": 10, "+Inf": 10}
)
# the candidate at 10 requests a minute: below the gate's 0.5/s sample rate, however it fails
TRICKLE = finished("base", {"stop": 600, "error": 0}) + finished("r2", {"stop": 5, "error": 5})
CANARY_LABELS = {"namespace": NS, "model_name": "chat", "revision": "r2"}
AGAINST_STABLE = {**CANARY_LABELS, "stable": "base"}

REVISION_CASES: dict[str, tuple[list[dict[str, str]], list[tuple[dict[str, str], str]], list[list[dict[str, str]]]]] = {
    "CanaryErrorRatioAboveStable": (TRAFFIC, [(AGAINST_STABLE, "10%")], [HEALTHY, TRICKLE]),
    "CanaryTtftRegression": (SLOW_TTFT + HEALTHY, [(AGAINST_STABLE, "2")], [SAME_TTFT + HEALTHY, SLOW_TTFT + TRICKLE]),
    "CanaryItlRegression": (SLOW_ITL + HEALTHY, [(AGAINST_STABLE, "2")], [SAME_ITL + HEALTHY, SLOW_ITL + TRICKLE]),
    # judged per revision: the candidate's 10 % failures would be 0.9 % of the model's requests together
    "VllmErrorRatioHigh": (TRAFFIC, [(CANARY_LABELS, "10%")], [HEALTHY]),
}


def test_revisions_add_their_group_and_pass_promtool_check(promtool: str, tmp_path: Path) -> None:
    groups = revision_groups()
    [group] = [g for g in groups if g["name"] == "privatellm-revisions"]
    assert record_names([group]) == set(REVISION_RECORDS.values())
    assert {r["alert"] for r in alert_rules([group])} == {
        "CanaryErrorRatioAboveStable",
        "CanaryTtftRegression",
        "CanaryItlRegression",
    }
    path = tmp_path / "rules.yaml"
    path.write_text(rule_file_yaml(groups))
    result = run_promtool(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    # a stack without revisions has none of it
    assert "privatellm-revisions" not in {g["name"] for g in build_rule_groups([LLAMA], NS, set())}


@pytest.mark.parametrize("name", sorted(REVISION_CASES))
def test_revision_alert_fires_and_stays_quiet(promtool: str, tmp_path: Path, name: str) -> None:
    firing, expected, quiet = REVISION_CASES[name]
    groups = revision_groups()
    alerts = [expected_alert(groups, name, labels, value) for labels, value in expected]
    tests = [alert_test(name, "30m", firing, alerts), *(alert_test(name, "30m", q, []) for q in quiet)]
    result = run_promtool(promtool, "test", "rules", str(unit_test_file(tmp_path, tests, revision_groups())))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_revision_recording_rules(promtool: str, tmp_path: Path) -> None:
    expected = {
        REVISION_RECORDS["requests"]: [("base", 10), ("r2", 1)],
        REVISION_RECORDS["error_ratio"]: [("base", 0), ("r2", 0.1)],
    }
    rounded = {f"round({REVISION_RECORDS['ttft_p95']} * 1000)": [("base", 975), ("r2", 1950)]}
    tests = [
        {
            "interval": "1m",
            "input_series": TRAFFIC + SLOW_TTFT,
            "promql_expr_test": [
                {
                    "expr": record,
                    "eval_time": "20m",
                    "exp_samples": [
                        {"labels": _series_text(record, {**CANARY_LABELS, "revision": r}), "value": v}
                        for r, v in samples
                    ],
                }
                for record, samples in expected.items()
            ]
            + [
                {
                    "expr": expr,
                    "eval_time": "20m",
                    "exp_samples": [
                        {"labels": _series_text("", {**CANARY_LABELS, "revision": r}), "value": v} for r, v in samples
                    ],
                }
                for expr, samples in rounded.items()
            ],
        }
    ]
    result = run_promtool(promtool, "test", "rules", str(unit_test_file(tmp_path, tests, revision_groups())))
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_ready_replicas_per_revision() -> None:
    rules = [r for r in alert_rules(revision_groups()) if r["alert"] == "VllmNoReadyReplicas"]
    assert [(r["labels"]["revision"], r["labels"]["workload"]) for r in rules] == [("base", "chat"), ("r2", "chat-r2")]
    assert 'deployment="chat-r2"' in rules[1]["expr"]
    assert rules[1]["annotations"]["summary"] == "No ready replica of revision r2 of chat"
