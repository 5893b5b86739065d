"""The CrossGuard entry point and project files: what `pulumi preview --policy-pack policies` would load."""

from __future__ import annotations

import runpy
from typing import Any

import pulumi_policy
import pytest
import yaml

from policies.base import Rule, StackRule
from policies.pack import ALL_POLICIES, PACK_NAME
from tests.conftest import ROOT


def test_pack_main_constructs_the_pack_with_every_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    built: dict[str, Any] = {}

    class Recorder:
        def __init__(self, **kwargs: Any) -> None:
            built.update(kwargs)

    monkeypatch.setattr(pulumi_policy, "PolicyPack", Recorder)
    runpy.run_path(str(ROOT / "policies" / "__main__.py"), run_name="__main__")
    assert built["name"] == PACK_NAME
    assert built["policies"] is ALL_POLICIES
    assert built["enforcement_level"] == pulumi_policy.EnforcementLevel.MANDATORY


def test_every_policy_is_documented_and_unique() -> None:
    names = [p.name for p in ALL_POLICIES]
    assert len(names) == len(set(names))
    for policy in ALL_POLICIES:
        assert isinstance(policy, Rule | StackRule)
        assert policy.description and policy.remediation_steps and policy.severity
        assert policy.standards, policy.name
        assert policy.config_schema is not None and "kubernetesVersion" in policy.config_schema.properties


def test_project_files() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "private-llm"
    assert project["main"] == "infra/"
    assert project["stackConfigDir"] == "stacks"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    pack = yaml.safe_load((ROOT / "policies" / "PulumiPolicy.yaml").read_text())
    assert pack["runtime"]["name"] == "python"
    assert (ROOT / "policies" / pack["runtime"]["options"]["virtualenv"]).resolve() == (ROOT / ".venv").resolve()


def test_compliance_mapping_lists_every_policy() -> None:
    """docs/compliance.md is the auditor's map: a policy missing from it is a control nobody was told about."""
    from policies.pack import ALL_POLICIES

    text = (ROOT / "docs" / "compliance.md").read_text()
    missing = [p.name for p in ALL_POLICIES if f"| `{p.name}` |" not in text]
    assert missing == []


def test_readme_and_mapping_count_the_controls_the_pack_has() -> None:
    from policies.pack import ALL_POLICIES

    assert f"a CrossGuard pack of {len(ALL_POLICIES)} controls" in (ROOT / "README.md").read_text()
    assert f"the {len(ALL_POLICIES)} controls below" in (ROOT / "docs" / "compliance.md").read_text()
