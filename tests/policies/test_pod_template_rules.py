"""What holds for every pod-template rule of the workload and model-server areas (their cases are in
tests/policies/test_workloads.py and test_inference.py): compliant templates pass on every pod kind, each case fails or
passes as declared, unrelated types are ignored, half-known props during preview do not crash, every rule is in the
pack with the metadata the evidence report reads."""

from __future__ import annotations

import pytest

from tests.policies import test_inference, test_workloads
from tests.policies.fixtures import (
    POD_KINDS,
    Base,
    Case,
    check_case,
    good_template,
    in_the_pack_with_report_metadata,
    partial_props_do_not_crash,
    violations,
    vllm_template,
    wrap,
)

RULES = {**test_workloads.RULES, **test_inference.RULES}
CASES: list[Case] = [*test_workloads.CASES, *test_inference.CASES]


@pytest.mark.parametrize("kind", POD_KINDS)
@pytest.mark.parametrize("rule_id", sorted(RULES))
@pytest.mark.parametrize("base", [good_template, vllm_template], ids=["app", "vllm"])
def test_compliant_templates_pass(rule_id: str, kind: str, base: Base) -> None:
    resource_type, props = wrap(kind, base())
    assert violations(RULES[rule_id], resource_type, props) == []


@pytest.mark.parametrize("kind", POD_KINDS)
@pytest.mark.parametrize("case", CASES, ids=[f"{r}:{w}" for r, w, *_ in CASES])
def test_fixture(case: Case, kind: str) -> None:
    check_case(RULES, case, kind)


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_unrelated_types_are_ignored(rule_id: str) -> None:
    props = {"metadata": {"name": "x", "namespace": "llm"}, "spec": {"shareProcessNamespace": True}}
    assert violations(RULES[rule_id], "kubernetes:core/v1:ConfigMap", props) == []


def test_partial_props_during_preview_do_not_crash() -> None:
    partial_props_do_not_crash(RULES.values())


def test_rules_are_in_the_pack_with_report_metadata() -> None:
    in_the_pack_with_report_metadata(RULES.values())
