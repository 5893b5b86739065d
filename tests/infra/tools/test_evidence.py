"""The evidence report: every control with its standards and per-resource verdicts, exceptions with reasons, a
summary per standard; JSON, Markdown and HTML agree with the check they come from."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.cli import app
from infra.offline import load_stack_config, run_program, stack_file
from infra.pack_config import stack_pack_config
from infra.tools.checks import CRD_POLICY, SCHEMA_POLICY, CheckReport, CheckResult, check_recording, spec_of
from infra.tools.evidence import build_evidence, to_html, to_markdown, write_evidence
from policies.pack import ALL_POLICIES
from tests.conftest import ROOT

WHEN = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def finance() -> tuple[CheckReport, dict[str, object]]:
    config = load_stack_config(ROOT, "finance-prod")
    spec = spec_of(config)
    report = check_recording(run_program(config), spec)
    return report, stack_pack_config(spec)


def evidence_of(report: CheckReport, config: dict[str, object]) -> dict[str, object]:
    return build_evidence(report, config, stack_file(ROOT, report.stack), ROOT, WHEN)  # type: ignore[arg-type]


def test_every_control_of_the_pack_is_reported_with_its_metadata(finance: tuple[CheckReport, dict]) -> None:
    report, config = finance
    evidence = evidence_of(report, config)
    controls = {c["id"]: c for c in evidence["controls"]}
    assert set(controls) == {p.name for p in ALL_POLICIES} | {SCHEMA_POLICY, CRD_POLICY}
    for policy in ALL_POLICIES:
        c = controls[policy.name]
        assert c["description"] == policy.description and c["remediation"] == policy.remediation_steps
        assert c["standards"], policy.name
        assert c["severity"] in ("low", "medium", "high", "critical")
    assert evidence["verdict"] == "PASS" and evidence["profile"] == "finance"
    assert evidence["stackFile"]["digest"].startswith("sha256:")
    assert evidence["generatedAt"] == "2026-11-21T12:00:00Z"


def test_results_per_resource_and_counts(finance: tuple[CheckReport, dict]) -> None:
    report, config = finance
    evidence = evidence_of(report, config)
    privileged = next(c for c in evidence["controls"] if c["id"] == "pss-privileged")
    resources = {r["resource"] for r in privileged["results"]}
    assert "Deployment/llm-inference/llama-3-3-70b" in resources
    assert privileged["counts"]["pass"] == len(privileged["results"]) and privileged["status"] == "pass"
    total = sum(len(c["results"]) for c in evidence["controls"])
    assert total == len(report.results)


def test_exceptions_carry_their_reason_and_what_they_waived(finance: tuple[CheckReport, dict]) -> None:
    report, config = finance
    exceptions = {e["namespace"]: e for e in evidence_of(report, config)["exceptions"]}
    gpu = exceptions["gpu-operator"]
    assert gpu["reason"].startswith("NVIDIA GPU Operator")
    assert "namespace-pod-security" in gpu["controls"] and "Namespace/gpu-operator" in gpu["resources"]


def test_a_failure_shows_in_every_format_and_in_the_standard_summary(finance: tuple[CheckReport, dict]) -> None:
    report, config = finance
    failing = dataclasses.replace(
        report,
        results=[
            *report.results,
            CheckResult("pss-privileged", "Deployment/llm-inference/evil", "mandatory", False, "<script>x</script>"),
        ],
    )
    evidence = evidence_of(failing, config)
    assert evidence["verdict"] == "FAIL"
    control = next(c for c in evidence["controls"] if c["id"] == "pss-privileged")
    assert control["status"] == "fail" and control["counts"]["fail"] == 1
    pss = next(s for s in evidence["standards"] if s["framework"] == "Kubernetes Pod Security Standards")
    assert pss["failMandatory"] == 1 and pss["controls"] == 18
    markdown = to_markdown(evidence)
    assert "| `Deployment/llm-inference/evil` | fail |" in markdown and "**FAIL**" in markdown
    page = to_html(evidence)
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_standard_summary_counts_each_control_once(finance: tuple[CheckReport, dict]) -> None:
    report, config = finance
    evidence = evidence_of(report, config)
    for st in evidence["standards"]:
        ids = {x["control"] for x in st["references"]}
        assert st["controls"] == len(ids)
        assert (
            st["controls"] == st["pass"] + st["failMandatory"] + st["failAdvisory"] + st["exempt"] + st["notApplicable"]
        )
    cis = next(s for s in evidence["standards"] if s["framework"] == "CIS Kubernetes Benchmark")
    assert {"reference": "5.4.1", "control": "no-secret-env-values", "status": "pass"} in cis["references"]


def test_write_evidence_writes_three_files(finance: tuple[CheckReport, dict], tmp_path: Path) -> None:
    report, config = finance
    paths = write_evidence(evidence_of(report, config), tmp_path / "evidence")
    assert [p.name for p in paths] == ["evidence.json", "evidence.md", "evidence.html"]
    assert json.loads(paths[0].read_text())["stack"] == "finance-prod"


def test_cli_report_option(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["check", "--stack", "dev", "--report", str(tmp_path), "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "evidence.json").read_text())["profile"] == "baseline"
    bad = runner.invoke(app, ["check", "--manifests", str(tmp_path), "--report", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--report needs --stack" in bad.output


def test_model_revisions_and_their_approval_are_in_the_evidence(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["check", "--stack", "finance-prod", "--report", str(tmp_path), "--project-dir", str(ROOT)]
    assert runner.invoke(app, args).exit_code == 0
    evidence = json.loads((tmp_path / "evidence.json").read_text())
    assert evidence["revisions"] == [
        {
            "model": "llama-3.1-8b-instruct",
            "revision": "base",
            "workload": "llm-inference/llama-3-1-8b",
            "weight": 90,
            "approvedBy": None,
        },
        {
            "model": "llama-3.1-8b-instruct",
            "revision": "r2",
            "workload": "llm-inference/llama-3-1-8b-r2",
            "weight": 10,
            "approvedBy": None,
        },
    ]
    markdown = (tmp_path / "evidence.md").read_text()
    assert "| llama-3.1-8b-instruct | r2 | `llm-inference/llama-3-1-8b-r2` | 10% | - |" in markdown
    assert "<h2>Model revisions</h2>" in (tmp_path / "evidence.html").read_text()
    # a stack without revisions has no such section
    assert runner.invoke(app, [*args[:2], "dev", "--report", str(tmp_path / "dev"), *args[5:]]).exit_code == 0
    assert "Model revisions" not in (tmp_path / "dev" / "evidence.md").read_text()
