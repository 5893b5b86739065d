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

import base64
import dataclasses
import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pulumi
import yaml

from infra.catalog import CHARTS, IMAGES, Image
from infra.config import (
    FULL_PLATFORM_KEY,
    PlatformSpec,
    RegistrySpec,
    StackConfigError,
    parse_platform,
    qualified_key,
)

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
LOCK_COMMAND = "private-llm images lock"
MIRROR_HINT = "run the mirror first (`pulumi up` with privatellm:mode=mirror on the connected bastion)"
CREDENTIALS_HINT = (
    "give a registry account with pull access to the project "
    "(PRIVATELLM_REGISTRY_USERNAME and PRIVATELLM_REGISTRY_PASSWORD for `private-llm images lock`)"
)


# --------------------------------------------------------------------------------------------------------------
# Inventory: what the rendered program pulls
# --------------------------------------------------------------------------------------------------------------

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


def upstream_reference(image: Image) -> str:
    return f"{image.upstream}:{image.tag}"


def airgapped_chart(host: str, name: str, project: str = "charts") -> str:
    return f"oci://{host}/{project}/{name}"


def split_reference(reference: str) -> tuple[str, str | None, str | None]:
    """`host/path:tag@sha256:…` → ("host/path", tag or None, digest or None)."""
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = name.rsplit(":", 1)
        return repository, tag, digest or None
    return name, None, digest or None


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
    from infra.offline import OfflineError, StackConfig, run_program
    from infra.platform import build_platform

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
    if spec.registry.harbor is not None:
        bootstrap = RegistrySpec(
            host=spec.registry.harbor.bootstrap_registry, platform_project=spec.registry.platform_project
        )
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
        repository, tag, digest = split_reference(ref.reference)
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
                # An air-gapped render installs every chart from the site: that location is the reference.
                reference=sources[0]
                if spec.registry.air_gapped and sources[0].startswith("oci://")
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
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        process = subprocess.run(
            [sys.executable, "-c", "from infra.images import _inventory_child; _inventory_child()"],
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


# --------------------------------------------------------------------------------------------------------------
# Lock file
# --------------------------------------------------------------------------------------------------------------


class LockError(ValueError):
    """A lock file that cannot be used; the message names the file, the entry and the fix."""


def lock_path(project_dir: Path, stack: str) -> Path:
    """`<stackConfigDir>/Pulumi.<stack>.lock.yaml` (stackConfigDir from Pulumi.yaml, `stacks` by default)."""
    folder = "stacks"
    project_file = project_dir / "Pulumi.yaml"
    if project_file.is_file():
        document = yaml.safe_load(project_file.read_text()) or {}
        if isinstance(document, dict) and document.get("stackConfigDir"):
            folder = str(document["stackConfigDir"])
    return project_dir / folder / f"Pulumi.{stack}.lock.yaml"


def _stack_of(path: Path) -> str:
    name = path.name
    if name.startswith("Pulumi.") and name.endswith(".lock.yaml"):
        return name[len("Pulumi.") : -len(".lock.yaml")]
    return "<stack>"


def load_lock(path: Path) -> dict[str, str]:
    """Catalog key → digest. Every entry must name a catalog image, its current upstream `repo:tag` and a
    `sha256:` digest; all problems are reported at once."""
    relock = f"re-run `{LOCK_COMMAND} --stack {_stack_of(path)}`"
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise LockError(f"{path}: cannot be read ({exc.strerror}); {relock}") from None
    except yaml.YAMLError as exc:
        raise LockError(f"{path} is not valid YAML: {exc}; {relock}") from None
    entries = document.get("images") if isinstance(document, dict) else None
    if entries is None:
        entries = {}
    if not isinstance(entries, dict):
        raise LockError(f"{path}: `images` must be a mapping of catalog key to {{reference, digest}}; {relock}")
    problems: list[str] = []
    digests: dict[str, str] = {}
    for key, entry in entries.items():
        where = f"images.{key}"
        image = IMAGES.get(str(key))
        if image is None:
            problems.append(f"{where}: not an image of the catalog (known: {', '.join(sorted(IMAGES))}); {relock}")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a mapping with `reference` and `digest`")
            continue
        digest, reference = entry.get("digest"), entry.get("reference")
        if not isinstance(digest, str) or not DIGEST.match(digest):
            problems.append(f"{where}.digest={digest!r} is not sha256:<64 lower-case hex digits>; {relock}")
        current = upstream_reference(image)
        if reference != current:
            problems.append(
                f"{where}.reference={reference!r} does not match the catalog's {current!r} (the tag changed since "
                f"the lock was written): {relock}"
            )
        if isinstance(digest, str) and DIGEST.match(digest) and reference == current:
            digests[str(key)] = digest
    if problems:
        raise LockError(f"{path} has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    return digests


def write_lock(path: Path, digests: Mapping[str, str]) -> None:
    """Write the lock file: each catalog key with its current upstream `repo:tag` and digest, sorted by key."""
    problems = [f"{key}: not an image of the catalog" for key in digests if key not in IMAGES]
    problems += [f"{key}: digest {d!r} is not sha256:<64 hex>" for key, d in digests.items() if not DIGEST.match(d)]
    if problems:
        raise LockError(f"{path}: not written: " + "; ".join(problems))
    document = {
        "images": {
            key: {"reference": upstream_reference(IMAGES[key]), "digest": digests[key]} for key in sorted(digests)
        }
    }
    header = (
        f"# Written by `{LOCK_COMMAND} --stack {_stack_of(path)}`: the digest of every image as the customer's\n"
        "# registry serves it. Re-run that command after changing an image tag or mirroring again.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False))


def apply_lock(images: Mapping[str, Image], lock: Mapping[str, str]) -> dict[str, Image]:
    """Copies of `images` with the lock's digests (keys absent from the lock are left as they are)."""
    return {
        key: dataclasses.replace(image, digest=lock[key]) if key in lock else image for key, image in images.items()
    }


# --------------------------------------------------------------------------------------------------------------
# Registry client (Docker Registry HTTP API v2)
# --------------------------------------------------------------------------------------------------------------


class RegistryError(Exception):
    """The registry could not give an image's digest; the message names the image and the fix."""


_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` → ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def _base_url(registry_url: str) -> str:
    url = registry_url.strip().rstrip("/")
    if "://" not in url:
        url = f"https://{url}"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise RegistryError(f"registry URL {registry_url!r} must be https://<host>[:port] (http:// only if explicit)")
    return url


def _basic(auth: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")


@dataclass
class _Response:
    status: int
    headers: Message
    body: bytes


def _open(opener: urllib.request.OpenerDirector, request: urllib.request.Request, timeout: float) -> _Response:
    try:
        with opener.open(request, timeout=timeout) as response:
            return _Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read() if exc.fp is not None else b""
        return _Response(exc.code, exc.headers, body)


def resolve_digest(
    registry_url: str,
    repository: str,
    tag: str,
    auth: tuple[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
    ca_file: str | Path | None = None,
    timeout: float = 30.0,
    missing_hint: str = f"not mirrored yet; {MIRROR_HINT}",
    credentials_hint: str = CREDENTIALS_HINT,
) -> str:
    """The `sha256:` digest `<registry>/<repository>:<tag>` resolves to, as the registry serves it.

    HEAD /v2/<repository>/manifests/<tag> accepting OCI and Docker manifests and indexes; answers a bearer-token
    challenge (credentials sent to the realm with basic auth) or a basic challenge; when the registry gives no
    Docker-Content-Digest header, GETs the manifest and hashes its bytes. `registry_url` is HTTPS unless it starts
    with `http://`; `ca_file` adds a private CA (ignored when an `opener` is given). `missing_hint` and
    `credentials_hint` end the message of a 404 and of a 401/403."""
    base = _base_url(registry_url)
    host = urllib.parse.urlsplit(base).netloc
    image = f"{host}/{repository}:{tag}"
    if opener is None:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    url = f"{base}/v2/{urllib.parse.quote(repository)}/manifests/{urllib.parse.quote(tag, safe='')}"
    accept = ", ".join(MANIFEST_MEDIA_TYPES)
    authorization: str | None = None

    def request(method: str) -> _Response:
        req = urllib.request.Request(url, method=method, headers={"Accept": accept})
        if authorization:
            # Never forwarded on a redirect (to blob storage, for instance).
            req.add_unredirected_header("Authorization", authorization)
        try:
            return _open(opener, req, timeout)
        except urllib.error.URLError as exc:
            hint = " (a private CA? give its certificate with --ca-file)" if "CERTIFICATE" in str(exc).upper() else ""
            raise RegistryError(f"{image}: cannot reach the registry at {base}: {exc.reason}{hint}") from None
        except OSError as exc:
            raise RegistryError(f"{image}: cannot reach the registry at {base}: {exc}") from None

    response = request("HEAD")
    if response.status == 401:
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, params = parse_challenge(challenge)
        if scheme == "bearer" and params.get("realm"):
            token = _bearer_token(opener, base, image, params, repository, auth, timeout, credentials_hint)
            authorization = f"Bearer {token}"
        elif scheme == "basic" and auth is not None:
            authorization = _basic(auth)
        else:
            raise RegistryError(f"{image}: the registry requires authentication (HTTP 401); {credentials_hint}")
        response = request("HEAD")
    _check_status(response.status, image, base, auth, missing_hint, credentials_hint)
    digest = response.headers.get("Docker-Content-Digest")
    if digest is None:
        response = request("GET")
        _check_status(response.status, image, base, auth, missing_hint, credentials_hint)
        return "sha256:" + hashlib.sha256(response.body).hexdigest()
    digest = digest.strip()
    if not DIGEST.match(digest):
        raise RegistryError(f"{image}: the registry answered digest {digest!r}, not sha256:<64 hex digits>")
    return digest


def _check_status(
    status: int,
    image: str,
    base: str,
    auth: tuple[str, str] | None,
    missing_hint: str = f"not mirrored yet; {MIRROR_HINT}",
    credentials_hint: str = CREDENTIALS_HINT,
) -> None:
    if 200 <= status < 300:
        return
    if status == 401:
        what = "refused the credentials" if auth else "requires credentials"
        raise RegistryError(f"{image}: the registry {what} (HTTP 401); {credentials_hint}")
    if status == 403:
        raise RegistryError(f"{image}: the account may not pull this repository (HTTP 403); {credentials_hint}")
    if status == 404:
        raise RegistryError(f"{image} is not in the registry at {base} (HTTP 404): {missing_hint}")
    raise RegistryError(f"{image}: the registry at {base} answered HTTP {status}")


def _bearer_token(
    opener: urllib.request.OpenerDirector,
    base: str,
    image: str,
    params: dict[str, str],
    repository: str,
    auth: tuple[str, str] | None,
    timeout: float,
    credentials_hint: str = CREDENTIALS_HINT,
) -> str:
    realm = params["realm"]
    realm_scheme = urllib.parse.urlsplit(realm).scheme
    if realm_scheme != "https" and not (realm_scheme == "http" and base.startswith("http://")):
        raise RegistryError(f"{image}: the registry's token realm {realm!r} is not https; refusing to send credentials")
    query = {"service": params.get("service", ""), "scope": params.get("scope") or f"repository:{repository}:pull"}
    sep = "&" if urllib.parse.urlsplit(realm).query else "?"
    req = urllib.request.Request(
        realm + sep + urllib.parse.urlencode({k: v for k, v in query.items() if v}), method="GET"
    )
    if auth is not None:
        req.add_unredirected_header("Authorization", _basic(auth))
    try:
        response = _open(opener, req, timeout)
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"{image}: cannot reach the registry's token service {realm}: {exc}") from None
    if response.status in (401, 403):
        what = "refused the credentials" if auth else "requires credentials"
        raise RegistryError(
            f"{image}: the registry's token service {what} (HTTP {response.status}); {credentials_hint}"
        )
    if response.status != 200:
        raise RegistryError(f"{image}: the registry's token service {realm} answered HTTP {response.status}")
    try:
        document = json.loads(response.body)
    except ValueError:
        raise RegistryError(f"{image}: the registry's token service {realm} did not answer JSON") from None
    token = (document.get("token") or document.get("access_token")) if isinstance(document, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryError(f"{image}: the registry's token service {realm} gave no token")
    return token


BOOTSTRAP_HINT = (
    "not loaded yet; push it to the bootstrap registry at exactly this reference: the mirror does "
    "(`pulumi up` with privatellm:mode=mirror and privatellm:mirrorTo all or bootstrap), or the site's own tooling"
)
BOOTSTRAP_CREDENTIALS_HINT = (
    "give an account with pull access to the bootstrap registry (PRIVATELLM_BOOTSTRAP_REGISTRY_USERNAME and "
    "PRIVATELLM_BOOTSTRAP_REGISTRY_PASSWORD); the cluster's nodes pull these images without a pull secret"
)


def lock_stack(
    spec: PlatformSpec,
    project_dir: Path,
    registry_url: str | None = None,
    auth: tuple[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
    ca_file: str | Path | None = None,
    bootstrap_url: str | None = None,
    bootstrap_auth: tuple[str, str] | None = None,
) -> dict[str, str]:
    """Catalog key → digest of every image of the stack, each resolved from the registry the cluster pulls it from:
    `registry_url` (default `https://<registry.host>`, credentials `auth`) for most, and for the images pulled before
    Harbor exists (Harbor's own and, with a managed Harbor, the PKI's) the bootstrap registry: `bootstrap_url`
    (default `$PRIVATELLM_BOOTSTRAP_REGISTRY_URL`, else `https://<registry.harbor.bootstrap_registry>`), credentials
    `bootstrap_auth` (default `$PRIVATELLM_BOOTSTRAP_REGISTRY_USERNAME`/`_PASSWORD`, else none: the nodes pull them
    without a pull secret). The credentials of one registry are never sent to the other.

    The existing lock is ignored. An image whose tag the stack sets (`gpu_operator.driver_version`) is resolved (it
    must be there) but not returned: the lock pins catalog tags only. Every failing image is reported in one
    RegistryError."""
    images, _ = stack_inventory(spec, project_dir)
    assert spec.registry is not None  # checked by stack_inventory
    url = registry_url or f"https://{spec.registry.host}"
    harbor = spec.registry.harbor
    if harbor is not None:
        bootstrap_url = bootstrap_url or os.environ.get("PRIVATELLM_BOOTSTRAP_REGISTRY_URL") or None
        bootstrap_url = bootstrap_url or f"https://{harbor.bootstrap_registry}"
        if bootstrap_auth is None:
            user = os.environ.get("PRIVATELLM_BOOTSTRAP_REGISTRY_USERNAME")
            password = os.environ.get("PRIVATELLM_BOOTSTRAP_REGISTRY_PASSWORD")
            bootstrap_auth = (user, password) if user and password else None
    digests: dict[str, str] = {}
    problems: list[str] = []
    for entry in images:
        try:
            if entry.bootstrap:
                assert bootstrap_url is not None
                digest = resolve_digest(
                    bootstrap_url,
                    entry.repository,
                    entry.tag,
                    bootstrap_auth,
                    opener=opener,
                    ca_file=ca_file,
                    missing_hint=BOOTSTRAP_HINT,
                    credentials_hint=BOOTSTRAP_CREDENTIALS_HINT,
                )
            else:
                digest = resolve_digest(url, entry.repository, entry.tag, auth, opener=opener, ca_file=ca_file)
        except RegistryError as exc:
            problems.append(f"{exc} (bootstrap registry)" if entry.bootstrap else str(exc))
            continue
        if entry.lockable:
            digests[entry.key] = digest
    if problems:
        raise RegistryError(
            f"{len(problems)} of {len(images)} images could not be resolved:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return digests
