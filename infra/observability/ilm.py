"""Elasticsearch index lifecycle: daily indices per log class, deleted after the profile's retention.

Two classes: `privatellm-audit-*` (the gateway's access log, the audit trail) and `privatellm-app-*` (container
logs). Fluent Bit writes `<prefix>-YYYY.MM.DD`; each index template attaches its ILM policy, whose delete phase
removes an index once it is older than the retention. `components/assets/apply_ilm.sh` applies the documents.
"""

from __future__ import annotations

import json
from typing import Any

AUDIT_PREFIX = "privatellm-audit"
APP_PREFIX = "privatellm-app"
AUDIT_DATASOURCE_UID = "privatellm-audit"
"""Grafana's Elasticsearch data source on the audit indices (kube-prometheus-stack values, gateway dashboard)."""


def ilm_policy(retention_days: int) -> dict[str, Any]:
    if retention_days < 1:
        raise ValueError(f"retention_days={retention_days} must be at least 1")
    return {
        "policy": {
            "_meta": {"managed_by": "private-llm", "retention_days": retention_days},
            "phases": {
                "hot": {"min_age": "0ms", "actions": {"set_priority": {"priority": 100}}},
                "delete": {"min_age": f"{retention_days}d", "actions": {"delete": {}}},
            },
        }
    }


# The audit trail's fields that are filtered and grouped on (Kibana, Grafana's "rejections by tenant"): exact
# keywords and a numeric status, instead of dynamic text mappings.
AUDIT_PROPERTIES: dict[str, Any] = {
    "tenant": {"type": "keyword"},
    "model": {"type": "keyword"},
    "status": {"type": "integer"},
    "response_flags": {"type": "keyword"},
    "request_id": {"type": "keyword"},
}
REVISION_AUDIT_PROPERTIES: dict[str, Any] = {
    "backend": {"type": "keyword"},
    "pinned_revision": {"type": "keyword"},
}
"""With model revisions: which revision's backend served a request and the revision an evaluator pinned (grouped
on by `private-llm rollout check` and the Revisions panels)."""


def index_template(prefix: str, replicas: int, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "index_patterns": [f"{prefix}-*"],
        "priority": 500,
        "_meta": {"managed_by": "private-llm"},
        "template": {
            "settings": {"index.lifecycle.name": prefix, "index.number_of_replicas": replicas},
            "mappings": {"dynamic": True, "properties": {"@timestamp": {"type": "date"}, **(properties or {})}},
        },
    }


def lifecycle_documents(
    audit_days: int, app_days: int, elasticsearch_nodes: int, revisions: bool = False
) -> dict[str, str]:
    """File name → JSON document, for the ILM Job's ConfigMap (`<name>.policy.json`, `<name>.template.json`);
    `revisions`: the audit log also records the serving revision."""
    replicas = 1 if elasticsearch_nodes > 1 else 0
    audit = {**AUDIT_PROPERTIES, **(REVISION_AUDIT_PROPERTIES if revisions else {})}
    documents = {
        f"{AUDIT_PREFIX}.policy.json": ilm_policy(audit_days),
        f"{APP_PREFIX}.policy.json": ilm_policy(app_days),
        f"{AUDIT_PREFIX}.template.json": index_template(AUDIT_PREFIX, replicas, audit),
        f"{APP_PREFIX}.template.json": index_template(APP_PREFIX, replicas),
    }
    return {name: json.dumps(doc, indent=2, sort_keys=True) for name, doc in documents.items()}
