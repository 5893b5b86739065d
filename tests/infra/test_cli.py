"""The `private-llm` command end to end (render, check, help, errors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app
from tests.conftest import ROOT

runner = CliRunner()


def test_help_has_examples() -> None:
    for args in ([], ["render", "--help"], ["check", "--help"]):
        result = runner.invoke(app, [*args, "--help"] if args == [] else args)
        assert ("private-llm" in result.output and "--stack" in result.output) or args == []
        assert "Example" in result.output


def test_render_writes_the_layout(tmp_path: Path) -> None:
    result = runner.invoke(app, ["render", "--stack", "dev", "--out", str(tmp_path), "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert "Resources by kind" in result.output and "Resources by component" in result.output
    assert (tmp_path / "resources.json").is_file()
    assert (tmp_path / "manifests" / "_cluster" / "Namespace-llm-inference.yaml").is_file()
    assert (tmp_path / "charts").is_dir()


def test_check_json(crds: Path) -> None:
    result = runner.invoke(
        app, ["check", "--stack", "dev", "--format", "json", "--crd-schemas", str(crds), "--project-dir", str(ROOT)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["summary"]["ok"] is True and data["summary"]["failedMandatory"] == 0
    first = data["results"][0]
    assert set(first) == {"policy", "resource", "level", "passed", "message"}


def copy_project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    shutil.copytree(ROOT / "stacks", tmp_path / "stacks")
    return tmp_path


def test_misspelt_key_fails_naming_the_key(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    path = project / "stacks" / "Pulumi.dev.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["config"]["privatellm:platform"]["tenants"][0]["namspace"] = "x"
    (project / "stacks" / "Pulumi.typo.yaml").write_text(yaml.safe_dump(doc))
    for command in ("render", "check"):
        args = [command, "--stack", "typo", "--project-dir", str(project)]
        if command == "render":
            args += ["--out", str(tmp_path / "out")]
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert (
            "privatellm:platform.tenants[0].namspace: unknown key 'namspace'; did you mean 'namespace'?"
            in result.output
        )
    assert not (tmp_path / "out").exists()


def test_check_exits_1_on_a_mandatory_violation(monkeypatch: pytest.MonkeyPatch, crds: Path) -> None:
    import dataclasses

    import infra.builders.namespaces as namespaces_module

    original = namespaces_module.namespace_args

    def lenient(*args: object, **kwargs: object) -> object:
        made = original(*args, **kwargs)  # type: ignore[arg-type]
        if made.name != "tenant-research":
            return made
        return dataclasses.replace(made, pod_security_level="baseline", exception_reason="test")

    monkeypatch.setattr(namespaces_module, "namespace_args", lenient)
    result = runner.invoke(app, ["check", "--stack", "dev", "--project-dir", str(ROOT), "--crd-schemas", str(crds)])
    assert result.exit_code == 1, result.output
    assert "FAIL stack dev" in result.output
    as_json = runner.invoke(app, ["check", "--stack", "dev", "--project-dir", str(ROOT), "--format", "json"])
    assert as_json.exit_code == 1
    failed = [r for r in json.loads(as_json.stdout)["results"] if not r["passed"] and r["level"] == "mandatory"]
    assert {(r["policy"], r["resource"]) for r in failed} == {("namespace-pod-security", "Namespace/tenant-research")}


def test_check_follows_the_target_version(tmp_path: Path, crds: Path) -> None:
    project = copy_project(tmp_path)
    doc = yaml.safe_load((project / "stacks" / "Pulumi.dev.yaml").read_text())
    doc["config"]["privatellm:platform"]["cluster"]["kubernetes_version"] = "1.33"
    (project / "stacks" / "Pulumi.v133.yaml").write_text(yaml.safe_dump(doc))
    result = runner.invoke(
        app, ["check", "--stack", "v133", "--project-dir", str(project), "--crd-schemas", str(crds), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["kubernetesVersion"] == "1.33"
    rendered = runner.invoke(
        app, ["render", "--stack", "v133", "--project-dir", str(project), "--out", str(tmp_path / "o")]
    )
    assert rendered.exit_code == 0
    ns = yaml.safe_load((tmp_path / "o" / "manifests" / "_cluster" / "Namespace-tenant-research.yaml").read_text())
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce-version"] == "v1.33"


def test_unknown_stack(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", "--stack", "nope", "--project-dir", str(ROOT)])
    assert result.exit_code == 2
    assert "no stack file" in result.output and "dev" in result.output


def test_doctor_reports_an_unreachable_cluster_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    result = runner.invoke(app, ["doctor", "--stack", "dev", "--format", "json", "--project-dir", str(ROOT)])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    [api] = [c for c in data["checks"] if c["check"] == "kubernetes-api"]
    assert not api["passed"] and api["fix"]
    assert data["summary"]["ok"] is False


def test_policy_config_for_the_real_engine_carries_version_and_exemptions() -> None:
    from policies.pack import ALL_POLICIES

    result = runner.invoke(app, ["policy-config", "--stack", "finance-prod", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {p.name for p in ALL_POLICIES}
    for config in data.values():
        assert config["kubernetesVersion"] == "1.33"
        assert config["exemptNamespaces"]["gpu-operator"].startswith("NVIDIA GPU Operator")
