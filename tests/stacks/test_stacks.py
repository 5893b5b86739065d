"""Every shipped stack renders, passes the pack with zero mandatory violations, and every object validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from infra.capacity import gpu_type
from infra.config import qualified_key
from infra.offline import Recording, available_stacks, load_stack_config, run_program, write_render
from infra.placement import stack_plans
from infra.profiles import PROFILE_SETTINGS
from infra.tools.checks import CRD_POLICY, SCHEMA_POLICY, check_recording, spec_of
from infra.tools.manifests import check_manifests
from policies.pack import ALL_POLICIES
from tests.conftest import ROOT, STACKS

STACK_NAMES = available_stacks(ROOT)
SHIPPED = {"dev", "eks-prod", "finance-prod", "gov-airgap", "healthcare-prod"}


def test_dev_stack_ships() -> None:
    assert "dev" in STACK_NAMES


def test_every_stack_file_is_covered() -> None:
    """The parametrized stack tests run over every stacks/Pulumi.<stack>.yaml, lock files excluded."""
    files = {p.name for p in STACKS.glob("Pulumi.*.yaml")}
    stacks = {name.removeprefix("Pulumi.").removesuffix(".yaml") for name in files if not name.endswith(".lock.yaml")}
    assert set(STACK_NAMES) == stacks
    assert len(STACK_NAMES) == len(stacks)
    assert stacks >= SHIPPED


def header_of(stack: str) -> str:
    """The comment block a stack file starts with, without the leading '# '."""
    lines = (STACKS / f"Pulumi.{stack}.yaml").read_text().splitlines()
    header: list[str] = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line[1:].removeprefix(" "))
    return "\n".join(header)


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_stack_is_documented_at_the_top(stack: str) -> None:
    """Who it is for, what it builds (with the planner's numbers), what to replace, and how to check it."""
    header = header_of(stack)
    assert header.startswith(f"{stack}: "), header[:80]
    config = load_stack_config(ROOT, stack)
    spec = spec_of(config)
    assert spec.profile in header
    assert re.search(rf"^\s*private-llm check\s+--stack {re.escape(stack)}\b", header, re.M)
    assert "Replace before use" in header
    # Every model with the tensor/pipeline parallelism and replicas the planner gives it today.
    for name, plan, problems in stack_plans(spec, ROOT):
        assert plan is not None, problems
        r, g = plan.replicas, plan.gpus
        sizing = (
            rf"TP={plan.tensor_parallel_size}, PP={plan.pipeline_parallel_size}, "
            rf"{r} replicas? = {g} GPUs?\b"
        )
        assert re.search(rf"\* {re.escape(name)}:[^*]*?{sizing}", header), f"{stack}: {name} is not {sizing}"
    # Every secret the stack needs, with the command that sets it; or a plain statement that there is none.
    document = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())
    secure = {k for k, v in document["config"].items() if isinstance(v, dict) and set(v) == {"secure"}}
    needed = {qualified_key(ref) for _, ref in spec.secret_refs()} | secure
    for key in sorted(needed):
        assert f"pulumi config set --secret {key} --stack {stack}" in header, key
    if not needed:
        assert "No secrets to set" in header


def test_healthcare_prod_is_what_a_hospital_needs() -> None:
    spec = spec_of(load_stack_config(ROOT, "healthcare-prod"))
    assert spec.profile == "healthcare"
    assert {gpu_type(p.gpu).name for p in spec.node_pools} <= {"A100-80GB", "A100-40GB"}
    assert spec.pki.mode in ("enterprise", "vault")
    assert spec.registry is not None and spec.registry.harbor is not None and spec.registry.air_gapped
    assert spec.gateway is not None
    assert {t.access for t in spec.tenants} == {"inference", "list-models"}
    # audit logs kept six years (HIPAA documentation retention), above the profile's own minimum
    assert spec.audit_retention_days >= max(6 * 365, PROFILE_SETTINGS["healthcare"].min_audit_retention_days)
    assert spec.logging.enabled and spec.logging.redaction_patterns
    assert all(m.integrity is not None for m in spec.models)
    plans = stack_plans(spec, ROOT)
    assert all(plan is not None and plan.fits for _, plan, _ in plans)
    assert sum(plan.gpus for _, plan, _ in plans if plan) <= sum(p.total_gpus for p in spec.node_pools)


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
        from infra.config import LOG_SHIPPER_NAMESPACE

        # The second documented exception: the log shipper reads the node's log files.
        expected.add(LOG_SHIPPER_NAMESPACE)
        [shipper] = [o for o in objects if o.kind == "Namespace" and o.object_name == LOG_SHIPPER_NAMESPACE]
        assert shipper.inputs["metadata"]["annotations"]["privatellm.io/pod-security-exception"].startswith(
            "Fluent Bit"
        )
    if spec.gateway is not None and spec.models:
        from infra.builders.namespaces import AI_GATEWAY_NAMESPACE, ENVOY_GATEWAY_NAMESPACE

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


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_rendered_files_are_valid_objects(stack: str, crds: Path, tmp_path: Path) -> None:
    """What `render` writes, secrets masked, validates like what `check` validated: every manifest file, Secrets
    included, passes the strict built-in schemas and the upstream CRD schemas (`check --manifests` on the folder)."""
    recording, config = render(stack)
    spec = spec_of(config)  # type: ignore[arg-type]
    write_render(recording, tmp_path)
    report = check_manifests(tmp_path / "manifests", spec.profile, spec.cluster.kubernetes_version, crd_dir=crds)
    schema = [r for r in report.results if r.policy in (SCHEMA_POLICY, CRD_POLICY)]
    assert [f"{r.resource}: {r.message}" for r in schema if not r.passed] == []
    assert {r.resource for r in schema} == {o.display() for o in recording.kubernetes_objects()}
    secrets = [o for o in recording.kubernetes_objects() if o.kind == "Secret"]
    assert secrets and all(isinstance(s.masked.get("stringData", s.masked.get("data")), dict) for s in secrets)
