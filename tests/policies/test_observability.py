"""Observability rules: log retention, Grafana sign-in, Elasticsearch TLS — passing and violating fixtures."""

from __future__ import annotations

from typing import Any

from infra.observability.ilm import lifecycle_documents
from policies.observability import CHART, CONFIG_MAP, ELASTICSEARCH, OBSERVABILITY_RULES
from tests.policies.fixtures import violations
from tests.policies.mutations import Mutation, is_chart, is_ilm_config, is_kind, set_audit_retention

RULES = {r.name: r for r in OBSERVABILITY_RULES}


def ilm_config_map(audit_days: int, app_days: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "ilm", "namespace": "llm-logging"},
        "data": lifecycle_documents(audit_days, app_days, 3),
    }


def test_log_retention_follows_the_profile_minimum() -> None:
    rule = RULES["log-retention"]
    assert violations(rule, CONFIG_MAP, ilm_config_map(365, 30)) == []
    assert violations(rule, CONFIG_MAP, ilm_config_map(2555, 90)) == []
    short_audit = violations(rule, CONFIG_MAP, ilm_config_map(90, 30))
    assert short_audit == [
        "privatellm-audit.policy.json deletes logs after 90 days; the profile keeps them at least 365 days"
    ]
    assert len(violations(rule, CONFIG_MAP, ilm_config_map(364, 7))) == 2


def test_log_retention_ignores_other_config_maps_and_flags_broken_json() -> None:
    rule = RULES["log-retention"]
    assert violations(rule, CONFIG_MAP, {"data": {"app.yaml": "a: 1"}}) == []
    assert violations(rule, CONFIG_MAP, {"data": {"privatellm-app.policy.json": "{"}}) == [
        "privatellm-app.policy.json is not JSON"
    ]


def kps(grafana: dict[str, Any]) -> dict[str, Any]:
    return {"chart": "oci://harbor.bank/charts/kube-prometheus-stack", "values": {"grafana": grafana}}


def test_grafana_anonymous_access_must_be_explicitly_off() -> None:
    rule = RULES["grafana-anonymous-off"]
    off = {"grafana.ini": {"auth.anonymous": {"enabled": False}}}
    assert violations(rule, CHART, kps(off)) == []
    assert violations(rule, CHART, kps({"grafana.ini": {"auth.anonymous": {"enabled": True}}}))
    assert violations(rule, CHART, kps({}))
    # charts other than Grafana's are not its business
    assert violations(rule, CHART, {"chart": "oci://harbor.bank/charts/harbor", "values": {}}) == []


def elasticsearch(tls: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "logs", "namespace": "llm-logging"}, "spec": {"http": {"tls": tls}}}


def test_elasticsearch_serves_a_pki_certificate() -> None:
    rule = RULES["elasticsearch-tls"]
    assert violations(rule, ELASTICSEARCH, elasticsearch({"certificate": {"secretName": "es-http-tls"}})) == []
    assert violations(rule, ELASTICSEARCH, elasticsearch({"selfSignedCertificate": {"disabled": True}}))
    assert violations(rule, ELASTICSEARCH, elasticsearch({})) == [
        "spec.http.tls.certificate.secretName is not set: serve a certificate from the platform PKI"
    ]


# ---------------------------------------------------------------------------------------------------------------
# Mutations: each a violation injected into every shipped stack's render (tests/stacks/test_mutations.py)
# ---------------------------------------------------------------------------------------------------------------

MUTATIONS: list[Mutation] = [
    Mutation("log-retention", "audit kept a day", is_ilm_config, set_audit_retention),
    Mutation(
        "grafana-anonymous-off",
        "anonymous viewers",
        is_chart("kube-prometheus-stack"),
        lambda props: props["values"]["grafana"]["grafana.ini"]["auth.anonymous"].update(enabled=True),
    ),
    Mutation(
        "elasticsearch-tls",
        "HTTPS off",
        is_kind("Elasticsearch"),
        lambda props: props["spec"]["http"].update(tls={"selfSignedCertificate": {"disabled": True}}),
    ),
]
