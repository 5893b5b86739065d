"""Every shipped stack renders, passes the pack with zero mandatory violations, and every object validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.checks import CRD_POLICY, SCHEMA_POLICY, check_recording, spec_of
from infra.offline import Recording, available_stacks, load_stack_config, run_program
from policies.registry import ALL_POLICIES
from tests.conftest import ROOT

STACK_NAMES = available_stacks(ROOT)


def test_dev_stack_ships() -> None:
    assert "dev" in STACK_NAMES


def render(stack: str) -> tuple[Recording, object]:
    config = load_stack_config(ROOT, stack)
    return run_program(config), config


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_stack_passes_check(stack: str, crds: Path) -> None:
    recording, config = render(stack)
    report = check_recording(recording, spec_of(config), crds)  # type: ignore[arg-type]
    assert report.mandatory_failures == [], report.mandatory_failures
    assert report.ok
    # Every policy of the pack ran, and every Kubernetes object was schema-checked.
    ran = {r.policy for r in report.results}
    assert {p.name for p in ALL_POLICIES if p.name.startswith("namespace-")} <= ran
    checked = {r.resource for r in report.results if r.policy in (SCHEMA_POLICY, CRD_POLICY) and r.passed}
    assert checked == {o.display() for o in recording.kubernetes_objects()}


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_every_namespace_is_secured(stack: str) -> None:
    recording, config = render(stack)
    spec = spec_of(config)  # type: ignore[arg-type]
    objects = recording.kubernetes_objects()
    namespaces = {o.object_name for o in objects if o.kind == "Namespace"}
    expected = {ns.name for _, ns in spec.namespaces.items()} | {t.namespace_name for t in spec.tenants}
    if spec.node_pools and spec.gpu_operator.enabled:
        # The one documented exception: privileged, with its reason on the namespace and in the policy config.
        expected.add(spec.gpu_operator.namespace)
        [gpu_ns] = [o for o in objects if o.kind == "Namespace" and o.object_name == spec.gpu_operator.namespace]
        assert gpu_ns.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
        assert gpu_ns.inputs["metadata"]["annotations"]["privatellm.io/pod-security-exception"]
    if spec.logging.enabled and spec.registry is not None:
        from infra.catalog import LOG_SHIPPER_NAMESPACE

        # The second documented exception: the log shipper reads the node's log files.
        expected.add(LOG_SHIPPER_NAMESPACE)
        [shipper] = [o for o in objects if o.kind == "Namespace" and o.object_name == LOG_SHIPPER_NAMESPACE]
        assert shipper.inputs["metadata"]["annotations"]["privatellm.io/pod-security-exception"].startswith(
            "Fluent Bit"
        )
    if spec.gateway is not None and spec.models:
        from infra.catalog import AI_GATEWAY_NAMESPACE, ENVOY_GATEWAY_NAMESPACE

        expected |= {ENVOY_GATEWAY_NAMESPACE, AI_GATEWAY_NAMESPACE}
    assert namespaces == expected
    for ns in namespaces:
        kinds = sorted((o.kind, o.object_name) for o in objects if o.namespace == ns)
        assert ("NetworkPolicy", "default-deny-all") in kinds
        assert ("NetworkPolicy", "allow-dns-egress") in kinds
        assert ("ResourceQuota", "namespace-quota") in kinds
        assert ("LimitRange", "container-limits") in kinds


def test_a_violation_in_a_stack_fails_the_check(crds: Path) -> None:
    """The stack check can fail: a namespace without its default-deny policy is caught."""
    recording, config = render("dev")
    recording.resources = [
        r
        for r in recording.resources
        if not (r.kind == "NetworkPolicy" and r.object_name == "default-deny-all" and r.namespace == "tenant-research")
    ]
    report = check_recording(recording, spec_of(config), crds)  # type: ignore[arg-type]
    assert not report.ok
    [failure] = report.mandatory_failures
    assert failure.policy == "namespace-default-deny"
    assert failure.resource == "Namespace/tenant-research"
