"""Monitoring: kube-prometheus-stack values, Alertmanager routes, the platform's rules and dashboards."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from components.logging import READER_SECRET
from components.observability import GRAFANA_ADMIN_SECRET, MonitoringArgs, MonitoringStack
from components.pki import Pki, service_dns_names
from infra.builders.base import Site, registry_repo_tag, with_pull_secret
from infra.catalog import (
    CHARTS,
    IMAGES,
    Image,
    chart_source,
)
from infra.config import GateSpec, PlatformSpec, RegistrySpec
from infra.errors import build
from infra.features import observability_features, runs_monitoring
from infra.observability.dashboards import dashboard_configmaps_data
from infra.observability.ilm import AUDIT_DATASOURCE_UID, AUDIT_PREFIX
from infra.observability.rules import ModelSlo, RevisionComparison, build_rule_groups
from infra.placement import PlacedModel

GRAFANA_TLS_SECRET = "grafana-tls"


@dataclass(frozen=True)
class AuditLogSource:
    """Where Grafana reads the gateway's audit log: Elasticsearch URL, index prefix, the read-only user's Secret and
    the platform CA ConfigMap (key `ca.crt`), both in Grafana's namespace."""

    url: str
    index_prefix: str
    reader_secret: str
    ca_configmap: str


def audit_log_source(spec: PlatformSpec, ca_configmap: str) -> AuditLogSource:
    """Grafana's read-only view of the gateway's audit indices (rejections per tenant)."""
    logging_ns = spec.namespaces.logging.name
    return AuditLogSource(
        url=f"https://{spec.name}-logs-es-http.{logging_ns}.svc:9200",
        index_prefix=AUDIT_PREFIX,
        reader_secret=READER_SECRET,
        ca_configmap=ca_configmap,
    )


def alertmanager_config(spec: PlatformSpec) -> dict[str, Any]:
    """Alertmanager's native configuration: one route per receiver, selected by alert severity."""
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    routes = []
    for r in spec.observability.receivers:
        receiver: dict[str, Any] = {"name": r.name}
        if r.type == "webhook":
            receiver["webhook_configs"] = [{"url": r.url, "send_resolved": True}]
        else:
            receiver["email_configs"] = [
                {"to": ", ".join(r.to), "from": r.sender, "smarthost": r.smarthost, "require_tls": True}
            ]
        receivers.append(receiver)
        routes.append({"receiver": r.name, "matchers": [f'severity=~"{"|".join(r.severities)}"'], "continue": True})
    return {
        "route": {
            "receiver": "null",
            "group_by": ["alertname", "namespace", "model_name"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "receivers": receivers,
    }


def kube_prometheus_stack_values(
    registry: RegistrySpec,
    retention_days: int,
    storage_size: str,
    storage_class: str | None,
    alertmanager_config: dict[str, Any],
    grafana_admin_secret: str,
    grafana_tls_secret: str | None,
    client_cert_secrets: list[str],
    images: Mapping[str, Image] = IMAGES,
    audit_log: AuditLogSource | None = None,
) -> dict[str, Any]:
    """kube-prometheus-stack 88.5.3: everything from the registry, retention and storage per profile, Grafana with
    its admin from an existing Secret, no anonymous access, TLS; selects monitors and rules in every namespace;
    node-exporter off (it needs the host's namespaces; GPU health comes from DCGM, volumes from the kubelet).
    With `audit_log`, Grafana gets a read-only Elasticsearch data source on the gateway's audit indices."""

    def img(key: str) -> dict[str, str]:
        return registry_repo_tag(images[key], registry)

    storage: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage_size}},
    }
    if storage_class:
        storage["storageClassName"] = storage_class
    grafana_ini: dict[str, Any] = {
        "auth.anonymous": {"enabled": False},
        "auth": {"disable_login_form": False},
        "users": {"allow_sign_up": False},
        "analytics": {"reporting_enabled": False, "check_for_updates": False},
        "security": {"cookie_secure": True, "disable_gravatar": True},
    }
    grafana: dict[str, Any] = {
        "image": img("grafana"),
        "admin": {"existingSecret": grafana_admin_secret, "userKey": "admin-user", "passwordKey": "admin-password"},
        "grafana.ini": grafana_ini,
        "testFramework": {"enabled": False},
        "initChownData": {"enabled": False},
        "sidecar": {
            "image": img("grafana-sidecar"),
            "dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1", "searchNamespace": "ALL"},
        },
    }
    if grafana_tls_secret:
        grafana_ini["server"] = {
            "protocol": "https",
            "cert_file": "/etc/grafana/tls/tls.crt",
            "cert_key": "/etc/grafana/tls/tls.key",
        }
        grafana["extraSecretMounts"] = [
            {"name": "tls", "secretName": grafana_tls_secret, "mountPath": "/etc/grafana/tls", "readOnly": True}
        ]
        probe = {"httpGet": {"path": "/api/health", "port": 3000, "scheme": "HTTPS"}}
        grafana["readinessProbe"] = probe
        grafana["livenessProbe"] = {**probe, "initialDelaySeconds": 60, "timeoutSeconds": 30, "failureThreshold": 10}
        # The sidecar reloads dashboards through Grafana on localhost, which presents the service certificate.
        grafana["sidecar"]["skipTlsVerify"] = True
        grafana["sidecar"]["dashboards"]["reloadURL"] = (
            "https://localhost:3000/api/admin/provisioning/dashboards/reload"
        )
    if audit_log is not None:
        # Credentials and CA come from the environment (Grafana expands $VAR in provisioning files): the password
        # stays in its Secret, never in values or the rendered datasource ConfigMap.
        grafana["envValueFrom"] = {
            "AUDIT_READER_USER": {"secretKeyRef": {"name": audit_log.reader_secret, "key": "username"}},
            "AUDIT_READER_PASSWORD": {"secretKeyRef": {"name": audit_log.reader_secret, "key": "password"}},
            "PLATFORM_CA_PEM": {"configMapKeyRef": {"name": audit_log.ca_configmap, "key": "ca.crt"}},
        }
        grafana["additionalDataSources"] = [
            {
                "name": "Audit log",
                "uid": AUDIT_DATASOURCE_UID,
                "type": "elasticsearch",
                "access": "proxy",
                "url": audit_log.url,
                "basicAuth": True,
                "basicAuthUser": "$AUDIT_READER_USER",
                "editable": False,
                "jsonData": {
                    "index": f"{audit_log.index_prefix}-*",
                    "timeField": "@timestamp",
                    "tlsAuthWithCACert": True,
                },
                "secureJsonData": {"basicAuthPassword": "$AUDIT_READER_PASSWORD", "tlsCACert": "$PLATFORM_CA_PEM"},
            }
        ]
    return {
        "crds": {"enabled": True},
        "prometheusOperator": {
            "image": img("prometheus-operator"),
            "prometheusConfigReloader": {"image": img("prometheus-config-reloader")},
            "admissionWebhooks": {"patch": {"image": img("kube-webhook-certgen")}},
        },
        "prometheus": {
            "prometheusSpec": {
                "image": img("prometheus"),
                "retention": f"{retention_days}d",
                "storageSpec": {"volumeClaimTemplate": {"spec": storage}},
                "secrets": list(client_cert_secrets),
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "probeSelectorNilUsesHelmValues": False,
                "scrapeConfigSelectorNilUsesHelmValues": False,
            }
        },
        "alertmanager": {
            "config": alertmanager_config,
            "alertmanagerSpec": {
                "image": img("alertmanager"),
                "storage": {
                    "volumeClaimTemplate": {"spec": {**storage, "resources": {"requests": {"storage": "10Gi"}}}}
                },
            },
        },
        "grafana": grafana,
        "kube-state-metrics": {"image": img("kube-state-metrics")},
        "nodeExporter": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeProxy": {"enabled": False},
    }


def model_slos(models: list[PlacedModel]) -> list[ModelSlo]:
    """One SLO per served model; a model with revisions keeps each revision's workload apart."""
    slos = []
    for name, group in itertools.groupby(models, key=lambda m: m.model_name or m.spec.name):
        members = list(group)
        first = members[0]
        slo = first.spec.slo
        slos.append(
            ModelSlo(
                model=first.spec.served_name,
                ttft_p95_seconds=slo.ttft_p95,
                ttft_p99_seconds=slo.ttft_p99,
                max_waiting=slo.max_waiting,
                error_ratio=slo.error_ratio,
                workload=first.spec.name if first.revision is None else name,
                multi_node=first.plan.pipeline_parallel_size > 1,
                revisions=tuple(
                    (m.revision.label, m.spec.name, m.plan.pipeline_parallel_size > 1)
                    for m in members
                    if m.revision is not None
                ),
            )
        )
    return slos


def revision_comparisons(spec: PlatformSpec) -> list[RevisionComparison]:
    """The canary alerts' pairs: each model's candidate against its stable revision, with the stack's gate."""
    out = []
    for m in spec.models:
        pair = m.stable_and_candidate()
        if pair is None:
            continue
        gate = m.rollout.gate if m.rollout else GateSpec()
        out.append(
            RevisionComparison(
                model=m.served_name,
                stable=pair[0].label,
                candidate=pair[1].label,
                max_error_ratio_delta=gate.max_error_ratio_delta,
                max_ttft_p95_ratio=gate.max_ttft_p95_ratio,
                max_itl_p95_ratio=gate.max_itl_p95_ratio,
                min_requests_per_second=round(gate.min_requests / (gate.window_minutes * 60), 4),
            )
        )
    return out


def build_observability(
    site: Site, models: list[PlacedModel], pki: Pki | None, pulls: list[pulumi.Resource]
) -> MonitoringStack | None:
    """kube-prometheus-stack, the platform's alert rules (from the models' SLOs) and dashboards."""
    spec = site.spec
    registry = spec.registry
    if not runs_monitoring(spec) or registry is None:
        return None
    ns = spec.namespaces.monitoring.name
    features = observability_features(spec)
    grafana_tls = None
    if pki is not None:
        grafana_tls = GRAFANA_TLS_SECRET
        pki.certificate("cert-grafana", ns, grafana_tls, "grafana", service_dns_names("monitoring-grafana", ns))
    rule_features = set(features) - {"audit-log"}
    if spec.registry is not None and spec.registry.harbor is not None:
        rule_features.add("harbor")
    if spec.logging.enabled:
        rule_features.add("elasticsearch")
    if pki is not None:
        rule_features.add("cert-manager")
    groups = build_rule_groups(
        model_slos(models),
        spec.namespaces.inference.name,
        rule_features,
        platform_namespaces=sorted(site.namespaces),
        comparisons=revision_comparisons(spec),
    )
    values = with_pull_secret(
        "kube-prometheus-stack",
        kube_prometheus_stack_values(
            registry,
            retention_days=spec.metrics_retention_days,
            storage_size=spec.observability.storage_size,
            storage_class=spec.observability.storage_class,
            alertmanager_config=alertmanager_config(spec),
            grafana_admin_secret=GRAFANA_ADMIN_SECRET,
            grafana_tls_secret=grafana_tls,
            client_cert_secrets=[],
            images=site.images,
            audit_log=audit_log_source(spec, pki.ca_configmap) if "audit-log" in features and pki else None,
        ),
        site.pull_secret,
    )
    source, repo = chart_source(CHARTS["kube-prometheus-stack"], registry)
    args = MonitoringArgs(
        namespace=ns,
        instance=spec.name,
        chart=source,
        chart_version=CHARTS["kube-prometheus-stack"].version,
        chart_repository=repo,
        values=values,
        rule_groups=groups,
        dashboards=dashboard_configmaps_data(
            list(dict.fromkeys(m.spec.served_name for m in models)),
            spec.namespaces.inference.name,
            features,
            spec.namespaces.gateway.name,
            revisions=any(m.revision is not None for m in models),
        )
        if models
        else {},
    )
    depends = site.after(site.namespaces[ns], pulls)
    return build(
        "monitoring",
        "privatellm:observability:MonitoringStack",
        lambda: MonitoringStack("monitoring", args, opts=depends),
    )
