"""`private-llm check --manifests`: the pack's Kubernetes rules on plain YAML from any tool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app
from infra.tools.manifests import ManifestError, check_manifests, load_manifests, pulumi_type
from tests.policies.fixtures import good_template

runner = CliRunner()
REGISTRY = "harbor.example.internal"
PINNED = f"{REGISTRY}/platform/app:1.0.0@sha256:{'ab' * 32}"


def pinned_template() -> dict[str, Any]:
    """A restricted pod whose images are digest-pinned (the finance profile requires it)."""
    t = good_template()
    for c in [*t["spec"]["containers"], *t["spec"]["initContainers"]]:
        c["image"] = PINNED
    return t


def deployment(template: dict[str, Any], name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "demo"}}, "template": template},
    }


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs)))
    return path


def bad_template() -> dict[str, Any]:
    t = good_template()
    t["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    t["spec"]["containers"][0]["image"] = "docker.io/library/nginx:latest"
    return t


def test_type_tokens_match_the_pulumi_kubernetes_provider() -> None:
    assert pulumi_type("v1", "Service") == "kubernetes:core/v1:Service"
    assert pulumi_type("apps/v1", "Deployment") == "kubernetes:apps/v1:Deployment"
    assert pulumi_type("networking.k8s.io/v1", "Ingress") == "kubernetes:networking.k8s.io/v1:Ingress"


def test_good_and_bad_objects(tmp_path: Path) -> None:
    write(tmp_path / "good.yaml", deployment(pinned_template(), "good"))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "demo"}, "ports": [{"port": 80}]},
    }
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "bad.yml", deployment(bad_template()), service)
    report = check_manifests(tmp_path, "finance", "1.33", [REGISTRY])
    failed = {(r.policy, r.resource) for r in report.failures}
    assert ("pss-privileged", "Deployment/shop/web") in failed
    assert ("images-from-internal-registry", "Deployment/shop/web") in failed
    assert ("no-external-services", "Service/shop/web") in failed
    assert not any(resource == "Deployment/shop/good" for _, resource in failed)
    assert any(
        r.policy == "kubernetes-schema" and r.resource == "Deployment/shop/good" and r.passed for r in report.results
    )
    assert report.resources == 3 and not report.ok


def test_cli_json_contract_and_exit_codes(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", deployment(bad_template()))
    result = runner.invoke(
        app, ["check", "--manifests", str(bad), "--profile", "finance", "--registry", REGISTRY, "--format", "json"]
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"results", "summary"}
    row = next(r for r in data["results"] if r["policy"] == "pss-privileged")
    assert row == {
        "policy": "pss-privileged",
        "resource": "Deployment/shop/web",
        "level": "mandatory",
        "passed": False,
        "message": row["message"],
    }
    assert row["message"] and data["summary"]["failedMandatory"] >= 1 and data["summary"]["profile"] == "finance"
    good = write(tmp_path / "good.yaml", deployment(pinned_template()))
    ok = runner.invoke(app, ["check", "--manifests", str(good), "--registry", REGISTRY])
    assert ok.exit_code == 0, ok.output
    assert "PASS manifests" in ok.output


def test_lists_and_multi_documents_are_read(tmp_path: Path) -> None:
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [deployment(pinned_template(), "a"), deployment(pinned_template(), "b")],
    }
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump(listed) + "---\n" + yaml.safe_dump(deployment(pinned_template(), "c")) + "---\n")
    assert [obj["metadata"]["name"] for _, obj in load_manifests(path)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a: [1, 2\n", "not valid YAML"),
        ("kind: Deployment\nmetadata: {name: x}\n", "not a Kubernetes object (needs apiVersion and kind)"),
    ],
)
def test_bad_input_names_the_document(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(content)
    with pytest.raises(ManifestError, match=r"x\.yaml"):
        load_manifests(path)
    result = runner.invoke(app, ["check", "--manifests", str(path)])
    assert result.exit_code == 2 and message in result.output


def test_stack_or_manifests_not_both(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 2 and "either --stack S" in result.output
    result = runner.invoke(app, ["check", "--manifests", str(tmp_path / "none"), "--profile", "banking"])
    assert result.exit_code == 2 and "'banking' is not a profile" in result.output
    result = runner.invoke(app, ["check", "--manifests", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no such file or folder" in result.output
