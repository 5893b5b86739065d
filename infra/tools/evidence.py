"""The compliance evidence report: every control of the pack with its standards, the verdict per resource, the
documented exceptions, and a summary per standard, as JSON (for tools), Markdown (for review) and HTML (for the
auditor's browser).

The report is built from the same CheckReport the `check` command prints, so it can never disagree with it; each
control's metadata (description, remediation, severity, standards) is read from the policy objects themselves.
"""

from __future__ import annotations

import hashlib
import html
import json
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.offline import Recording
from infra.tools.checks import CRD_POLICY, SCHEMA_POLICY, CheckReport, CheckResult
from policies.base import Rule, StackRule, Standard
from policies.inference import APPROVED_BY_ANNOTATION, REVISION_LABEL, REVISION_WEIGHT_ANNOTATION, SERVING_TYPES
from policies.pack import ALL_POLICIES, PACK_NAME

EXEMPT_PREFIX = "exempt: "

# The two checks of the offline engine that are not pack policies (the real engine validates against the API server).
ENGINE_CONTROLS: dict[str, dict[str, Any]] = {
    SCHEMA_POLICY: {
        "description": "Every built-in Kubernetes object validates against the OpenAPI schema of the target version "
        "(kubernetes-validate --strict): an object the API server would reject never reaches a deploy.",
        "remediation": "Fix the field named in the message; the schema is the target Kubernetes version's.",
        "severity": "high",
        "standards": [],
    },
    CRD_POLICY: {
        "description": "Every custom resource validates against its upstream CRD schema; fields the API server "
        "would prune are reported.",
        "remediation": "Fix the field named in the message against the CRD of the pinned operator version.",
        "severity": "high",
        "standards": [],
    },
}


@dataclass(frozen=True)
class Control:
    id: str
    kind: str  # resource, stack or engine
    description: str
    remediation: str
    severity: str
    level: str
    standards: tuple[Standard, ...]


def controls(report: CheckReport) -> list[Control]:
    """Every control that ran for this report, with its metadata, in the order the pack lists them."""
    by_name = {p.name: p for p in ALL_POLICIES}
    out: list[Control] = []
    for name, level in report.policies:
        policy = by_name.get(name)
        if isinstance(policy, Rule | StackRule):
            out.append(
                Control(
                    id=name,
                    kind="resource" if isinstance(policy, Rule) else "stack",
                    description=policy.description or "",
                    remediation=policy.remediation_steps or "",
                    severity=policy.severity.value if policy.severity else "",
                    level=level,
                    standards=policy.standards,
                )
            )
        elif name in ENGINE_CONTROLS:
            meta = ENGINE_CONTROLS[name]
            out.append(Control(name, "engine", meta["description"], meta["remediation"], meta["severity"], level, ()))
    return out


def _status(results: list[CheckResult]) -> str:
    if not results:
        return "not-applicable"
    if any(not r.passed for r in results):
        return "fail"
    if all(r.message.startswith(EXEMPT_PREFIX) for r in results):
        return "exempt"
    return "pass"


def _result(r: CheckResult) -> dict[str, Any]:
    if r.message.startswith(EXEMPT_PREFIX):
        return {"resource": r.resource, "verdict": "exempt", "reason": r.message.removeprefix(EXEMPT_PREFIX)}
    return {"resource": r.resource, "verdict": "pass" if r.passed else "fail", "message": r.message}


def _file_digest(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _git_commit(project_dir: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(project_dir), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(project_dir), "status", "--porcelain"], capture_output=True, text=True, timeout=10
    )
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def exceptions_of(config: dict[str, Any], report: CheckReport) -> list[dict[str, Any]]:
    """The documented exceptions (namespace → reason) of the pack config, with the controls they waived."""
    reasons: dict[str, str] = {}
    for document in [config, *[v for v in config.values() if isinstance(v, dict)]]:
        exempt = document.get("exemptNamespaces")
        if isinstance(exempt, dict):
            reasons.update({str(k): str(v) for k, v in exempt.items()})
    waived: dict[str, set[str]] = defaultdict(set)
    resources: dict[str, set[str]] = defaultdict(set)
    for r in report.results:
        if not r.message.startswith(EXEMPT_PREFIX):
            continue
        for namespace in reasons:
            parts = r.resource.split("/")
            if (len(parts) == 3 and parts[1] == namespace) or r.resource == f"Namespace/{namespace}":
                waived[namespace].add(r.policy)
                resources[namespace].add(r.resource)
    return [
        {
            "namespace": namespace,
            "reason": reason,
            "controls": sorted(waived[namespace]),
            "resources": sorted(resources[namespace]),
        }
        for namespace, reason in sorted(reasons.items())
    ]


def model_revisions(recording: Recording) -> list[dict[str, Any]]:
    """Every rendered revision of a model: its workload, its share of the model's traffic and who approved it (the
    change-management record of canaries and promotions)."""
    out = []
    for r in recording.kubernetes_objects():
        if r.type not in SERVING_TYPES:
            continue
        meta = r.inputs.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        if REVISION_LABEL not in labels:
            continue
        out.append(
            {
                "model": labels.get("privatellm.io/model"),
                "revision": labels[REVISION_LABEL],
                "workload": f"{meta.get('namespace')}/{meta.get('name')}",
                "weight": int(annotations.get(REVISION_WEIGHT_ANNOTATION, 0)),
                "approvedBy": annotations.get(APPROVED_BY_ANNOTATION),
            }
        )
    return out


def build_evidence(
    report: CheckReport,
    config: dict[str, Any],
    stack_file: Path | None = None,
    project_dir: Path | None = None,
    generated_at: datetime | None = None,
    revisions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    grouped: dict[str, list[CheckResult]] = defaultdict(list)
    for r in report.results:
        grouped[r.policy].append(r)
    entries = []
    for control in controls(report):
        results = grouped.get(control.id, [])
        entries.append(
            {
                "id": control.id,
                "kind": control.kind,
                "level": control.level,
                "severity": control.severity,
                "status": _status(results),
                "description": control.description,
                "remediation": control.remediation,
                "standards": [
                    {"framework": s.framework, "version": s.version, "reference": s.reference}
                    for s in control.standards
                ],
                "counts": {
                    "pass": sum(1 for r in results if r.passed and not r.message.startswith(EXEMPT_PREFIX)),
                    "fail": sum(1 for r in results if not r.passed),
                    "exempt": sum(1 for r in results if r.message.startswith(EXEMPT_PREFIX)),
                },
                "results": [_result(r) for r in results],
            }
        )
    return {
        "report": "private-llm compliance evidence",
        "pack": PACK_NAME,
        "stack": report.stack,
        "profile": report.profile,
        "kubernetesVersion": report.kubernetes_version,
        "generatedAt": (generated_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "stackFile": {"path": stack_file.name if stack_file else None, "digest": _file_digest(stack_file)},
        "commit": _git_commit(project_dir) if project_dir else None,
        "verdict": "PASS" if report.ok else "FAIL",
        "summary": report.summary() | {"controls": len(entries)},
        "standards": standards_summary(entries),
        "exceptions": exceptions_of(config, report),
        "revisions": revisions or [],
        "controls": entries,
    }


def standards_summary(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per framework: how many of its controls pass, fail (mandatory/advisory), are exempt or do not apply."""
    by_framework: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for entry in entries:
        for s in entry["standards"]:
            by_framework[(s["framework"], s["version"])].append((s["reference"], entry))
    out = []
    for (framework, version), items in sorted(by_framework.items()):
        unique = list({e["id"]: e for _, e in items}.values())  # a control citing three references counts once
        statuses = [e["status"] for e in unique]
        out.append(
            {
                "framework": framework,
                "version": version,
                "controls": len(unique),
                "pass": statuses.count("pass"),
                "failMandatory": sum(1 for e in unique if e["status"] == "fail" and e["level"] == "mandatory"),
                "failAdvisory": sum(1 for e in unique if e["status"] == "fail" and e["level"] != "mandatory"),
                "exempt": statuses.count("exempt"),
                "notApplicable": statuses.count("not-applicable"),
                "references": sorted(
                    ({"reference": ref, "control": e["id"], "status": e["status"]} for ref, e in items),
                    key=lambda x: (x["reference"], x["control"]),
                ),
            }
        )
    return out


# ------------------------------------------------------------------------------------------------------------------
# Writers
# ------------------------------------------------------------------------------------------------------------------


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(evidence: dict[str, Any]) -> str:
    s = evidence["summary"]
    lines = [
        f"# Compliance evidence: stack `{evidence['stack']}`",
        "",
        f"- Verdict: **{evidence['verdict']}** ({s['failedMandatory']} mandatory and {s['failedAdvisory']} advisory "
        f"failures; {s['controls']} controls, {s['results']} results over {s['resources']} resources)",
        f"- Profile: `{evidence['profile']}`; target Kubernetes {evidence['kubernetesVersion']}; "
        f"policy pack `{evidence['pack']}`",
        f"- Stack file: `{evidence['stackFile']['path']}` ({evidence['stackFile']['digest']}); "
        f"commit {evidence['commit'] or 'unknown'}",
        f"- Generated {evidence['generatedAt']} by `private-llm check --report` (offline: the program under Pulumi "
        "mocks, the same policy objects `pulumi preview --policy-pack policies` runs)",
        "",
        "## Summary per standard",
        "",
        "| standard | version | controls | pass | fail (mandatory) | fail (advisory) | exempt | not applicable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for st in evidence["standards"]:
        lines.append(
            f"| {_md(st['framework'])} | {st['version']} | {st['controls']} | {st['pass']} | {st['failMandatory']} | "
            f"{st['failAdvisory']} | {st['exempt']} | {st['notApplicable']} |"
        )
    lines += ["", "### Controls by reference", ""]
    for st in evidence["standards"]:
        cells = "; ".join(f"{_md(x['reference'])} → {x['control']} ({x['status']})" for x in st["references"])
        lines.append(f"- **{_md(st['framework'])} {st['version']}**: {cells}")
    lines += ["", "## Exceptions", ""]
    if evidence["exceptions"]:
        lines += ["| namespace | reason | controls waived | resources |", "|---|---|---|---|"]
        for ex in evidence["exceptions"]:
            lines.append(
                f"| `{ex['namespace']}` | {_md(ex['reason'])} | {', '.join(ex['controls']) or '-'} | "
                f"{len(ex['resources'])} |"
            )
    else:
        lines.append("None: no namespace is exempt from any control.")
    if evidence.get("revisions"):
        lines += [
            "",
            "## Model revisions",
            "",
            "| model | revision | workload | weight | approved by |",
            "|---|---|---|---|---|",
        ]
        for rev in evidence["revisions"]:
            lines.append(
                f"| {_md(str(rev['model']))} | {_md(rev['revision'])} | `{rev['workload']}` | {rev['weight']}% | "
                f"{_md(rev['approvedBy'] or '-')} |"
            )
    lines += [
        "",
        "## Controls",
        "",
        "| control | level | severity | status | pass | fail | exempt | standards |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in evidence["controls"]:
        refs = "; ".join(f"{x['framework']} {x['reference']}" for x in c["standards"]) or "-"
        n = c["counts"]
        lines.append(
            f"| [{c['id']}](#{c['id']}) | {c['level']} | {c['severity']} | {c['status']} | {n['pass']} | {n['fail']} | "
            f"{n['exempt']} | {_md(refs)} |"
        )
    for c in evidence["controls"]:
        lines += [
            "",
            f"### {c['id']}",
            "",
            _md(c["description"]),
            "",
            f"- Level: {c['level']}; severity: {c['severity']}; status: **{c['status']}**",
            f"- Remediation: {_md(c['remediation'])}",
        ]
        for x in c["standards"]:
            lines.append(f"- {x['framework']} {x['version']}: {x['reference']}")
        if c["results"]:
            lines += ["", "| resource | verdict | detail |", "|---|---|---|"]
            for r in c["results"]:
                detail = r.get("message") or r.get("reason") or ""
                lines.append(f"| `{r['resource']}` | {r['verdict']} | {_md(detail)} |")
        else:
            lines += ["", "No resource of this stack is subject to this control."]
    return "\n".join(lines) + "\n"


def to_html(evidence: dict[str, Any]) -> str:
    e = html.escape
    s = evidence["summary"]
    rows = "".join(
        f"<tr><td>{e(st['framework'])}</td><td>{e(st['version'])}</td><td>{st['controls']}</td><td>{st['pass']}</td>"
        f"<td>{st['failMandatory']}</td><td>{st['failAdvisory']}</td><td>{st['exempt']}</td>"
        f"<td>{st['notApplicable']}</td></tr>"
        for st in evidence["standards"]
    )
    exceptions = "".join(
        f"<tr><td><code>{e(x['namespace'])}</code></td><td>{e(x['reason'])}</td>"
        f"<td>{e(', '.join(x['controls']) or '-')}</td><td>{len(x['resources'])}</td></tr>"
        for x in evidence["exceptions"]
    )
    revisions = "".join(
        f"<tr><td>{e(str(x['model']))}</td><td>{e(x['revision'])}</td><td><code>{e(x['workload'])}</code></td>"
        f"<td>{x['weight']}%</td><td>{e(x['approvedBy'] or '-')}</td></tr>"
        for x in evidence.get("revisions") or []
    )
    sections = []
    for c in evidence["controls"]:
        results = "".join(
            f"<tr class='{e(r['verdict'])}'><td><code>{e(r['resource'])}</code></td><td>{e(r['verdict'])}</td>"
            f"<td>{e(r.get('message') or r.get('reason') or '')}</td></tr>"
            for r in c["results"]
        )
        standards = "".join(
            f"<li>{e(x['framework'])} {e(x['version'])}: {e(x['reference'])}</li>" for x in c["standards"]
        )
        sections.append(
            f"<section id='{e(c['id'])}'><h3>{e(c['id'])} <span class='{e(c['status'])}'>{e(c['status'])}</span></h3>"
            f"<p>{e(c['description'])}</p><p><b>Level</b> {e(c['level'])} · <b>severity</b> {e(c['severity'])}</p>"
            f"<p><b>Remediation</b> {e(c['remediation'])}</p><ul>{standards}</ul>"
            + (
                f"<table><tr><th>resource</th><th>verdict</th><th>detail</th></tr>{results}</table>"
                if results
                else "<p>No resource of this stack is subject to this control.</p>"
            )
            + "</section>"
        )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:90em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
        ".fail{color:#b00020;font-weight:bold}.pass{color:#1b5e20}.exempt{color:#8d6e00}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Compliance evidence: {e(evidence['stack'])}</title>"
        f"<style>{style}</style></head><body><h1>Compliance evidence: stack <code>{e(evidence['stack'])}</code></h1>"
        f"<p>Verdict <b class='{'pass' if evidence['verdict'] == 'PASS' else 'fail'}'>{e(evidence['verdict'])}</b>: "
        f"{s['failedMandatory']} mandatory and {s['failedAdvisory']} advisory failures; {s['controls']} controls. "
        f"Profile <code>{e(evidence['profile'])}</code>, Kubernetes {e(evidence['kubernetesVersion'])}, "
        f"pack <code>{e(evidence['pack'])}</code>, stack file {e(str(evidence['stackFile']['path']))} "
        f"({e(str(evidence['stackFile']['digest']))}), commit {e(str(evidence['commit']))}, "
        f"generated {e(evidence['generatedAt'])}.</p>"
        "<h2>Summary per standard</h2><table><tr><th>standard</th><th>version</th><th>controls</th><th>pass</th>"
        f"<th>fail (mandatory)</th><th>fail (advisory)</th><th>exempt</th><th>not applicable</th></tr>{rows}</table>"
        "<h2>Exceptions</h2>"
        + (
            "<table><tr><th>namespace</th><th>reason</th><th>controls waived</th><th>resources</th></tr>"
            f"{exceptions}</table>"
            if exceptions
            else "<p>None.</p>"
        )
        + (
            "<h2>Model revisions</h2><table><tr><th>model</th><th>revision</th><th>workload</th><th>weight</th>"
            f"<th>approved by</th></tr>{revisions}</table>"
            if revisions
            else ""
        )
        + "<h2>Controls</h2>"
        + "".join(sections)
        + "</body></html>\n"
    )


def write_evidence(evidence: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("evidence.json", json.dumps(evidence, indent=2) + "\n"),
        ("evidence.md", to_markdown(evidence)),
        ("evidence.html", to_html(evidence)),
    ):
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
