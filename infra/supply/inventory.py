"""The supply chain of a stack: which images and charts it runs, their digests in the registries, the lock.

`stack_inventory` lists every image (catalog key, upstream `repo:tag`, reference the cluster pulls, digest, whether
it comes from the bootstrap registry) and chart (upstream, air-gapped `oci://<registry>/charts/<name>` and the source
the program installs it from) a stack needs. It is read from the program itself: the platform is rendered offline
(`render_platform`, the same `build_platform` as `pulumi up`) and every image reference in every Kubernetes object and
every chart's values is mapped to the catalog (`inventory_of_render`), so the list cannot drift from the render.

The lock file `stacks/Pulumi.<stack>.lock.yaml` pins each image to the digest the registry it is pulled from serves:

    images:
      vllm:
        reference: docker.io/vllm/vllm-openai:v0.33.0
        digest: sha256:…

`lock_stack` writes those digests by asking `registry.host` and, for the images pulled before Harbor exists, the
bootstrap registry (`resolve_digest`, a small Docker Registry HTTP API v2 client on the standard library:
bearer-token and basic auth, HTTPS unless `http://` is given explicitly).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from infra.catalog import CHARTS, IMAGES, load_lock, lock_path
from infra.config import (
    FULL_PLATFORM_KEY,
    PlatformSpec,
    RegistrySpec,
    StackConfigError,
    parse_platform,
    qualified_key,
)
from infra.offline import OfflineError, StackConfig, run_program
from infra.platform import build_platform
from policies.base import split_image

# The stack name of an inventory render that must not read any lock file: parentheses are not allowed in a Pulumi
# stack name, so `Pulumi.(inventory).lock.yaml` can never be a real stack's lock.
UNLOCKED_STACK = "(inventory)"


HELM_TYPES = frozenset({"kubernetes:helm.sh/v4:Chart", "kubernetes:helm.sh/v3:Chart", "kubernetes:helm.sh/v3:Release"})


class InventoryError(StackConfigError):
    """The stack's images or charts cannot be listed from its render (it does not render, or it renders an image or
    chart the catalog does not know). Caught where stack-file errors are, so the CLI prints it without a trace."""

    def __init__(self, message: str, stack: str | None = None) -> None:
        self.problems = [message]
        where = f"stack {stack!r}: " if stack else ""
        pulumi.RunError.__init__(self, where + message)


@dataclass(frozen=True)
class ImageEntry:
    key: str
    """Catalog key (infra.catalog.IMAGES)."""
    upstream: str
    """Upstream reference `repo:tag`, e.g. docker.io/vllm/vllm-openai:v0.33.0."""
    rendered: str
    """What the cluster pulls, as the program renders it: `<registry host>/<project>/<path>:<tag>[@sha256:…]`."""
    digest: str | None = None
    bootstrap: bool = False
    """Pulled from `registry.harbor.bootstrap_registry` (it runs before Harbor exists), not from `registry.host`."""
    used_by: tuple[str, ...] = ()
    """Where the render references it: `Kind/namespace/name` of a Kubernetes object, `Chart/namespace/release`."""

    @property
    def target(self) -> str:
        """The rendered reference without its digest: what the mirror tags and pushes."""
        return self.rendered.split("@", 1)[0]

    @property
    def host(self) -> str:
        return self.target.split("/", 1)[0]

    @property
    def repository(self) -> str:
        """The repository inside the registry it is pulled from, e.g. platform/vllm/vllm-openai."""
        return self.target.split("/", 1)[1].rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.target.rsplit(":", 1)[1]

    @property
    def lockable(self) -> bool:
        """Whether the lock file can pin it: its tag is the catalog's (the lock records the catalog reference). A tag
        set by the stack file (`gpu_operator.driver_version`) is not."""
        return self.key in IMAGES and IMAGES[self.key].tag == self.tag

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "used_by": list(self.used_by)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageEntry:
        return cls(
            key=data["key"],
            upstream=data["upstream"],
            rendered=data["rendered"],
            digest=data.get("digest"),
            bootstrap=bool(data.get("bootstrap", False)),
            used_by=tuple(data.get("used_by", ())),
        )


@dataclass(frozen=True)
class ChartEntry:
    key: str
    """Catalog key (infra.catalog.CHARTS)."""
    name: str
    version: str
    repository: str
    """Upstream chart repository: an https Helm repository or an oci:// registry path."""
    reference: str
    """Air-gapped reference in the customer's registries: on an air-gapped stack where the program installs it from
    (`source`: `oci://<registry host>/<charts project>/<name>`, or the bootstrap registry for the charts installed
    before a managed Harbor exists); on a connected stack `oci://<registry host>/<charts project>/<name>`."""
    source: str = ""
    """Where the rendered program installs it from: `oci://…/<name>`, or `<https repository>/<name>`."""
    releases: tuple[str, ...] = ()
    """The rendered releases of this chart, `namespace/release`."""

    @property
    def upstream(self) -> str:
        return f"{self.repository.rstrip('/')}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "releases": list(self.releases), "upstream": self.upstream}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChartEntry:
        return cls(
            key=data["key"],
            name=data["name"],
            version=data["version"],
            repository=data["repository"],
            reference=data["reference"],
            source=data.get("source", ""),
            releases=tuple(data.get("releases", ())),
        )


def airgapped_chart(host: str, name: str, project: str = "charts") -> str:
    return f"oci://{host}/{project}/{name}"


@dataclass(frozen=True)
class RenderedImage:
    reference: str
    """As rendered, e.g. harbor.bank.internal/platform/nvidia/k8s-device-plugin:v0.20.0."""
    resource: str
    """`Kind/namespace/name` of the Kubernetes object, or `Chart/namespace/release`."""
    path: str
    """Where in the object's inputs or the chart's values, e.g. spec.template.spec.containers[0].image."""


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def object_image_references(inputs: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, reference) of every `image` string in a Kubernetes object: containers, init and ephemeral containers of
    any pod template (Deployment, Job, LeaderWorkerSet, ECK podTemplate…) and custom resources' `spec.image`."""
    found: list[tuple[str, str]] = []
    if isinstance(inputs, Mapping):
        for key, value in inputs.items():
            where = _join(path, key)
            if key == "image" and isinstance(value, str):
                found.append((where, value))
            else:
                found.extend(object_image_references(value, where))
    elif isinstance(inputs, list):
        for index, value in enumerate(inputs):
            found.extend(object_image_references(value, _join(path, index)))
    return found


def chart_image_references(values: Any, path: str = "values") -> tuple[list[tuple[str, str]], list[str]]:
    """(path, reference) of every image a chart's values name, and the problems (an image named incompletely).

    The patterns of the charts the platform installs: `{registry?, repository, tag}` (most charts),
    `{repository, image, version}` (NVIDIA GPU Operator: `<repository>/<image>:<version>`), and `image: <full
    reference>` (Envoy Gateway's `global.images`). A mapping with `enabled: false` is a component the chart does not
    deploy: its images are not pulled (the GPU Operator's driver when the nodes have one installed)."""
    found: list[tuple[str, str]] = []
    problems: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, _join(where, index))
            return
        if not isinstance(node, Mapping) or node.get("enabled") is False:
            return
        repository, image, tag = node.get("repository"), node.get("image"), node.get("tag")
        version = node.get("version")
        handled: set[str] = set()
        if isinstance(repository, str):
            handled.add("repository")
            if isinstance(image, str) and isinstance(version or tag, str):
                found.append((where, f"{repository.rstrip('/')}/{image}:{version or tag}"))
                handled.update({"image", "version", "tag"})
            elif isinstance(tag, str):
                registry = node.get("registry")
                prefix = f"{registry.rstrip('/')}/" if isinstance(registry, str) and registry else ""
                found.append((where, f"{prefix}{repository}:{tag}"))
                handled.update({"tag", "registry"} if prefix else {"tag"})
            else:
                problems.append(f"{where}: repository {repository!r} without a tag (the chart would pick one)")
        elif isinstance(image, str):
            handled.add("image")
            if "/" in image or ":" in image:
                found.append((_join(where, "image"), image))
            else:
                problems.append(f"{where}.image={image!r} names no repository")
        elif isinstance(tag, str):
            problems.append(f"{where}: tag {tag!r} without a repository (the chart's default repository is pulled)")
            handled.add("tag")
        for key, value in node.items():
            if key not in handled:
                walk(value, _join(where, str(key)))

    walk(values, path)
    return found, problems


def _display(resource: Any) -> str:
    if resource.type in HELM_TYPES:
        inputs = resource.inputs
        release = inputs.get("name") or resource.name
        namespace = inputs.get("namespace")
        return f"Chart/{namespace}/{release}" if namespace else f"Chart/{release}"
    return str(resource.display())


def rendered_images(recording: Any) -> tuple[list[RenderedImage], list[str]]:
    """Every image reference in a recorded render (`infra.offline.Recording`): in Kubernetes objects (pod templates
    and custom resources) and in every chart's values; and the problems found."""
    images: list[RenderedImage] = []
    problems: list[str] = []
    for resource in recording.resources:
        if resource.type in HELM_TYPES:
            found, bad = chart_image_references(resource.inputs.get("values") or {})
            problems += [f"{_display(resource)}: {p}" for p in bad]
        elif resource.type.startswith("kubernetes:") and resource.custom:
            found = object_image_references(resource.inputs)
        else:
            continue
        images += [RenderedImage(reference, _display(resource), path) for path, reference in found]
    return images, problems


@dataclass(frozen=True)
class RenderedChart:
    name: str
    version: str
    source: str
    release: str


def rendered_charts(recording: Any) -> list[RenderedChart]:
    """Every chart release of a recorded render, with the chart's name, version and where it is installed from."""
    charts: list[RenderedChart] = []
    for resource in recording.resources:
        if resource.type not in HELM_TYPES:
            continue
        inputs = resource.inputs
        chart = str(inputs.get("chart") or "")
        repo = (inputs.get("repositoryOpts") or {}).get("repo")
        source = chart if chart.startswith("oci://") or not repo else f"{str(repo).rstrip('/')}/{chart}"
        release = _display(resource).removeprefix("Chart/")
        charts.append(
            RenderedChart(chart.rstrip("/").rsplit("/", 1)[-1], str(inputs.get("version") or ""), source, release)
        )
    return charts


def render_platform(spec: PlatformSpec, project_dir: Path, stack: str | None = None) -> Any:
    """Run the platform program (`infra.platform.build_platform`) offline for `spec` and return its recording.

    With `stack`, the program reads that stack's lock file as `pulumi up` would; without, no lock is read. Every
    `*_secret` the spec references gets a placeholder (no secret value is needed to list images)."""
    secrets = {qualified_key(ref): f"[secure:{qualified_key(ref)}]" for _, ref in spec.secret_refs()}
    config = StackConfig(
        stack=stack or UNLOCKED_STACK, values=secrets, secret_keys=sorted(secrets), project_dir=project_dir
    )

    def program() -> None:
        build_platform(spec)

    try:
        return run_program(config, program=program)
    except OfflineError as exc:
        raise InventoryError(f"the program does not render, so its images cannot be listed: {exc}") from exc


def _registries(spec: PlatformSpec) -> list[tuple[RegistrySpec, bool]]:
    """(registry, is the bootstrap registry) of every registry the stack pulls from."""
    assert spec.registry is not None
    registries = [(spec.registry, False)]
    bootstrap = spec.registry.bootstrap()
    if bootstrap is not None:
        registries.append((bootstrap, True))
    return registries


DRIVER_IMAGE = "nvidia-driver"


def inventory_of_render(
    spec: PlatformSpec, recording: Any, stack: str | None = None
) -> tuple[list[ImageEntry], list[ChartEntry]]:
    """The images and charts of a recorded render, mapped to the catalog. Every reference must be a catalog image
    rendered through the stack's registry (or, with a managed Harbor, its bootstrap registry), every chart a catalog
    chart at its version; all problems are reported in one InventoryError."""
    assert spec.registry is not None
    index: dict[str, tuple[str, bool]] = {}
    for registry, bootstrap in _registries(spec):
        for key, image in IMAGES.items():
            index.setdefault(f"{registry.host}/{registry.platform_project}/{image.path}", (key, bootstrap))
    found, problems = rendered_images(recording)
    seen: dict[str, dict[tuple[str, str | None, bool], list[RenderedImage]]] = {}
    for ref in found:
        host, path, tag, digest = split_image(ref.reference)
        repository = f"{host}/{path}"
        if repository not in index:
            problems.append(
                f"{ref.resource} {ref.path}: image {ref.reference!r} is not a catalog image (infra/catalog.py IMAGES) "
                f"pulled through {spec.registry.host}/{spec.registry.platform_project}"
                + (" or the bootstrap registry" if spec.registry.harbor else "")
            )
            continue
        key, bootstrap = index[repository]
        if tag is None:
            problems.append(f"{ref.resource} {ref.path}: image {ref.reference!r} has no tag")
            continue
        seen.setdefault(key, {}).setdefault((f"{repository}:{tag}", digest, bootstrap), []).append(ref)
    images: list[ImageEntry] = []
    for key in IMAGES:
        if key not in seen:
            continue
        forms = seen[key]
        if len(forms) > 1:
            described = "; ".join(
                f"{target}{'@' + digest if digest else ''} by {', '.join(sorted({r.resource for r in refs}))}"
                for (target, digest, _), refs in forms.items()
            )
            problems.append(f"image {key!r} is rendered in {len(forms)} different ways: {described}")
            continue
        [((target, digest, bootstrap), refs)] = forms.items()
        if key == DRIVER_IMAGE and digest is None:
            # The GPU Operator appends the nodes' OS to the driver tag it is given (controllers/object_controls.go
            # resolveDriverTag in v26.7.0): what the nodes pull, and what must be mirrored, is <version>-<os>.
            if spec.gpu_operator.node_os is None:
                problems.append(
                    f"gpu_operator.node_os is not set: with driver: operator the GPU Operator pulls "
                    f"{target}-<os><version> for the nodes' OS (NFD labels feature.node.kubernetes.io/"
                    "system-os_release.ID and VERSION_ID); set it, e.g. node_os: ubuntu22.04, so that the image the "
                    "nodes pull is listed, mirrored and locked"
                )
                continue
            target = f"{target}-{spec.gpu_operator.node_os}"
        images.append(
            ImageEntry(
                key=key,
                upstream=f"{IMAGES[key].upstream}:{target.rsplit(':', 1)[1]}",
                rendered=f"{target}@{digest}" if digest else target,
                digest=digest,
                bootstrap=bootstrap,
                used_by=tuple(sorted({r.resource for r in refs})),
            )
        )
    by_name = {ref.name: key for key, ref in CHARTS.items()}
    releases: dict[str, list[RenderedChart]] = {}
    for chart in rendered_charts(recording):
        chart_key = by_name.get(chart.name)
        if chart_key is None:
            problems.append(
                f"Chart/{chart.release}: chart {chart.source!r} is not in the catalog (infra/catalog.py CHARTS)"
            )
        elif chart.version != CHARTS[chart_key].version:
            problems.append(
                f"Chart/{chart.release}: chart {chart.name} version {chart.version!r} is not the catalog's "
                f"{CHARTS[chart_key].version!r}"
            )
        else:
            releases.setdefault(chart_key, []).append(chart)
    charts: list[ChartEntry] = []
    for key, chart_ref in CHARTS.items():
        if key not in releases:
            continue
        sources = sorted({c.source for c in releases[key]})
        if len(sources) > 1:
            problems.append(f"chart {key!r} is installed from {len(sources)} places: {', '.join(sources)}")
            continue
        charts.append(
            ChartEntry(
                key=key,
                name=chart_ref.name,
                version=chart_ref.version,
                repository=chart_ref.repository,
                # A render that takes every chart from the site: that location is the reference.
                reference=sources[0]
                if spec.registry.serves_charts and sources[0].startswith("oci://")
                else airgapped_chart(spec.registry.host, chart_ref.name, spec.registry.charts_project),
                source=sources[0],
                releases=tuple(sorted(c.release for c in releases[key])),
            )
        )
    if problems:
        raise InventoryError(
            f"the render has {len(problems)} image or chart problem{'s' if len(problems) != 1 else ''}:\n"
            + "\n".join(f"  - {p}" for p in problems),
            stack,
        )
    return images, charts


def stack_inventory(
    spec: PlatformSpec, project_dir: Path, stack: str | None = None
) -> tuple[list[ImageEntry], list[ChartEntry]]:
    """Every image and chart the stack runs, read from its offline render (`render_platform`): each image reference
    in every Kubernetes object and every chart's values, each chart release. With `stack`, its lock file (when
    present) is checked first and pins the images, as it does for `pulumi up`."""
    if spec.registry is None:
        raise StackConfigError(
            [
                f"{FULL_PLATFORM_KEY}.registry is not set: every image is pulled through your registry; "
                "add registry: {host: harbor.example.internal}"
            ],
            stack,
        )
    render_stack = None
    if stack is not None:
        path = lock_path(project_dir, stack)
        if path.is_file():
            load_lock(path)  # a stale or malformed lock is reported as a LockError naming the file
            render_stack = stack
    recording = render_platform(spec, project_dir, render_stack)
    return inventory_of_render(spec, recording, stack)


def stack_inventory_isolated(
    platform: Mapping[str, Any], project_dir: Path, timeout: float = 600.0
) -> tuple[list[ImageEntry], list[ChartEntry]]:
    """`stack_inventory` of a raw `privatellm:platform` object, computed in a child Python process.

    For callers that run inside a Pulumi program (mirror mode): the offline render installs its own mocks and
    config, which must not replace the running program's. No lock is read (the mirror pushes tags)."""
    with tempfile.TemporaryDirectory(prefix="private-llm-inventory-") as folder:
        result = Path(folder) / "inventory.json"
        request = {"platform": dict(platform), "project_dir": str(project_dir), "out": str(result)}
        # The child must not inherit the engine's connection or config.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        process = subprocess.run(
            [sys.executable, "-c", "from infra.supply.inventory import _inventory_child; _inventory_child()"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            timeout=timeout,
            check=False,
        )
        if process.returncode != 0 or not result.is_file():
            detail = process.stderr.strip().splitlines()[-20:]
            raise InventoryError("cannot list the stack's images:\n" + "\n".join(detail))
        document = json.loads(result.read_text())
    return (
        [ImageEntry.from_json(i) for i in document["images"]],
        [ChartEntry.from_json(c) for c in document["charts"]],
    )


def _inventory_child() -> None:
    """Body of the child process of `stack_inventory_isolated` (request on stdin, inventory to the `out` file)."""
    request = json.loads(sys.stdin.read())
    try:
        spec = parse_platform(request["platform"])
        images, charts = stack_inventory(spec, Path(request["project_dir"]))
    except StackConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(1) from None
    Path(request["out"]).write_text(json.dumps(inventory_document(images, charts)))


def inventory_document(images: list[ImageEntry], charts: list[ChartEntry]) -> dict[str, Any]:
    """The inventory as JSON-ready data (for `private-llm images list --format json`)."""
    return {"images": [i.to_json() for i in images], "charts": [c.to_json() for c in charts]}
