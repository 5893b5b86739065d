"""Supply-chain controls: images only from the site's own registry, pinned; charts pinned and visible to the pack.

Sources: CIS Kubernetes Benchmark 5.5.1 (image provenance), OWASP Top 10 for LLM Applications 2025 LLM03
(supply chain), NSA/CISA hardening guidance (trusted registries, immutable images).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from pulumi_policy import Severity

from policies.base import (
    POD_TYPES,
    Rule,
    cis,
    containers,
    get_path,
    nsa,
    owasp,
    pod_templates,
    split_image,
    where_prefix,
)

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_SEMVER_RANGE = re.compile(r"[\^~*xX<>=|]|\s|^$")


def _images(resource_type: str, props: Mapping[str, Any]) -> list[tuple[str, str]]:
    found = []
    for template in pod_templates(resource_type, props):
        for label, c in containers(template.spec):
            image = c.get("image")
            if isinstance(image, str):
                found.append((where_prefix(template) + label, image))
    return found


def registry_check(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    allowed = [str(h) for h in config.get("allowedRegistries") or []]
    out = []
    for label, image in _images(resource_type, props):
        host = split_image(image)[0]
        if not allowed:
            out.append(f"{label} image host {host!r} cannot be checked: allowedRegistries is not configured")
        elif host not in allowed:
            out.append(f"{label} pulls from {host!r}; only {', '.join(allowed)} are allowed")
    return out


def pinned_check(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    immutable = [str(p) for p in config.get("immutableRepositories") or []]
    out = []
    for label, image in _images(resource_type, props):
        host, path, tag, digest = split_image(image)
        if tag in (None, "latest") and digest is None:
            out.append(f"{label} image {image!r} has no pinned tag (no tag or :latest)")
        elif digest is None and not any(f"{host}/{path}".startswith(prefix.rstrip("/") + "/") for prefix in immutable):
            out.append(
                f"{label} image {image!r} is neither digest-pinned nor in an immutable-tag repository; "
                "lock digests (private-llm images lock) or push to a Harbor project with tag immutability"
            )
    return out


def chart_check(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    version = props.get("version")
    if not isinstance(version, str) or _SEMVER_RANGE.search(version):
        return [f"chart {props.get('chart')!r} version {version!r} is not pinned to one release"]
    return []


CHART_TYPES = ["kubernetes:helm.sh/v4:Chart", "kubernetes:helm.sh/v3:Chart", "kubernetes:helm.sh/v3:Release"]


def chart_location(props: Mapping[str, Any]) -> tuple[str, str | None]:
    """(where a chart is pulled from, as written; its registry host, or None for a local path or a repository alias)
    from a chart resource's inputs: `chart` as oci://<host>/…, else the repository URL (`repositoryOpts.repo`, or a
    v3 Chart's `fetchOpts.repo` / `repo`)."""
    chart = str(props.get("chart") or "")
    if chart.startswith("oci://"):
        return chart, chart.removeprefix("oci://").split("/", 1)[0]
    repo = get_path(props, ("repositoryOpts", "repo")) or get_path(props, ("fetchOpts", "repo")) or props.get("repo")
    if isinstance(repo, str) and repo:
        if repo.startswith("oci://"):
            return f"{repo.rstrip('/')}/{chart}", repo.removeprefix("oci://").split("/", 1)[0]
        return f"{repo.rstrip('/')}/{chart}", urlparse(repo).netloc or None
    return chart, None


def chart_registry_check(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    allowed = [str(h) for h in config.get("chartRegistries") or config.get("allowedRegistries") or []]
    where, host = chart_location(props)
    if not allowed:
        return [f"chart {where!r} cannot be checked: allowedRegistries is not configured"]
    if host is None:
        return [f"chart {where!r} is a local path or repository alias, not a chart from {', '.join(allowed)}"]
    if host not in allowed:
        return [f"chart {where!r} is pulled from {host!r}; only {', '.join(allowed)} may serve charts"]
    return []


def release_check(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    return [
        f"helm.v3.Release {props.get('name') or props.get('chart')!r} hides its objects from the policy pack; "
        "use kubernetes.helm.v4.Chart"
    ]


HARBOR_PROJECT = "harbor:index/project:Project"
SEVERITIES = ("none", "low", "medium", "high", "critical")


def registry_project(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    name = props.get("name")
    out = []
    if props.get("vulnerabilityScanning") is not True:
        out.append(f"project {name!r} does not scan images on push (vulnerabilityScanning)")
    if props.get("deploymentSecurity") not in SEVERITIES[1:]:
        out.append(
            f"project {name!r} lets images with any known vulnerability be pulled (deploymentSecurity "
            f"{props.get('deploymentSecurity')!r}); block from a severity up"
        )
    # A proxy cache mirrors upstream artifacts, which carry no signature of the site: cosign cannot be required.
    if props.get("registryId") is None and props.get("enableContentTrustCosign") is not True:
        out.append(f"project {name!r} does not require cosign signatures (enableContentTrustCosign)")
    if props.get("public") is True:
        out.append(f"project {name!r} is public: anyone reaching Harbor can pull")
    return out


SUPPLY_CHAIN_RULES: list[Rule] = [
    Rule(
        name="images-from-internal-registry",
        description=(
            "Every image comes from the site's own registry: nothing is pulled from the internet at run time, and "
            "only scanned, approved images can run."
        ),
        check=registry_check,
        resource_types=POD_TYPES,
        standards=(cis("5.5.1"), owasp("LLM03: Supply Chain"), nsa("Image security: trusted registries")),
        remediation="Render images through registry.host (the platform's catalog does); mirror upstream images first.",
        severity=Severity.CRITICAL,
    ),
    Rule(
        name="images-pinned",
        description=(
            "An image reference must name one immutable artifact: a digest, or a tag in a repository whose tags "
            "cannot be overwritten; never :latest."
        ),
        check=pinned_check,
        resource_types=POD_TYPES,
        standards=(cis("5.5.1"), owasp("LLM03: Supply Chain")),
        remediation="Run `private-llm images lock --stack S` to pin digests, or use Harbor projects with immutability.",
        severity=Severity.HIGH,
    ),
    Rule(
        name="charts-pinned",
        description="A chart version must be one release, so that a preview shows exactly what an update installs.",
        check=chart_check,
        resource_types=["kubernetes:helm.sh/v4:Chart", "kubernetes:helm.sh/v3:Chart"],
        standards=(owasp("LLM03: Supply Chain"),),
        remediation="Pin the chart version in the catalog (infra/catalog.py CHARTS).",
        severity=Severity.HIGH,
    ),
    Rule(
        name="charts-from-internal-registry",
        description=(
            "Every chart comes from the site's own registry (or the bootstrap registry that serves what runs before "
            "Harbor): a deploy host that pulls chart templates from the internet breaks the air gap, and a chart "
            "from a public repository is code that no one at the site approved."
        ),
        check=chart_registry_check,
        resource_types=CHART_TYPES,
        standards=(cis("5.5.1"), owasp("LLM03: Supply Chain"), nsa("Image security: trusted registries")),
        remediation=(
            "Push the catalog's charts to oci://<registry.host>/<registry.charts_project> and set "
            "registry.charts_from_registry: true (implied by registry.air_gapped); with a managed Harbor, the charts "
            "installed before it from registry.harbor.bootstrap_charts or the bootstrap registry."
        ),
        severity=Severity.HIGH,
    ),
    Rule(
        name="no-helm-release",
        description=(
            "helm.v3.Release installs objects the policy pack never sees; charts are installed with "
            "kubernetes.helm.v4.Chart so that every object is checked."
        ),
        check=release_check,
        resource_types=["kubernetes:helm.sh/v3:Release"],
        standards=(owasp("LLM03: Supply Chain"),),
        remediation="Replace the Release with kubernetes.helm.v4.Chart.",
        severity=Severity.HIGH,
    ),
    Rule(
        name="registry-project-controls",
        description=(
            "Every Harbor project the platform manages is private, scans on push, refuses to serve images above the "
            "profile's vulnerability severity and (unless it is a proxy cache) requires cosign signatures."
        ),
        check=registry_project,
        resource_types=[HARBOR_PROJECT],
        standards=(cis("5.5.1"), owasp("LLM03: Supply Chain"), nsa("Image security: scanning and signing")),
        remediation=(
            "Create projects through the platform's Harbor component (registry.harbor in the stack file): it sets "
            "scanning, deployment security, cosign and privacy."
        ),
        severity=Severity.HIGH,
    ),
]
