"""Mutation test of the policy pack: take each shipped stack's rendered resources, inject each known violation into
a resource that complies, and require the matching policy to fail on it. No injected violation may pass.

The mutations live with each area's policy tests (`tests/policies/test_<area>.py`: `MUTATIONS`, `STACK_MUTATIONS`,
`ADDITIONS`; see tests/policies/mutations.py) and are collected here. Every policy of the pack has at least one
mutation, and every mutation applies to at least one shipped stack.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil
from types import ModuleType
from typing import Any

import pytest

import tests.policies
from infra.offline import RecordedResource, Recording, available_stacks, load_stack_config, run_program
from infra.pack_config import stack_pack_config
from infra.tools.checks import CheckResult, run_resource_rules, run_stack_rules, spec_of
from policies.base import minor_of
from policies.pack import ALL_POLICIES, ALL_STACK_RULES, RESOURCE_RULES
from tests.conftest import ROOT
from tests.policies.mutations import Addition, Mutation, StackAddition, StackMutation

STACKS = available_stacks(ROOT)
AREAS: list[ModuleType] = [
    importlib.import_module(f"tests.policies.{m.name}")
    for m in pkgutil.iter_modules(tests.policies.__path__)
    if m.name.startswith("test_")
]
MUTATIONS: list[Mutation] = [m for area in AREAS for m in getattr(area, "MUTATIONS", [])]
STACK_MUTATIONS: dict[str, StackMutation] = {
    k: v for area in AREAS for k, v in getattr(area, "STACK_MUTATIONS", {}).items()
}
ADDITIONS: dict[str, Addition] = {k: v for area in AREAS for k, v in getattr(area, "ADDITIONS", {}).items()}
STACK_ADDITIONS: dict[str, StackAddition] = {
    k: v for area in AREAS for k, v in getattr(area, "STACK_ADDITIONS", {}).items()
}


# Stack rules: the violation is a safeguard taken away (in a namespace that is not a documented exception).
def without_first(recording: Recording, config: dict[str, Any], match: StackMutation) -> Recording:
    target = next(r for r in recording.resources if r.is_kubernetes_object and match(r) and not exempt(config, r))
    return dataclasses.replace(recording, resources=[r for r in recording.resources if r is not target])


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[Recording, dict[str, Any]]]:
    out = {}
    for name in STACKS:
        config = load_stack_config(ROOT, name)
        out[name] = (run_program(config), stack_pack_config(spec_of(config)))
    return out


@pytest.fixture(params=STACKS)
def stack(
    request: pytest.FixtureRequest, rendered: dict[str, tuple[Recording, dict[str, Any]]]
) -> tuple[str, Recording, dict[str, Any]]:
    recording, config = rendered[request.param]
    return request.param, recording, config


def failures(results: list[CheckResult], policy: str, resource: str | None = None) -> list[CheckResult]:
    return [r for r in results if r.policy == policy and not r.passed and (resource is None or r.resource == resource)]


def rule(name: str) -> Any:
    return next(p for p in ALL_POLICIES if p.name == name)


def test_every_policy_has_a_mutation() -> None:
    covered = {m.policy for m in MUTATIONS} | set(STACK_MUTATIONS) | set(ADDITIONS) | set(STACK_ADDITIONS)
    assert covered == {p.name for p in ALL_POLICIES}


def exempt(config: dict[str, Any], r: RecordedResource) -> bool:
    exemptions = next(iter(config.values()))["exemptNamespaces"]
    return (r.object_name if r.kind == "Namespace" else r.namespace) in exemptions


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[f"{m.policy}:{m.what}" for m in MUTATIONS])
def test_injected_violation_fails_its_policy(
    mutation: Mutation, stack: tuple[str, Recording, dict[str, Any]], request: pytest.FixtureRequest
) -> None:
    name, recording, config = stack
    if minor_of(config[mutation.policy]) < mutation.min_minor:
        pytest.skip(f"{mutation.policy} applies from Kubernetes 1.{mutation.min_minor}; {name} targets an older one")
    targets = [r for r in recording.resources if mutation.target(r) and not exempt(config, r)]
    if not targets:
        pytest.skip(f"{name} renders nothing {mutation.policy} applies to ({mutation.what})")
    policy = rule(mutation.policy)
    # only resources that comply before the mutation (dev's images already fail the advisory images-pinned)
    targets = [
        t for t in targets if not failures(run_resource_rules(Recording(name, [t]), config, [policy]), policy.name)
    ]
    if not targets:
        pytest.skip(f"no resource of {name} complies with {mutation.policy} before the mutation")
    for target in targets:
        # fails once the violation is injected
        inputs = copy.deepcopy(target.inputs)
        mutation.mutate(inputs)
        mutated = dataclasses.replace(target, inputs=inputs)
        after = run_resource_rules(Recording(name, [mutated]), config, rules=[policy])
        assert failures(after, mutation.policy), f"{mutation.what} on {target.display()} passed {mutation.policy}"


@pytest.mark.parametrize("policy", sorted(STACK_MUTATIONS))
def test_removed_safeguard_fails_its_stack_rule(policy: str, stack: tuple[str, Recording, dict[str, Any]]) -> None:
    name, recording, config = stack
    assert not failures(run_stack_rules(recording, config), policy)
    try:
        mutated = without_first(recording, config, STACK_MUTATIONS[policy])
    except StopIteration:
        pytest.skip(f"{name} has nothing {policy} guards")
    assert failures(run_stack_rules(mutated, config), policy), f"removing it from {name} passed {policy}"
    assert any(r.name == policy for r in ALL_STACK_RULES)


@pytest.mark.parametrize("policy", sorted(ADDITIONS))
def test_added_resource_fails_its_policy(policy: str, stack: tuple[str, Recording, dict[str, Any]]) -> None:
    name, recording, config = stack
    added = ADDITIONS[policy](name)
    results = run_resource_rules(dataclasses.replace(recording, resources=[added]), config, rules=RESOURCE_RULES)
    assert failures(results, policy)


@pytest.mark.parametrize("policy", sorted(STACK_ADDITIONS))
def test_added_resource_fails_its_stack_rule(policy: str, stack: tuple[str, Recording, dict[str, Any]]) -> None:
    name, recording, config = stack
    assert not failures(run_stack_rules(recording, config), policy)
    added = STACK_ADDITIONS[policy](recording)
    if added is None:
        pytest.skip(f"{name} renders nothing {policy} guards")
    mutated = dataclasses.replace(recording, resources=[*recording.resources, added])
    assert failures(run_stack_rules(mutated, config), policy), f"adding {added.display()} to {name} passed {policy}"


def test_every_stack_addition_applies_to_some_shipped_stack(
    rendered: dict[str, tuple[Recording, dict[str, Any]]],
) -> None:
    assert all(any(add(rec) is not None for rec, _ in rendered.values()) for add in STACK_ADDITIONS.values())


def test_every_mutation_applies_to_some_shipped_stack(rendered: dict[str, tuple[Recording, dict[str, Any]]]) -> None:
    """A mutation no shipped stack can take would leave its policy untested here."""
    unused = [
        f"{m.policy}:{m.what}"
        for m in MUTATIONS
        if not any(
            minor_of(config[m.policy]) >= m.min_minor
            and any(m.target(r) and not exempt(config, r) for r in rec.resources)
            for rec, config in rendered.values()
        )
    ]
    # Host probes are gated at Kubernetes 1.34; no shipped stack targets it yet (the fixture tests cover the gate).
    assert unused == ["pss-host-probes-and-lifecycle:probe to another host"]
