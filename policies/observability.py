"""Evidence and visibility: log retention at least the profile's minimum, Grafana without anonymous access,
Elasticsearch only over TLS.

Sources: PCI DSS v4.0 requirement 10.5.1 (keep audit logs at least 12 months), HIPAA §164.316(b)(2) (retention of
documentation) and §164.312(b) (audit controls), NSA/CISA Kubernetes hardening guidance (logging and auditing).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pulumi_policy import Severity

from policies.base import Rule, Standard, get_path, hipaa, nsa
from policies.profiles import threshold

CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
CHART = "kubernetes:helm.sh/v4:Chart"
ELASTICSEARCH = "kubernetes:elasticsearch.k8s.elastic.co/v1:Elasticsearch"
_DAYS = re.compile(r"^(\d+)d$")


def pci(requirement: str) -> Standard:
    return Standard("PCI DSS", "4.0", requirement)


def _days(min_age: Any) -> int | None:
    match = _DAYS.fullmatch(str(min_age)) if min_age is not None else None
    return int(match.group(1)) if match else None


def log_retention(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    data = props.get("data")
    if not isinstance(data, Mapping):
        return []
    minimums = {
        "privatellm-audit.policy.json": threshold(config, "minAuditRetentionDays"),
        "privatellm-app.policy.json": threshold(config, "minAppRetentionDays"),
    }
    out = []
    for key, minimum in minimums.items():
        if key not in data:
            continue
        try:
            policy = json.loads(str(data[key]))
        except json.JSONDecodeError:
            out.append(f"{key} is not JSON")
            continue
        delete = get_path(policy, ("policy", "phases", "delete"))
        days = _days(delete.get("min_age")) if isinstance(delete, Mapping) else None
        if days is not None and days < minimum:
            out.append(f"{key} deletes logs after {days} days; the profile keeps them at least {minimum} days")
    return out


def grafana_anonymous(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    chart = str(props.get("chart", ""))
    if not chart.rstrip("/").endswith(("kube-prometheus-stack", "grafana")):
        return []
    values = props.get("values") if isinstance(props.get("values"), Mapping) else {}
    grafana = values.get("grafana", values) if isinstance(values, Mapping) else {}
    ini = grafana.get("grafana.ini") if isinstance(grafana, Mapping) else None
    anonymous = ini.get("auth.anonymous") if isinstance(ini, Mapping) else None
    enabled = anonymous.get("enabled") if isinstance(anonymous, Mapping) else None
    if enabled is not False:
        return ["grafana.ini auth.anonymous.enabled must be explicitly false"]
    return []


def elasticsearch_tls(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    tls = get_path(props, ("spec", "http", "tls"))
    if get_path(tls, ("selfSignedCertificate", "disabled")) is True:
        return ["spec.http.tls.selfSignedCertificate.disabled turns HTTPS off"]
    if not get_path(tls, ("certificate", "secretName")):
        return ["spec.http.tls.certificate.secretName is not set: serve a certificate from the platform PKI"]
    return []


OBSERVABILITY_RULES: list[Rule] = [
    Rule(
        name="log-retention",
        description="Audit and application logs are kept at least as long as the compliance profile requires.",
        check=log_retention,
        resource_types=[CONFIG_MAP],
        standards=(pci("10.5.1"), hipaa("164.316(b)(2)"), nsa("Logging and auditing")),
        remediation="Raise logging.audit_retention_days / app_retention_days to the profile minimum or above.",
        severity=Severity.HIGH,
    ),
    Rule(
        name="grafana-anonymous-off",
        description="Dashboards show models, tenants and load: nobody sees them without signing in.",
        check=grafana_anonymous,
        resource_types=[CHART],
        standards=(nsa("Authentication and authorization"), hipaa("164.312(a)(1)")),
        remediation='Set grafana."grafana.ini"."auth.anonymous".enabled: false (the platform does).',
        severity=Severity.HIGH,
    ),
    Rule(
        name="elasticsearch-tls",
        description="Logs travel to and from Elasticsearch only over TLS with a certificate of the platform PKI.",
        check=elasticsearch_tls,
        resource_types=[ELASTICSEARCH],
        standards=(hipaa("164.312(e)(1)"), nsa("Network separation: encrypt traffic")),
        remediation="Set spec.http.tls.certificate.secretName to a PKI certificate; never disable TLS.",
        severity=Severity.HIGH,
    ),
]
