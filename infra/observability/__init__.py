"""Observability: alert and recording rules, dashboards, log shipping with PII redaction."""
