"""Supply-chain rules: internal registry only, pinned images, pinned charts, no helm.v3.Release."""

from __future__ import annotations

from typing import Any

import pytest

from policies.base import split_image
from policies.supplychain import SUPPLY_CHAIN_RULES
from tests.policy_fixtures import POD_KINDS, good_template, violations, wrap

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
    found: list[str] = []
    from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs

    props = {"chart": "harbor", "version": version} if version is not None else {"chart": "harbor"}
    args = ResourceValidationArgs(
        chart_type,
        props,
        "urn:x",
        "x",
        PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None),
        None,
    )
    RULES["charts-pinned"].validate(args, lambda message, urn=None: found.append(message))
    assert bool(found) == fails


def test_helm_release_is_refused_and_other_types_ignored() -> None:
    assert violations(RULES["no-helm-release"], "kubernetes:helm.sh/v3:Release", {"name": "harbor", "chart": "harbor"})
    assert violations(RULES["no-helm-release"], "kubernetes:helm.sh/v4:Chart", {"name": "harbor"}) == []
    for rule in SUPPLY_CHAIN_RULES:
        assert violations(rule, "kubernetes:core/v1:ConfigMap", {"metadata": {"name": "x"}}) == []
