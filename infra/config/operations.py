"""`observability`, `logging` and `policy`: monitoring and alert receivers, logs and their retention, documented
exceptions and overrides of the policy pack."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from infra.config.types import Cidr, DnsLabel, NamespaceName, Quantity, StrictModel
from infra.observability.fluentbit import validate_extra_patterns
from policies.pack import validate_pack_config

AlertSeverity = Literal["critical", "warning", "info"]


DEFAULT_ALERT_SEVERITIES: tuple[AlertSeverity, ...] = ("critical", "warning")


class AlertReceiverSpec(StrictModel):
    name: DnsLabel
    type: Literal["webhook", "email"]
    url: Annotated[str, Field(pattern=r"^https://")] | None = None
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(default_factory=list)
    smarthost: Annotated[str, Field(pattern=r"^[a-z0-9.-]+:[0-9]+$")] | None = None
    sender: str | None = None
    severities: list[AlertSeverity] = Field(default_factory=lambda: list(DEFAULT_ALERT_SEVERITIES))

    @model_validator(mode="after")
    def _complete(self) -> AlertReceiverSpec:
        if self.type == "webhook" and not self.url:
            raise ValueError(f"receiver {self.name!r} of type webhook needs url (https://...)")
        if self.type == "email" and not (self.to and self.smarthost and self.sender):
            raise ValueError(f"receiver {self.name!r} of type email needs to, smarthost and sender")
        return self


class ObservabilitySpec(StrictModel):
    """kube-prometheus-stack: Prometheus, Alertmanager, Grafana (dashboards and alerts built by the platform)."""

    enabled: bool = True
    metrics_retention_days: Annotated[int, Field(ge=1)] | None = None
    storage_size: Quantity = "200Gi"
    storage_class: str | None = None
    receivers: list[AlertReceiverSpec] = Field(default_factory=list)
    egress_cidrs: list[Cidr] = Field(default_factory=list)
    """Where Alertmanager reaches its receivers (webhook endpoints, mail relays)."""


def _quorum_nodes(value: int) -> int:
    if value == 2:
        raise ValueError(
            "cannot keep a quorum of master-eligible nodes (with 2, losing either stops the cluster); "
            "use 1 or at least 3"
        )
    return value


class LoggingSpec(StrictModel):
    """ECK (Elasticsearch, Kibana) and Fluent Bit, with PII redacted on the node."""

    enabled: bool = True
    elasticsearch_nodes: Annotated[int, Field(ge=1), AfterValidator(_quorum_nodes)] | None = None
    """Master-eligible Elasticsearch nodes: 1, or 3 and more (default per profile: 1 baseline, 3 otherwise)."""
    storage_size: Quantity = "500Gi"
    storage_class: str | None = None
    audit_retention_days: Annotated[int, Field(ge=1)] | None = None
    app_retention_days: Annotated[int, Field(ge=1)] | None = None
    redaction_patterns: list[str] = Field(default_factory=list)
    """Extra patterns masked before logs leave the node (Python regular expressions, simple subset)."""

    @model_validator(mode="after")
    def _patterns(self) -> LoggingSpec:
        validate_extra_patterns(list(self.redaction_patterns))  # compiled now, at preview: one clear error
        return self


# Fluent Bit's namespace: it reads node log files (hostPath), the platform's second documented exception.
LOG_SHIPPER_NAMESPACE = "llm-log-shipper"


def _reason(value: str) -> str:
    if len(value.strip()) < 10:
        raise ValueError("an exception needs its reason: a sentence an auditor can check (10 characters or more)")
    return value.strip()


Reason = Annotated[str, AfterValidator(_reason)]


class PolicySpec(StrictModel):
    """How the policy pack judges this stack, beyond its profile: documented exceptions and overrides. Both reach
    `pulumi preview --policy-pack policies` (through `private-llm policy-config`) and the offline check, and both
    are listed in the evidence report."""

    exceptions: dict[NamespaceName, Reason] = Field(default_factory=dict)
    """Namespaces the pack's resource rules skip, each with its reason. The GPU Operator and log shipper namespaces
    get built-in reasons when not listed here."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """`--policy-pack-config` entries merged over the profile's: {policy id or "all": level or {key: value}}."""

    @model_validator(mode="after")
    def _valid_overrides(self) -> PolicySpec:
        problems = validate_pack_config(self.overrides)
        if problems:
            raise ValueError("overrides: " + "; ".join(problems))
        return self
