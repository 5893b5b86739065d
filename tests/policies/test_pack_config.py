"""Profiles, thresholds, documented exceptions and overrides: the pack's config schema, validated the same way for
the stack file, `--policy-config`, `--exempt` and the offline check."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pulumi_policy import EnforcementLevel
from typer.testing import CliRunner

from infra.cli import app
from infra.config import StackConfigError, parse_platform
from infra.offline import Recording, load_stack_config, run_program
from infra.pack_config import stack_pack_config
from infra.tools.checks import PolicyConfigError, build_report, check_recording, spec_of
from policies.base import CONFIG_PROPERTIES
from policies.pack import (
    ALL_POLICIES,
    level_for,
    merge_pack_config,
    policy_config,
    profile_pack_config,
    validate_pack_config,
)
from policies.profiles import LEVELS, PROFILES, THRESHOLDS, Profile, threshold
from policies.tls import TLS_RULES
from tests.conftest import ROOT
from tests.policies.fixtures import violations

CERT = "kubernetes:cert-manager.io/v1:Certificate"
LIFETIME = next(r for r in TLS_RULES if r.name == "certificate-lifetime")


def certificate(days: int) -> dict[str, Any]:
    return {"spec": {"duration": f"{days * 24}h", "privateKey": {"rotationPolicy": "Always"}}}


def test_profiles_are_one_list_everywhere() -> None:
    assert set(get_args(Profile)) == set(PROFILES) == set(THRESHOLDS) == set(LEVELS)
    assert CONFIG_PROPERTIES["profile"]["enum"] == list(PROFILES)


@pytest.mark.parametrize(("profile", "fails"), [("baseline", False), ("healthcare", False), ("finance", True)])
def test_profile_thresholds_apply_without_explicit_values(profile: str, fails: bool) -> None:
    # 150 days: within baseline (365) and healthcare (180), beyond finance (90)
    assert bool(violations(LIFETIME, CERT, certificate(150), profile=profile)) is fails


def test_an_explicit_threshold_wins_over_the_profile() -> None:
    config = policy_config(profile="healthcare", maxCertificateDays=30)
    assert threshold(config, "maxCertificateDays") == 30
    assert threshold(policy_config(profile="government"), "minAppRetentionDays") == 90
    with pytest.raises(TypeError, match="unknown thresholds"):
        policy_config(maxCertDays=3)


def test_profile_levels_reach_the_pack_document() -> None:
    baseline = profile_pack_config("baseline", policy_config())
    assert baseline["images-pinned"]["enforcementLevel"] == "advisory"
    images_pinned = next(p for p in ALL_POLICIES if p.name == "images-pinned")
    assert level_for(images_pinned, baseline["images-pinned"]) == EnforcementLevel.ADVISORY
    finance = profile_pack_config("finance", policy_config(profile="finance"))
    assert "enforcementLevel" not in finance["images-pinned"]
    assert validate_pack_config(baseline) == validate_pack_config(finance) == []


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"pss-privilegd": "mandatory"}, "'pss-privilegd' is not a policy of private-llm-baseline; did you mean"),
        ({"all": "hard"}, "all='hard': the level must be one of advisory, mandatory, remediate, disabled"),
        ({"log-retention": {"profile": "bank"}}, "log-retention.profile='bank': 'bank' is not one of"),
        ({"log-retention": {"minAuditRetentionDays": "365"}}, "'365' is not of type 'integer'"),
        ({"log-retention": {"minAuditRetentionDays": 0}}, "0 is less than the minimum of 1"),
        ({"pss-privileged": {"exemptNamespaces": {"gpu": ""}}}, "an exception needs its reason"),
        ({"pss-privileged": {"exemptNamespaces": {"gpu": "  because  "}}}, "an exception needs its reason"),
        ({"pss-privileged": {"maxCertDays": 1}}, "maxCertDays is not a policy config key; did you mean"),
        ({"pss-privileged": {"allowedRegistries": "harbor"}}, "'harbor' is not of type 'array'"),
        (["pss-privileged"], "must be an object of policy ids"),
    ],
)
def test_bad_pack_config_names_policy_key_and_fix(document: Any, expected: str) -> None:
    problems = validate_pack_config(document)
    assert len(problems) == 1 and expected in problems[0], problems


def test_merge_applies_all_first_then_named_policies() -> None:
    base = profile_pack_config("finance", policy_config(profile="finance"))
    merged = merge_pack_config(base, {"pss-privileged": "mandatory", "all": "advisory"})
    assert merged["pss-privileged"]["enforcementLevel"] == "mandatory"
    assert merged["log-retention"]["enforcementLevel"] == "advisory"
    assert merged["log-retention"]["profile"] == "finance"  # the rest of the config stays


def test_offline_check_refuses_an_invalid_config_before_running() -> None:
    empty = Recording(stack="x", resources=[])
    with pytest.raises(PolicyConfigError) as info:
        build_report(empty, {"pss-privileged": {"profile": "bank"}}, "bank", "1.31")
    assert "pss-privileged.profile='bank'" in str(info.value)
    with pytest.raises(PolicyConfigError):
        build_report(empty, {**policy_config(), "exemptNamespaces": {"gpu-operator": ""}}, "baseline", "1.31")


def platform_with(policy: dict[str, Any]) -> dict[str, Any]:
    return {"profile": "finance", "policy": policy}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"exceptions": {"llm-inference": "lab"}}, "policy.exceptions.llm-inference"),
        ({"exceptions": {"other-team": "another team runs its own workloads there"}}, "does not create"),
        ({"overrides": {"images-pined": "advisory"}}, "'images-pined' is not a policy"),
        ({"overrides": {"log-retention": {"minAuditRetentionDays": "a year"}}}, "is not of type 'integer'"),
        ({"exeptions": {}}, "exeptions"),
    ],
)
def test_stack_file_policy_section_is_validated(policy: dict[str, Any], expected: str) -> None:
    with pytest.raises(StackConfigError) as info:
        parse_platform(platform_with(policy), "test")
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_stack_exceptions_and_overrides_reach_the_pack_config() -> None:
    spec = parse_platform(
        platform_with(
            {
                "exceptions": {"llm-inference": "lab inference namespace, isolated cluster, no tenant data"},
                "overrides": {"images-pinned": "advisory", "log-retention": {"minAuditRetentionDays": 730}},
            }
        ),
        "test",
    )
    document = stack_pack_config(spec)
    assert document["pss-privileged"]["exemptNamespaces"]["llm-inference"].startswith("lab inference")
    assert document["images-pinned"]["enforcementLevel"] == "advisory"
    assert document["log-retention"]["minAuditRetentionDays"] == 730
    assert validate_pack_config(document) == []


def test_override_changes_the_offline_verdict() -> None:
    config = load_stack_config(ROOT, "dev")
    spec = spec_of(config)
    recording = run_program(config)
    assert check_recording(recording, spec).ok  # images-pinned is advisory in the baseline profile
    strict = check_recording(recording, spec, overrides={"images-pinned": "mandatory"})
    assert not strict.ok and {r.policy for r in strict.mandatory_failures} == {"images-pinned"}


def test_cli_policy_config_and_exempt_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "pack.yaml"
    bad.write_text(yaml.safe_dump({"certificate-lifetime": {"maxCertificateDays": "30"}}))
    result = runner.invoke(app, ["check", "--stack", "dev", "--policy-config", str(bad), "--project-dir", str(ROOT)])
    assert result.exit_code == 2 and "certificate-lifetime.maxCertificateDays='30'" in result.output
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}))
    result = runner.invoke(app, ["check", "--manifests", str(manifest), "--exempt", "llm=short"])
    assert result.exit_code == 2 and "--exempt 'llm=short'" in result.output
    result = runner.invoke(app, ["check", "--stack", "dev", "--exempt", "llm=because it is a lab namespace"])
    assert result.exit_code == 2 and "policy.exceptions" in result.output
    result = runner.invoke(app, ["check", "--manifests", str(manifest), "--profile", "bank"])
    assert result.exit_code == 2 and "is not a profile" in result.output


def test_trust_remote_code_needs_the_policy_lowered_explicitly() -> None:
    raw = yaml.safe_load((ROOT / "stacks" / "Pulumi.finance-prod.yaml").read_text())["config"]["privatellm:platform"]
    raw["models"][0]["trust_remote_code"] = True
    with pytest.raises(StackConfigError) as info:
        parse_platform(raw, "test")
    assert len(info.value.problems) == 1
    assert "models[0].trust_remote_code=true" in info.value.problems[0]
    assert "policy.overrides.vllm-no-trust-remote-code: advisory" in info.value.problems[0]
    raw["policy"] = {"overrides": {"vllm-no-trust-remote-code": "advisory"}}
    accepted = parse_platform(raw, "test")
    assert accepted.policy_level("vllm-no-trust-remote-code") == "advisory"
    assert stack_pack_config(accepted)["vllm-no-trust-remote-code"]["enforcementLevel"] == "advisory"


def test_autoscaling_without_the_platform_prometheus_is_refused() -> None:
    raw = yaml.safe_load((ROOT / "stacks" / "Pulumi.finance-prod.yaml").read_text())["config"]["privatellm:platform"]
    assert any(m.get("autoscaling", {}).get("enabled") for m in raw["models"])
    raw["observability"] = {**raw.get("observability", {}), "enabled": False}
    with pytest.raises(StackConfigError) as info:
        parse_platform(raw, "test")
    assert any("autoscaling.enabled=true scales on vllm:num_requests_waiting" in p for p in info.value.problems)
