"""`pulumi preview --policy-pack policies` reaches the verdicts of the offline check.

The pack is served by pulumi_policy's own analyzer servicer, the code the Pulumi engine talks to over gRPC: it gets
the pack config through Configure (numbers become protobuf doubles there), each resource through Analyze and the
whole stack through AnalyzeStack, with properties as protobuf Structs (numbers as doubles again) read through its
unknown-checking proxies (a `_ListProxy` is a Sequence, not a list). The violations it reports must be exactly the
offline check's, for every shipped stack as rendered and with violations injected. This test found rules that saw no
containers at all under the engine and a UID check that mistook 10001.0 for "no UID".
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi_policy import EnforcementLevel
from pulumi_policy.policy import _PolicyAnalyzerServicer

from infra.offline import Recording, available_stacks, load_stack_config, run_program
from infra.pack_config import stack_pack_config
from infra.tools.checks import CRD_POLICY, SCHEMA_POLICY, build_report, spec_of
from policies.pack import ALL_POLICIES, PACK_NAME
from tests.conftest import ROOT
from tests.stacks.test_mutations import MUTATIONS

LEVELS = {
    "advisory": proto.ADVISORY,  # type: ignore[attr-defined]
    "mandatory": proto.MANDATORY,  # type: ignore[attr-defined]
    "remediate": proto.REMEDIATE,  # type: ignore[attr-defined]
    "disabled": proto.DISABLED,  # type: ignore[attr-defined]
}
LEVEL_NAMES = {v: ("mandatory" if k == "remediate" else k) for k, v in LEVELS.items()}


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(value, struct_pb2.Struct())


def servicer(config: dict[str, Any]) -> _PolicyAnalyzerServicer:
    """The pack as the engine runs it, configured the way `--policy-pack-config` configures it."""
    analyzer = _PolicyAnalyzerServicer(PACK_NAME, "0.0.1", ALL_POLICIES, EnforcementLevel.MANDATORY)
    request = proto.ConfigureAnalyzerRequest()
    for name, document in config.items():
        properties = {k: v for k, v in document.items() if k != "enforcementLevel"}
        level = document.get("enforcementLevel", "mandatory")
        request.policyConfig[name].CopyFrom(
            proto.PolicyConfig(enforcementLevel=LEVELS[level], properties=struct(properties))
        )
    analyzer.Configure(request, None)
    return analyzer


def engine_violations(recording: Recording, config: dict[str, Any]) -> Counter[tuple[str, str, str]]:
    analyzer = servicer(config)
    by_urn = recording.by_urn()
    found: Counter[tuple[str, str, str]] = Counter()

    def record(diagnostics: Any, default_urn: str) -> None:
        for d in diagnostics:
            urn = d.urn or default_urn
            target = by_urn[urn].display() if urn in by_urn else f"stack/{recording.stack}"
            found[(d.policyName, target, LEVEL_NAMES[d.enforcementLevel])] += 1

    # The engine analyzes every registered resource, components included (pkg/resource/deploy/step_generator.go
    # sends goal inputs to each analyzer): a remote component such as helm.v4.Chart arrives with its inputs.
    resources = list(recording.resources)
    for r in resources:
        request = proto.AnalyzeRequest(type=r.type, properties=struct(r.inputs), urn=r.urn, name=r.name)
        record(analyzer.Analyze(request, None).diagnostics, r.urn)
    stack = proto.AnalyzeStackRequest(
        resources=[
            proto.AnalyzerResource(
                type=r.type,
                properties=struct(r.inputs),
                urn=r.urn,
                name=r.name,
                parent=r.parent or "",
                dependencies=list(r.options.get("dependsOn", [])),
            )
            for r in resources
        ]
    )
    record(analyzer.AnalyzeStack(stack, None).diagnostics, "")
    return found


def offline_violations(recording: Recording, config: dict[str, Any], profile: str) -> Counter[tuple[str, str, str]]:
    report = build_report(recording, config, profile, "1.33", engine_options=False)
    return Counter(
        (r.policy, r.resource, r.level)
        for r in report.failures
        if r.policy not in (SCHEMA_POLICY, CRD_POLICY)  # the API server's job under the real engine
    )


@pytest.fixture(scope="module", params=available_stacks(ROOT))
def stack(request: pytest.FixtureRequest) -> tuple[Recording, dict[str, Any], str]:
    config = load_stack_config(ROOT, request.param)
    spec = spec_of(config)
    return run_program(config), stack_pack_config(spec), spec.profile


def test_engine_and_offline_agree_on_the_shipped_stack(stack: tuple[Recording, dict[str, Any], str]) -> None:
    recording, config, profile = stack
    assert engine_violations(recording, config) == offline_violations(recording, config, profile)


def test_engine_and_offline_agree_on_injected_violations(stack: tuple[Recording, dict[str, Any], str]) -> None:
    """Every applicable mutation applied to its first target: the engine must fail exactly what offline fails."""
    recording, config, profile = stack
    resources = list(recording.resources)
    injected = 0
    for mutation in MUTATIONS:
        for i, r in enumerate(resources):
            if mutation.target(r):
                inputs = copy.deepcopy(r.inputs)
                mutation.mutate(inputs)
                resources[i] = dataclasses.replace(r, inputs=inputs)
                injected += 1
                break
    mutated = dataclasses.replace(recording, resources=resources)
    offline = offline_violations(mutated, config, profile)
    assert injected >= 20 and sum(offline.values()) >= injected - 5
    assert engine_violations(mutated, config) == offline
