"""The supply chain of a stack: which images and charts it runs, their digests in the customer's registry, the lock.

`stack_inventory` lists every image (catalog key, upstream `repo:tag`, reference through the customer's registry,
digest) and chart (upstream and air-gapped `oci://<registry>/charts/<name>` reference) a stack needs, the same
selection the program makes (`plan_models` → `charts_needed` → `stack_images`).

The lock file `stacks/Pulumi.<stack>.lock.yaml` pins each image to the digest the customer's registry serves:

    images:
      vllm:
        reference: docker.io/vllm/vllm-openai:v0.33.0
        digest: sha256:…

`lock_stack` writes those digests by asking the registry (`resolve_digest`, a small Docker Registry HTTP API v2
client on the standard library: bearer-token and basic auth, HTTPS unless `http://` is given explicitly).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import yaml

from infra.catalog import CHARTS, IMAGES, Image, stack_images
from infra.config import FULL_PLATFORM_KEY, PlatformSpec, RegistrySpec, StackConfigError
from infra.inference import charts_needed, plan_models

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
# Inventory
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageEntry:
    key: str
    """Catalog key (infra.catalog.IMAGES)."""
    upstream: str
    """Upstream reference `repo:tag`, e.g. docker.io/vllm/vllm-openai:v0.33.0."""
    rendered: str
    """What the cluster pulls: `<registry host>/<project>/<path>:<tag>[@sha256:…]`."""
    digest: str | None = None

    @property
    def target(self) -> str:
        """The rendered reference without its digest: what the mirror tags and pushes."""
        return self.rendered.split("@", 1)[0]

    @property
    def host(self) -> str:
        return self.target.split("/", 1)[0]

    @property
    def repository(self) -> str:
        """The repository inside the customer's registry, e.g. platform/vllm/vllm-openai."""
        return self.target.split("/", 1)[1].rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.target.rsplit(":", 1)[1]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ChartEntry:
    key: str
    """Catalog key (infra.catalog.CHARTS)."""
    name: str
    version: str
    repository: str
    """Upstream chart repository: an https Helm repository or an oci:// registry path."""
    reference: str
    """Air-gapped reference through the customer's registry: `oci://<registry host>/charts/<name>`."""

    @property
    def upstream(self) -> str:
        return f"{self.repository.rstrip('/')}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "upstream": self.upstream}


def upstream_reference(image: Image) -> str:
    return f"{image.upstream}:{image.tag}"


def airgapped_chart(host: str, name: str, project: str = "charts") -> str:
    return f"oci://{host}/{project}/{name}"


def stack_inventory(
    spec: PlatformSpec, project_dir: Path, stack: str | None = None
) -> tuple[list[ImageEntry], list[ChartEntry]]:
    """Every image and chart the stack runs. With `stack`, its lock file (when present) pins the images."""
    if spec.registry is None:
        raise StackConfigError(
            [
                f"{FULL_PLATFORM_KEY}.registry is not set: every image is pulled through your registry; "
                "add registry: {host: harbor.example.internal}"
            ],
            stack,
        )
    placed = plan_models(spec, project_dir)
    charts = charts_needed(spec, placed)
    images: dict[str, Image] = dict(IMAGES)
    if stack is not None:
        path = lock_path(project_dir, stack)
        if path.is_file():
            images = apply_lock(images, load_lock(path))
    harbor = spec.registry.harbor
    bootstrap = (
        RegistrySpec(host=harbor.bootstrap_registry, platform_project=spec.registry.platform_project)
        if harbor
        else None
    )
    image_entries = [
        ImageEntry(
            key=key,
            upstream=upstream_reference(images[key]),
            # Harbor cannot serve itself before it exists: its own images come from the bootstrap registry.
            rendered=images[key].render(bootstrap if bootstrap and key.startswith("harbor-") else spec.registry),
            digest=images[key].digest,
        )
        for key in stack_images(spec, [*charts, *(["harbor"] if harbor else [])])
    ]
    chart_entries = [
        ChartEntry(
            key=key,
            name=CHARTS[key].name,
            version=CHARTS[key].version,
            repository=CHARTS[key].repository,
            reference=airgapped_chart(spec.registry.host, CHARTS[key].name, spec.registry.charts_project),
        )
        for key in [*charts, *(["harbor"] if harbor else [])]
    ]
    return image_entries, chart_entries


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
) -> str:
    """The `sha256:` digest `<registry>/<repository>:<tag>` resolves to, as the registry serves it.

    HEAD /v2/<repository>/manifests/<tag> accepting OCI and Docker manifests and indexes; answers a bearer-token
    challenge (credentials sent to the realm with basic auth) or a basic challenge; when the registry gives no
    Docker-Content-Digest header, GETs the manifest and hashes its bytes. `registry_url` is HTTPS unless it starts
    with `http://`; `ca_file` adds a private CA (ignored when an `opener` is given)."""
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
            token = _bearer_token(opener, base, image, params, repository, auth, timeout)
            authorization = f"Bearer {token}"
        elif scheme == "basic" and auth is not None:
            authorization = _basic(auth)
        else:
            raise RegistryError(f"{image}: the registry requires authentication (HTTP 401); {CREDENTIALS_HINT}")
        response = request("HEAD")
    _check_status(response.status, image, base, auth)
    digest = response.headers.get("Docker-Content-Digest")
    if digest is None:
        response = request("GET")
        _check_status(response.status, image, base, auth)
        return "sha256:" + hashlib.sha256(response.body).hexdigest()
    digest = digest.strip()
    if not DIGEST.match(digest):
        raise RegistryError(f"{image}: the registry answered digest {digest!r}, not sha256:<64 hex digits>")
    return digest


def _check_status(status: int, image: str, base: str, auth: tuple[str, str] | None) -> None:
    if 200 <= status < 300:
        return
    if status == 401:
        what = "refused the credentials" if auth else "requires credentials"
        raise RegistryError(f"{image}: the registry {what} (HTTP 401); {CREDENTIALS_HINT}")
    if status == 403:
        raise RegistryError(f"{image}: the account may not pull this repository (HTTP 403); {CREDENTIALS_HINT}")
    if status == 404:
        raise RegistryError(f"{image} is not in the registry at {base} (HTTP 404): not mirrored yet; {MIRROR_HINT}")
    raise RegistryError(f"{image}: the registry at {base} answered HTTP {status}")


def _bearer_token(
    opener: urllib.request.OpenerDirector,
    base: str,
    image: str,
    params: dict[str, str],
    repository: str,
    auth: tuple[str, str] | None,
    timeout: float,
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
            f"{image}: the registry's token service {what} (HTTP {response.status}); {CREDENTIALS_HINT}"
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


def lock_stack(
    spec: PlatformSpec,
    project_dir: Path,
    registry_url: str | None = None,
    auth: tuple[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
    ca_file: str | Path | None = None,
) -> dict[str, str]:
    """Catalog key → digest of every image of the stack, resolved from the customer's registry (the references the
    cluster pulls). The existing lock is ignored. Every failing image is reported in one RegistryError."""
    images, _ = stack_inventory(spec, project_dir)
    assert spec.registry is not None  # checked by stack_inventory
    url = registry_url or f"https://{spec.registry.host}"
    digests: dict[str, str] = {}
    problems: list[str] = []
    for entry in images:
        try:
            digests[entry.key] = resolve_digest(url, entry.repository, entry.tag, auth, opener=opener, ca_file=ca_file)
        except RegistryError as exc:
            problems.append(str(exc))
    if problems:
        raise RegistryError(
            f"{len(problems)} of {len(images)} images could not be resolved:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return digests
