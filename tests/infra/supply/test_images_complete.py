"""`private-llm images list` is complete: every image and chart a shipped stack renders is in it, and nothing else.

The oracle here is written independently of `infra.supply.inventory`: each shipped stack (`stacks/Pulumi.*.yaml` minus
the `*.lock.yaml` files) is rendered by the real program (`infra.offline.run_stack`, as `private-llm render` does), and
image references are collected

- from the pod templates of every Kubernetes object (containers, init and ephemeral containers of any PodSpec: a
  Deployment's, a Job's, a LeaderWorkerSet's leader and worker templates) and from custom resources that name their
  image (`spec.image` of ECK's Elasticsearch and Kibana);
- from every chart's values, with the patterns the platform's charts use: `{registry?, repository, tag}`,
  `{repository, image, version}` (NVIDIA GPU Operator) and `image: <full reference>` (Envoy Gateway); a part of a
  chart switched off (`enabled: false`) pulls nothing;
- and, as a net for any other place, every string of every resource that names the stack's registry (or bootstrap
  registry) and platform project.

Then the CLI's JSON inventory must list exactly those references and exactly the rendered charts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from infra.catalog import CHART_IMAGES, CHARTS
from infra.cli import app
from infra.config import PlatformSpec
from infra.offline import RecordedResource, Recording, available_stacks, load_stack_config, run_stack
from infra.tools.checks import spec_of
from tests.conftest import ROOT

STACKS = available_stacks(ROOT)
HELM = {"kubernetes:helm.sh/v4:Chart", "kubernetes:helm.sh/v3:Chart", "kubernetes:helm.sh/v3:Release"}


def test_every_shipped_stack_is_covered() -> None:
    files = sorted(p.name for p in (ROOT / "stacks").glob("Pulumi.*.yaml") if not p.name.endswith(".lock.yaml"))
    assert [f"Pulumi.{s}.yaml" for s in STACKS] == files and len(STACKS) >= 5


# --------------------------------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------------------------------


def pod_specs(node: Any) -> Iterator[dict[str, Any]]:
    """Every PodSpec (a mapping with a `containers` list) anywhere in an object."""
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            yield node
        for value in node.values():
            yield from pod_specs(value)
    elif isinstance(node, list):
        for value in node:
            yield from pod_specs(value)


def object_images(resource: RecordedResource) -> set[str]:
    images: set[str] = set()
    spec = resource.inputs.get("spec")
    # A custom resource that names its image (ECK): its operator fills it into the pod template's containers.
    own = spec.get("image") if isinstance(spec, dict) and isinstance(spec.get("image"), str) else None
    if own:
        images.add(own)
    for pod in pod_specs(resource.inputs):
        for field in ("initContainers", "containers", "ephemeralContainers"):
            for container in pod.get(field) or []:
                if container.get("image") is None and own:
                    continue
                assert isinstance(container.get("image"), str), f"{resource.display()}: container without image"
                images.add(container["image"])
    return images


def chart_images(values: Any, where: str = "values") -> set[str]:
    """Image references in a chart's values; fails on a reference the chart would have to complete itself."""
    found: set[str] = set()
    if isinstance(values, list):
        for i, value in enumerate(values):
            found |= chart_images(value, f"{where}[{i}]")
        return found
    if not isinstance(values, dict) or values.get("enabled") is False:
        return found
    repository, image, tag, version, registry = (
        values.get(k) for k in ("repository", "image", "tag", "version", "registry")
    )
    skip: set[str] = set()
    if isinstance(repository, str) and isinstance(image, str):
        assert isinstance(version or tag, str), f"{where}: {repository}/{image} without a version"
        found.add(f"{repository}/{image}:{version or tag}")
        skip = {"repository", "image", "version", "tag"}
    elif isinstance(repository, str):
        assert isinstance(tag, str), f"{where}: repository {repository} without a tag"
        found.add(f"{registry}/{repository}:{tag}" if isinstance(registry, str) else f"{repository}:{tag}")
        skip = {"repository", "tag", "registry"}
    elif isinstance(image, str):
        assert "/" in image and ":" in image.rsplit("/", 1)[-1], f"{where}.image={image!r} is not a full reference"
        found.add(image)
        skip = {"image"}
    else:
        assert not isinstance(tag, str), f"{where}: tag {tag!r} without a repository"
    for key, value in values.items():
        if key not in skip:
            found |= chart_images(value, f"{where}.{key}")
    return found


def strings(node: Any) -> Iterator[str]:
    """Every string in a resource's inputs, outside the parts a chart does not deploy (`enabled: false`)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict) and node.get("enabled") is not False:
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def chart_of(resource: RecordedResource) -> tuple[str, str, str]:
    """(chart name, version, where it is installed from)."""
    chart = str(resource.inputs["chart"])
    repo = (resource.inputs.get("repositoryOpts") or {}).get("repo")
    source = chart if chart.startswith("oci://") or not repo else f"{repo.rstrip('/')}/{chart}"
    return chart.rsplit("/", 1)[-1], str(resource.inputs["version"]), source


def release_of(resource: RecordedResource) -> str:
    return f"{resource.inputs.get('namespace')}/{resource.inputs.get('name') or resource.name}"


# --------------------------------------------------------------------------------------------------------------
# Per stack: the render against `private-llm images list --format json`
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=STACKS)
def stack(request: pytest.FixtureRequest) -> tuple[str, Recording, dict[str, Any]]:
    name = request.param
    recording = run_stack(name, ROOT)
    result = CliRunner().invoke(
        app, ["images", "list", "--stack", name, "--format", "json", "--project-dir", str(ROOT)]
    )
    assert result.exit_code == 0, result.output
    return name, recording, json.loads(result.stdout)


def rendered_images(recording: Recording) -> set[str]:
    found: set[str] = set()
    for resource in recording.resources:
        if resource.type in HELM:
            found |= chart_images(resource.inputs.get("values") or {})
        elif resource.is_kubernetes_object:
            found |= object_images(resource)
    return found


def pulled_by_nodes(found: set[str], name: str) -> set[str]:
    """The GPU Operator pulls the driver image with the nodes' OS appended to the tag (resolveDriverTag in
    gpu-operator v26.7.0): that is the image the site must hold."""
    node_os = spec_of(load_stack_config(ROOT, name)).gpu_operator.node_os
    return {f"{ref}-{node_os}" if node_os and "/nvidia/driver:" in ref and "@" not in ref else ref for ref in found}


def test_every_rendered_image_is_listed_and_nothing_else(stack: tuple[str, Recording, dict[str, Any]]) -> None:
    name, recording, listed = stack
    found = pulled_by_nodes(rendered_images(recording), name)
    pods = {
        c["image"]
        for r in recording.kubernetes_objects()
        for p in pod_specs(r.inputs)
        for c in p["containers"]
        if c.get("image")
    }
    assert pods and pods <= found
    references = {i["rendered"] for i in listed["images"]}
    missing = sorted(found - references)
    assert not missing, f"{name}: rendered but not in `images list`: {missing}"
    extra = sorted(references - found)
    assert not extra, f"{name}: in `images list` but not rendered: {extra}"
    keys = [i["key"] for i in listed["images"]]
    assert len(keys) == len(set(keys))


def test_no_other_reference_to_the_registries_escapes_the_list(stack: tuple[str, Recording, dict[str, Any]]) -> None:
    """Any string of any resource naming `<registry>/<platform project>/…` (or the bootstrap registry's) is a listed
    image, or the repository folder of one (the GPU Operator takes `repository` and `image` apart)."""
    name, recording, listed = stack
    spec = _spec(name)
    assert spec.registry is not None
    hosts = [spec.registry.host] + ([spec.registry.harbor.bootstrap_registry] if spec.registry.harbor else [])
    pattern = re.compile(
        "(?:"
        + "|".join(re.escape(h) for h in hosts)
        + ")/"
        + re.escape(spec.registry.platform_project)
        + r"/[A-Za-z0-9._/-]+(?::[A-Za-z0-9._-]+)?(?:@sha256:[0-9a-f]{64})?"
    )
    repositories = {i["rendered"].split("@")[0].rsplit(":", 1)[0] for i in listed["images"]}
    references = {i["rendered"] for i in listed["images"]} | {i["rendered"].split("@")[0] for i in listed["images"]}
    seen = 0
    for resource in recording.resources:
        if not resource.type.startswith("kubernetes:"):
            continue
        for text in strings(resource.inputs):
            for match in pattern.findall(text):
                seen += 1
                bare = match.split("@")[0]
                repository = bare.rsplit(":", 1)[0] if ":" in bare.rsplit("/", 1)[-1] else bare
                folder = any(r.startswith(repository.rstrip("/") + "/") for r in repositories)
                assert match in references or repository in repositories or folder, (
                    f"{name}: {resource.display()} names {match!r}, which `images list` does not have"
                )
    assert seen  # (a reference split into registry and repository, as KEDA's, is the oracle's above, not this net)


def test_every_rendered_chart_is_listed_and_nothing_else(stack: tuple[str, Recording, dict[str, Any]]) -> None:
    name, recording, listed = stack
    charts = [r for r in recording.resources if r.type in HELM]
    assert charts
    rendered = {chart_of(r)[:2] for r in charts}
    in_list = {(c["name"], c["version"]) for c in listed["charts"]}
    assert not rendered - in_list, f"{name}: rendered but not in `images list`: {sorted(rendered - in_list)}"
    assert not in_list - rendered, f"{name}: in `images list` but not rendered: {sorted(in_list - rendered)}"
    by_name = {c["name"]: c for c in listed["charts"]}
    for resource in charts:
        chart, version, source = chart_of(resource)
        entry = by_name[chart]
        assert entry["source"] == source, f"{name}: {release_of(resource)} is installed from {source}"
        assert release_of(resource) in entry["releases"]
        assert CHARTS[entry["key"]].version == version
    assert sum(len(c["releases"]) for c in listed["charts"]) == len(charts)


def test_chart_images_documents_every_image_a_chart_names(stack: tuple[str, Recording, dict[str, Any]]) -> None:
    """`infra.catalog.CHART_IMAGES` (documentation) declares every image a rendered chart's values name."""
    name, recording, listed = stack
    key_of = {i["rendered"]: i["key"] for i in listed["images"]}
    chart_key = {c["name"]: c["key"] for c in listed["charts"]}
    for resource in recording.resources:
        if resource.type not in HELM:
            continue
        key = chart_key[chart_of(resource)[0]]
        named = {key_of[ref] for ref in pulled_by_nodes(chart_images(resource.inputs.get("values") or {}), name)}
        assert named <= set(CHART_IMAGES[key]), f"{name}: chart {key} names {sorted(named - set(CHART_IMAGES[key]))}"


def _spec(name: str) -> PlatformSpec:
    return spec_of(load_stack_config(ROOT, name))


def test_finance_prod_lists_its_whole_platform() -> None:
    result = CliRunner().invoke(
        app, ["images", "list", "--stack", "finance-prod", "--format", "json", "--project-dir", str(ROOT)]
    )
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    keys = {i["key"] for i in listed["images"]}
    # PKI, gateway, monitoring and logging: the parts an inventory built from a chart list used to miss.
    assert {"cert-manager-controller", "trust-manager", "envoy-gateway", "ai-gateway-extproc", "prometheus"} <= keys
    assert {"grafana", "elasticsearch", "kibana", "fluent-bit", "elasticsearch-exporter", "eck-operator"} <= keys
    # The nodes' driver is preinstalled and no pool uses MIG: the operator deploys neither.
    assert not keys & {"nvidia-driver", "k8s-driver-manager", "mig-manager"}
    assert len(listed["images"]) == 43 and len(listed["charts"]) == 11
    # Air-gapped: every chart from the site, the PKI's and Harbor's from the bootstrap registry (Harbor is not up yet).
    for chart in listed["charts"]:
        site = (
            "bootstrap-registry.dc1.bank.internal"
            if chart["key"] in {"cert-manager", "trust-manager", "harbor"}
            else "harbor.bank.internal"
        )
        assert chart["reference"] == chart["source"] == f"oci://{site}/charts/{chart['name']}"
    bootstrap = {i["key"] for i in listed["images"] if i["bootstrap"]}
    assert bootstrap == {k for k in keys if k.startswith(("harbor-", "cert-manager-"))} | {"trust-manager"}
    for image in listed["images"]:
        assert image["rendered"].startswith("bootstrap-registry.dc1.bank.internal/") == image["bootstrap"]
