"""Supply-chain rules: internal registry only, pinned images, pinned charts, no helm.v3.Release."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import EnforcementLevel

from infra.offline import RecordedResource
from policies.base import split_image
from policies.pack import policy_config
from policies.profiles import LEVELS
from policies.supplychain import HARBOR_PROJECT, SUPPLY_CHAIN_RULES
from tests.policies.fixtures import POD_KINDS, good_template, violations, wrap
from tests.policies.mutations import Addition, Mutation, container, is_workload, recorded

RULES = {r.name: r for r in SUPPLY_CHAIN_RULES}
DIGEST = "sha256:" + "ab" * 32
HARBOR = "harbor.bank.internal"


def with_image(image: str) -> dict[str, Any]:
    t = good_template()
    t["spec"]["containers"][0]["image"] = image
    t["spec"]["initContainers"][0]["image"] = f"{HARBOR}/platform/app:1.0.0"
    return t


def check(rule: str, image: str, kind: str = "Deployment", **config: Any) -> list[str]:
    resource_type, props = wrap(kind, with_image(image))
    found: list[str] = []
    from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs

    from policies.pack import policy_config

    args = ResourceValidationArgs(
        resource_type,
        props,
        "urn:x",
        "x",
        PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None),
        None,
        config=policy_config(
            "1.31",
            allowed_registries=config.get("allowed", [HARBOR]),
            immutable_repositories=config.get("immutable", [f"{HARBOR}/platform"]),
        ),
    )
    RULES[rule].validate(args, lambda message, urn=None: found.append(message))
    return found


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("vllm/vllm-openai:v0.33.0", ("docker.io", "vllm/vllm-openai", "v0.33.0", None)),
        ("nginx", ("docker.io", "nginx", None, None)),
        (
            f"{HARBOR}/platform/vllm/vllm-openai:v0.33.0@{DIGEST}",
            (HARBOR, "platform/vllm/vllm-openai", "v0.33.0", DIGEST),
        ),
        ("registry.dev.internal:5000/platform/app:1", ("registry.dev.internal:5000", "platform/app", "1", None)),
        ("localhost/app:1", ("localhost", "app", "1", None)),
    ],
)
def test_split_image(image: str, expected: tuple[str, str, str | None, str | None]) -> None:
    assert split_image(image) == expected


@pytest.mark.parametrize("kind", POD_KINDS)
def test_internal_registry_passes_and_upstream_fails(kind: str) -> None:
    assert check("images-from-internal-registry", f"{HARBOR}/platform/vllm/vllm-openai:v0.33.0", kind) == []
    found = check("images-from-internal-registry", "docker.io/vllm/vllm-openai:v0.33.0", kind)
    assert found and "pulls from 'docker.io'" in found[0]
    assert check("images-from-internal-registry", "vllm/vllm-openai:v0.33.0", kind)


def test_unconfigured_registries_are_a_violation_not_a_pass() -> None:
    found = check("images-from-internal-registry", f"{HARBOR}/platform/app:1", allowed=[])
    assert found and "allowedRegistries is not configured" in found[0]


@pytest.mark.parametrize(
    ("image", "fails"),
    [
        (f"{HARBOR}/platform/app:1.0.0", False),
        (f"{HARBOR}/other/app:1.0.0", True),
        (f"{HARBOR}/other/app:1.0.0@{DIGEST}", False),
        (f"{HARBOR}/platform/app:latest", True),
        (f"{HARBOR}/platform/app", True),
        (f"{HARBOR}/platform-evil/app:1.0.0", True),
    ],
)
def test_images_pinned(image: str, fails: bool) -> None:
    assert bool(check("images-pinned", image)) == fails


@pytest.mark.parametrize(
    ("version", "fails"),
    [
        ("1.19.1", False),
        ("v26.7.0", False),
        ("^1.19", True),
        ("~2.20", True),
        (">=1.0", True),
        ("", True),
        (None, True),
        ("1.x", True),
    ],
)
@pytest.mark.parametrize("chart_type", ["kubernetes:helm.sh/v4:Chart", "kubernetes:helm.sh/v3:Chart"])
def test_charts_pinned(version: str | None, fails: bool, chart_type: str) -> None:
    props = {"chart": "harbor", "version": version} if version is not None else {"chart": "harbor"}
    assert bool(violations(RULES["charts-pinned"], chart_type, props)) == fails


@pytest.mark.parametrize(
    ("props", "config", "expected"),
    [
        ({"chart": f"oci://{HARBOR}/charts/keda"}, {}, None),
        ({"chart": "oci://bootstrap.bank.internal/charts/harbor"}, {}, None),
        ({"chart": "keda", "repositoryOpts": {"repo": f"https://{HARBOR}/chartrepo/charts"}}, {}, None),
        (
            {"chart": "keda", "repositoryOpts": {"repo": "https://kedacore.github.io/charts"}},
            {},
            "'kedacore.github.io'",
        ),
        ({"chart": "oci://quay.io/jetstack/charts/cert-manager"}, {}, "pulled from 'quay.io'"),
        ({"chart": "./charts/keda"}, {}, "is a local path or repository alias"),
        ({"chart": "kedacore/keda"}, {}, "is a local path or repository alias"),
        ({"chart": "keda", "fetchOpts": {"repo": "https://kedacore.github.io/charts"}}, {}, "'kedacore.github.io'"),
        ({"chart": "keda", "repo": f"oci://{HARBOR}/charts"}, {}, None),
        # a declared bootstrap charts location on its own host serves charts, not images
        (
            {"chart": "oci://charts.bank.internal/bootstrap/harbor"},
            {"chartRegistries": [HARBOR, "charts.bank.internal"]},
            None,
        ),
        ({"chart": f"oci://{HARBOR}/charts/keda"}, {"allowedRegistries": []}, "cannot be checked"),
    ],
)
@pytest.mark.parametrize("chart_type", ["kubernetes:helm.sh/v4:Chart", "kubernetes:helm.sh/v3:Chart"])
def test_charts_from_internal_registry(
    props: dict[str, Any], config: dict[str, Any], expected: str | None, chart_type: str
) -> None:
    base = policy_config(allowed_registries=[HARBOR, "bootstrap.bank.internal"])
    found = violations(RULES["charts-from-internal-registry"], chart_type, props, config={**base, **config})
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found


def test_chart_rule_is_advisory_only_in_the_baseline_profile() -> None:
    assert LEVELS["baseline"]["charts-from-internal-registry"] == EnforcementLevel.ADVISORY
    assert all("charts-from-internal-registry" not in LEVELS[p] for p in ("finance", "healthcare", "government"))


def test_helm_release_is_refused_and_other_types_ignored() -> None:
    assert violations(RULES["no-helm-release"], "kubernetes:helm.sh/v3:Release", {"name": "harbor", "chart": "harbor"})
    assert violations(RULES["no-helm-release"], "kubernetes:helm.sh/v4:Chart", {"name": "harbor"}) == []
    for rule in SUPPLY_CHAIN_RULES:
        assert violations(rule, "kubernetes:core/v1:ConfigMap", {"metadata": {"name": "x"}}) == []


PROJECT_RULE = next(r for r in SUPPLY_CHAIN_RULES if r.name == "registry-project-controls")
GOOD_PROJECT = {
    "name": "platform",
    "public": False,
    "vulnerabilityScanning": True,
    "deploymentSecurity": "high",
    "enableContentTrustCosign": True,
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, None),
        ({"vulnerabilityScanning": False}, "does not scan images on push"),
        ({"deploymentSecurity": None}, "lets images with any known vulnerability be pulled"),
        ({"deploymentSecurity": "none"}, "lets images with any known vulnerability be pulled"),
        ({"enableContentTrustCosign": False}, "does not require cosign signatures"),
        ({"enableContentTrustCosign": False, "registryId": 3}, None),  # a proxy cache mirrors unsigned upstream
        ({"public": True}, "is public"),
    ],
)
def test_registry_project_controls(change: dict[str, Any], expected: str | None) -> None:
    result = violations(PROJECT_RULE, HARBOR_PROJECT, {**GOOD_PROJECT, **change})
    if expected is None:
        assert result == []
    else:
        assert len(result) == 1 and expected in result[0]


def test_registry_rule_ignores_other_types() -> None:
    assert violations(PROJECT_RULE, "harbor:index/robotAccount:RobotAccount", {"public": True}) == []


# ---------------------------------------------------------------------------------------------------------------
# Mutations: each a violation injected into every shipped stack's render (tests/stacks/test_mutations.py)
# ---------------------------------------------------------------------------------------------------------------

MUTATIONS: list[Mutation] = [
    Mutation(
        "images-from-internal-registry",
        "docker.io",
        is_workload,
        container(lambda c: c.update(image="docker.io/library/busybox:1.37")),
    ),
    Mutation(
        "images-pinned",
        ":latest",
        is_workload,
        container(lambda c: c.update(image=c["image"].split("@")[0].rsplit(":", 1)[0] + ":latest")),
    ),
    Mutation(
        "charts-pinned",
        "version range",
        lambda r: r.is_chart,
        lambda props: props.update(version="^1.0"),
    ),
    Mutation(
        "charts-from-internal-registry",
        "chart from the internet",
        lambda r: r.is_chart,
        lambda props: (
            props.pop("repositoryOpts", None),
            props.update(chart="oci://docker.io/envoyproxy/gateway-helm"),
        ),
    ),
    Mutation(
        "registry-project-controls",
        "no scan on push",
        lambda r: r.type == "harbor:index/project:Project",
        lambda props: props.update(vulnerabilityScanning=False),
    ),
]


def helm_release(stack: str) -> RecordedResource:
    return recorded(stack, "kubernetes:helm.sh/v3:Release", "x", {"chart": "harbor", "version": "1.19.1"})


ADDITIONS: dict[str, Addition] = {"no-helm-release": helm_release}
