"""Monitoring and logging as a stack renders them: Prometheus/Grafana/Alertmanager, ELK, Fluent Bit, lifecycle."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import StackConfigError, parse_platform
from infra.offline import Recording, config_from_mapping, load_stack_config, run_program
from infra.pack_config import stack_pack_config
from tests.conftest import ROOT, masked_keys, required


@pytest.fixture(scope="module")
def finance() -> Recording:
    return run_program(load_stack_config(ROOT, "finance-prod"))


def chart(rec: Recording, name: str) -> dict[str, Any]:
    [found] = [c for c in rec.charts() if c.name == name]
    return found.inputs


def objects(rec: Recording, kind: str) -> dict[str, Any]:
    return {o.object_name: o for o in rec.of_kind(kind)}


def test_kube_prometheus_stack_values(finance: Recording) -> None:
    values = chart(finance, "monitoring-chart")["values"]
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "90d"  # finance profile
    assert spec["image"]["registry"] == "harbor.bank.internal"
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False and spec["ruleSelectorNilUsesHelmValues"] is False
    grafana = values["grafana"]
    assert grafana["admin"]["existingSecret"] == "grafana-admin"
    assert grafana["grafana.ini"]["auth.anonymous"] == {"enabled": False}
    assert grafana["grafana.ini"]["server"]["protocol"] == "https"
    assert grafana["extraSecretMounts"][0]["secretName"] == "grafana-tls"
    assert "adminPassword" not in grafana
    assert values["nodeExporter"] == {"enabled": False}
    secret = objects(finance, "Secret")["grafana-admin"]
    assert masked_keys(secret) == {"admin-password", "admin-user"}
    assert "grafana-tls" in objects(finance, "Certificate")


def test_alertmanager_routes_follow_receivers() -> None:
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.finance-prod.yaml").read_text())["config"]["privatellm:platform"]
    doc["observability"] = {
        "receivers": [
            {
                "name": "oncall",
                "type": "webhook",
                "url": "https://alerts.bank.internal/hook",
                "severities": ["critical"],
            },
            {
                "name": "ops-mail",
                "type": "email",
                "to": ["ops@bank.internal"],
                "smarthost": "smtp.bank.internal:587",
                "sender": "llm@bank.internal",
            },
        ]
    }
    spec = parse_platform(doc)
    from infra.builders.observability import alertmanager_config

    config = alertmanager_config(spec)
    assert [r["name"] for r in config["receivers"]] == ["null", "oncall", "ops-mail"]
    assert config["route"]["routes"][0] == {
        "receiver": "oncall",
        "matchers": ['severity=~"critical"'],
        "continue": True,
    }
    assert config["receivers"][2]["email_configs"][0]["require_tls"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"observability": {"receivers": [{"name": "hook", "type": "webhook"}]}}, "needs url"),
        (
            {"logging": {"audit_retention_days": 90}},
            "logging.audit_retention_days=90 is below the finance profile's minimum of 365",
        ),
        ({"logging": {"redaction_patterns": ["(unclosed"]}}, "is not a valid regular expression"),
        (
            {"models": [{"name": "m", "model": "Llama-3.1-8B", "pool": "h100", "slo": {"ttft_p95": "fast"}}]},
            "must be a number of seconds",
        ),
        (
            {
                "models": [
                    {
                        "name": "m",
                        "model": "Llama-3.1-8B",
                        "pool": "h100",
                        "slo": {"ttft_p95": "2s", "ttft_p99": "500ms"},
                    }
                ]
            },
            "is below ttft_p95",
        ),
    ],
)
def test_bad_observability_input(change: dict[str, Any], message: str) -> None:
    doc = {"profile": "finance", **change}
    with pytest.raises(StackConfigError) as info:
        parse_platform(doc)
    assert any(message in p for p in info.value.problems), info.value.problems


def test_slo_durations() -> None:
    spec = parse_platform(
        {"models": [{"name": "m", "model": "x", "pool": "p", "slo": {"ttft_p95": "500ms", "ttft_p99": 2}}]}
    )
    assert (spec.models[0].slo.ttft_p95, spec.models[0].slo.ttft_p99) == (0.5, 2.0)


def test_rules_and_dashboards_are_deployed(finance: Recording, tmp_path: Path) -> None:
    [rule] = objects(finance, "PrometheusRule").values()
    groups = rule.inputs["spec"]["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert {
        "VllmTtftP95High",
        "VllmKvCacheNearlyFull",
        "GpuXidError",
        "CertificateExpiringSoon",
        "HarborDown",
    } <= alerts
    ttft = [r for g in groups for r in g["rules"] if r.get("alert") == "VllmTtftP95High"]
    assert any('model_name="llama-3.3-70b-instruct"' in r["expr"] for r in ttft)
    dashboards = {n: o for n, o in objects(finance, "ConfigMap").items() if n.startswith("dashboard-")}
    assert dashboards and all(o.inputs["metadata"]["labels"]["grafana_dashboard"] == "1" for o in dashboards.values())
    promtool = required(shutil.which("promtool"), "promtool not on PATH", "install the Debian package `prometheus`")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_elasticsearch_and_kibana(finance: Recording) -> None:
    es = objects(finance, "Elasticsearch")["bank-llm-logs"].inputs["spec"]
    assert es["volumeClaimDeletePolicy"] == "DeleteOnScaledownOnly"  # log volumes survive deleting the cluster
    assert es["http"]["tls"]["certificate"]["secretName"] == "elasticsearch-tls"
    [node_set] = es["nodeSets"]
    assert node_set["count"] == 3 and node_set["config"]["node.store.allow_mmap"] is False
    assert es["image"] == "harbor.bank.internal/platform/elasticsearch/elasticsearch:9.4.3"
    assert {r["secretName"] for r in es["auth"]["fileRealm"]} == {
        "bank-llm-logs-user-privatellm-log-writer",
        "bank-llm-logs-user-privatellm-monitor",
        "bank-llm-logs-user-privatellm-audit-reader",
    }
    kibana = objects(finance, "Kibana")["bank-llm-logs"].inputs["spec"]
    assert kibana["http"]["tls"]["certificate"]["secretName"] == "kibana-tls"
    assert kibana["config"]["telemetry.optIn"] is False
    roles = objects(finance, "Secret")["bank-llm-logs-roles"].inputs["stringData"]["roles.yml"]
    writer = yaml.safe_load(roles)["privatellm_log_writer"]
    assert writer["indices"][0]["names"] == ["privatellm-*"] and "delete" not in writer["indices"][0]["privileges"]


def test_lifecycle_job_applies_the_profile_retention(finance: Recording) -> None:
    documents = objects(finance, "ConfigMap")["bank-llm-logs-lifecycle"].inputs["data"]
    audit = json.loads(documents["privatellm-audit.policy.json"])
    assert audit["policy"]["phases"]["delete"]["min_age"] == "365d"
    [job] = [j for n, j in objects(finance, "Job").items() if n.startswith("bank-llm-logs-lifecycle-")]
    pod = job.inputs["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    # The password reaches the script as a mounted Secret file readable by the pod's group, never as env.
    assert "ES_PASSWORD" not in env and env["ES_PASSWORD_FILE"]["value"] == "/secrets/es/elastic"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["password"] == {"name": "password", "mountPath": "/secrets/es", "readOnly": True}
    [volume] = [v for v in pod["volumes"] if v["name"] == "password"]
    assert volume["secret"] == {
        "secretName": "bank-llm-logs-es-elastic-user",
        "items": [{"key": "elastic", "path": "elastic"}],
        "defaultMode": 0o440,
    }
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 10001


def test_fluent_bit_redacts_and_ships_over_verified_tls(finance: Recording) -> None:
    inputs = chart(finance, "fluent-bit")
    assert inputs["namespace"] == "llm-log-shipper"
    values = inputs["values"]
    assert "redact_pii.lua" in values["luaScripts"]
    filters = " ".join(values["config"]["filters"].split())
    assert "Name lua Match * script /fluent-bit/scripts/redact_pii.lua call redact_pii" in filters
    outputs = values["config"]["outputs"]
    assert "tls.verify On" in outputs and "privatellm-audit" in outputs and "privatellm-app" in outputs
    assert "${ES_PASSWORD}" in outputs
    assert {m["mountPath"]: m["readOnly"] for m in values["daemonSetVolumeMounts"]}["/var/log"] is True
    assert values["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    writer = objects(finance, "Secret")["elasticsearch-log-writer"]
    assert writer.namespace == "llm-log-shipper" and masked_keys(writer) == {"password", "username"}


def test_log_shipper_is_a_declared_exception() -> None:
    spec = parse_platform(
        yaml.safe_load((ROOT / "stacks" / "Pulumi.finance-prod.yaml").read_text())["config"]["privatellm:platform"]
    )
    config = stack_pack_config(spec)
    exempt = config["pss-host-path-volumes"]["exemptNamespaces"]
    assert exempt["llm-log-shipper"].startswith("Fluent Bit") and exempt["gpu-operator"].startswith("NVIDIA")


def test_gateway_proxies_are_scraped(finance: Recording) -> None:
    [monitor] = objects(finance, "PodMonitor").values()
    assert monitor.namespace == "llm-gateway"
    spec = monitor.inputs["spec"]
    [gateway] = objects(finance, "Gateway").values()
    assert spec["selector"]["matchLabels"]["gateway.envoyproxy.io/owning-gateway-name"] == gateway.object_name
    ports = {e["port"]: e["path"] for e in spec["podMetricsEndpoints"]}
    assert ports == {"metrics": "/stats/prometheus", "aigw-metrics": "/metrics"}
    policies = {(p.namespace, p.object_name): p.inputs["spec"] for p in finance.of_kind("NetworkPolicy")}
    ingress = policies[("llm-gateway", "allow-ingress-from-llm-monitoring")]["ingress"]
    assert {p["port"] for rule in ingress for p in rule["ports"]} == {19001, 1064}
    egress = policies[("llm-monitoring", "allow-egress-to-llm-gateway")]["egress"]
    assert {p["port"] for rule in egress for p in rule["ports"]} == {19001, 1064}


def test_grafana_reads_the_audit_log_with_a_read_only_user(finance: Recording) -> None:
    grafana = chart(finance, "monitoring-chart")["values"]["grafana"]
    [source] = grafana["additionalDataSources"]
    assert source["type"] == "elasticsearch" and source["uid"] == "privatellm-audit"
    assert source["url"] == "https://bank-llm-logs-es-http.llm-logging.svc:9200"
    assert source["jsonData"]["index"] == "privatellm-audit-*" and source["jsonData"]["tlsAuthWithCACert"] is True
    # credentials and CA are environment references, resolved by Grafana from the Secret and the trust bundle
    assert source["basicAuthUser"] == "$AUDIT_READER_USER"
    assert source["secureJsonData"] == {"basicAuthPassword": "$AUDIT_READER_PASSWORD", "tlsCACert": "$PLATFORM_CA_PEM"}
    env = grafana["envValueFrom"]
    assert env["AUDIT_READER_PASSWORD"]["secretKeyRef"] == {"name": "elasticsearch-audit-reader", "key": "password"}
    assert env["PLATFORM_CA_PEM"]["configMapKeyRef"] == {"name": "bank-llm-platform-ca", "key": "ca.crt"}
    reader = objects(finance, "Secret")["elasticsearch-audit-reader"]
    assert reader.namespace == "llm-monitoring" and masked_keys(reader) == {"password", "username"}
    roles = yaml.safe_load(objects(finance, "Secret")["bank-llm-logs-roles"].inputs["stringData"]["roles.yml"])
    assert roles["privatellm_audit_reader"] == {
        "indices": [{"names": ["privatellm-audit-*"], "privileges": ["read", "view_index_metadata"]}]
    }
    policies = {(p.namespace, p.object_name): p.inputs["spec"] for p in finance.of_kind("NetworkPolicy")}
    ingress = policies[("llm-logging", "allow-ingress-from-llm-monitoring")]["ingress"]
    assert {p["port"] for rule in ingress for p in rule["ports"]} == {9114, 9200}
    template = json.loads(
        objects(finance, "ConfigMap")["bank-llm-logs-lifecycle"].inputs["data"]["privatellm-audit.template.json"]
    )
    assert template["template"]["mappings"]["properties"]["tenant"] == {"type": "keyword"}


def test_no_audit_data_source_without_logging() -> None:
    document = yaml.safe_load((ROOT / "stacks" / "Pulumi.finance-prod.yaml").read_text())["config"]
    platform = document["privatellm:platform"]
    platform["logging"] = {**platform.get("logging", {}), "enabled": False}
    rec = run_program(config_from_mapping("no-logging", document, project_dir=ROOT))
    grafana = chart(rec, "monitoring-chart")["values"]["grafana"]
    assert "additionalDataSources" not in grafana and "envValueFrom" not in grafana
    assert "elasticsearch-audit-reader" not in objects(rec, "Secret")
