"""Metrics and alerting: kube-prometheus-stack with the platform's alert rules and dashboards.

`MonitoringStack` creates the Grafana admin Secret (password generated with pulumi_random, read by the chart through
`grafana.admin.existingSecret`), the kube-prometheus-stack chart, one PrometheusRule with the rule groups it is
given, and one ConfigMap per dashboard for Grafana's sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.base import check_dns_label
from components.labels import standard_labels

GRAFANA_ADMIN_SECRET = "grafana-admin"


@dataclass(frozen=True)
class MonitoringArgs:
    namespace: str
    instance: str
    chart: str
    chart_version: str
    chart_repository: str | None
    values: Mapping[str, Any]
    """kube-prometheus-stack values (`kube_prometheus_stack_values` in infra/builders/observability.py): no secret."""
    rule_groups: Sequence[Mapping[str, Any]] = ()
    dashboards: Mapping[str, str] = field(default_factory=dict)
    """Dashboard file name → Grafana JSON model (string)."""

    def __post_init__(self) -> None:
        check_dns_label("namespace", self.namespace)
        for name, text in self.dashboards.items():
            if not name.endswith(".json"):
                raise ValueError(f"dashboard {name!r} must be a .json file name")
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"dashboard {name!r} is not JSON: {exc}") from None
        for group in self.rule_groups:
            if not group.get("name") or not group.get("rules"):
                raise ValueError("every rule group needs a name and at least one rule")


class MonitoringStack(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("privatellm:observability:MonitoringStack", name, None, opts)
        a = self.args = args
        child = pulumi.ResourceOptions(parent=self)

        def meta(
            object_name: str, component: str, labels: Mapping[str, str] | None = None
        ) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=object_name,
                namespace=a.namespace,
                labels={
                    **standard_labels(name=object_name, instance=a.instance, component=component),
                    **(labels or {}),
                },
            )

        self.grafana_password = random.RandomPassword(f"{name}-grafana-admin", length=32, special=False, opts=child)
        self.grafana_secret = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata=meta(GRAFANA_ADMIN_SECRET, "grafana"),
            string_data={"admin-user": "admin", "admin-password": self.grafana_password.result},
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"])
            ),
        )
        self.chart = k8s.helm.v4.Chart(
            f"{name}-chart",
            name="monitoring",
            chart=a.chart,
            version=a.chart_version,
            namespace=a.namespace,
            repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=a.chart_repository) if a.chart_repository else None,
            values=dict(a.values),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.grafana_secret]),
        )
        after_chart = pulumi.ResourceOptions(parent=self, depends_on=[self.chart])
        self.rules = (
            k8s.apiextensions.CustomResource(
                f"{name}-rules",
                api_version="monitoring.coreos.com/v1",
                kind="PrometheusRule",
                metadata=meta(f"{a.instance}-platform", "alerts"),
                spec={"groups": [dict(g) for g in a.rule_groups]},
                opts=after_chart,
            )
            if a.rule_groups
            else None
        )
        self.dashboards = [
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard-{file_name.removesuffix('.json')}",
                metadata=meta(f"dashboard-{file_name.removesuffix('.json')}", "dashboards", {"grafana_dashboard": "1"}),
                data={file_name: text},
                opts=child,
            )
            for file_name, text in sorted(a.dashboards.items())
        ]
        self.register_outputs({"grafanaAdminSecret": GRAFANA_ADMIN_SECRET})
