"""Supply chain: the stack's image and chart inventory, the lock file, the registry client, the mirror program."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi.runtime import mocks

from infra import offline
from infra.catalog import CHARTS, IMAGES
from infra.config import PlatformSpec, parse_platform
from infra.images import (
    ImageEntry,
    LockError,
    RegistryError,
    apply_lock,
    load_lock,
    lock_path,
    lock_stack,
    resolve_digest,
    stack_inventory,
    write_lock,
)
from infra.mirror import build_mirror
from infra.mirror import main as mirror_main
from infra.offline import Recording, config_from_mapping, run_program

HOST = "harbor.bank.internal"
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def spec_doc(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "bank",
        "registry": {"host": HOST},
        "node_pools": [
            {"name": "h100", "gpu": "H100-80GB-SXM", "gpus_per_node": 8, "nodes": 2},
            {"name": "l4", "gpu": "L4", "gpus_per_node": 1, "nodes": 2},
        ],
        "models": [
            # 16 GPUs across both nodes: pipeline parallel, LeaderWorkerSet.
            {"name": "deepseek-v3", "model": "DeepSeek-V3", "pool": "h100", "max_model_len": 16384},
            {
                "name": "llama-8b",
                "model": "Llama-3.1-8B",
                "pool": "l4",
                "max_model_len": 8192,
                "autoscaling": {"enabled": True, "min_replicas": 1, "max_replicas": 2},
            },
        ],
    }
    doc.update(kw)
    return doc


@pytest.fixture(scope="module")
def spec() -> PlatformSpec:
    return parse_platform(spec_doc())


GPU_OPERATOR_KEYS = [
    "gpu-operator",
    "nvidia-driver",
    "nvidia-container-toolkit",
    "nvidia-device-plugin",
    "dcgm-exporter",
    "mig-manager",
    "node-feature-discovery",
]
KEDA_KEYS = ["keda", "keda-metrics-apiserver", "keda-admission-webhooks"]


# --------------------------------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------------------------------


def test_inventory_lists_every_image_and_chart_through_the_registry(spec: PlatformSpec, tmp_path: Path) -> None:
    images, charts = stack_inventory(spec, tmp_path)
    assert [i.key for i in images] == ["vllm", *GPU_OPERATOR_KEYS, "lws", *KEDA_KEYS]
    by_key = {i.key: i for i in images}
    vllm = by_key["vllm"]
    assert vllm.upstream == f"docker.io/vllm/vllm-openai:{IMAGES['vllm'].tag}"
    assert vllm.rendered == f"{HOST}/platform/vllm/vllm-openai:{IMAGES['vllm'].tag}"
    assert (vllm.host, vllm.repository, vllm.tag) == (HOST, "platform/vllm/vllm-openai", IMAGES["vllm"].tag)
    assert by_key["dcgm-exporter"].rendered == f"{HOST}/platform/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless"
    assert by_key["lws"].upstream == "registry.k8s.io/lws/lws:v0.9.0"
    assert all(i.rendered.startswith(f"{HOST}/platform/") and i.digest is None for i in images)
    assert [(c.key, c.reference, c.version) for c in charts] == [
        ("gpu-operator", f"oci://{HOST}/charts/gpu-operator", CHARTS["gpu-operator"].version),
        ("lws", f"oci://{HOST}/charts/lws", "0.9.0"),
        ("keda", f"oci://{HOST}/charts/keda", CHARTS["keda"].version),
    ]
    assert charts[1].upstream == "oci://registry.k8s.io/lws/charts/lws"
    assert charts[2].upstream == "https://kedacore.github.io/charts/keda"


def test_inventory_of_a_small_stack_has_no_lws_or_keda(tmp_path: Path) -> None:
    doc = spec_doc(
        node_pools=[{"name": "l4", "gpu": "L4", "gpus_per_node": 1, "nodes": 1}],
        models=[{"name": "llama-8b", "model": "Llama-3.1-8B", "pool": "l4", "max_model_len": 8192}],
    )
    images, charts = stack_inventory(parse_platform(doc), tmp_path)
    assert [i.key for i in images] == ["vllm", *GPU_OPERATOR_KEYS]
    assert [c.key for c in charts] == ["gpu-operator"]


def test_inventory_applies_the_stack_lock(spec: PlatformSpec, tmp_path: Path) -> None:
    write_lock(lock_path(tmp_path, "bank"), {"vllm": DIGEST_A, "lws": DIGEST_B})
    images, _ = stack_inventory(spec, tmp_path, stack="bank")
    by_key = {i.key: i for i in images}
    assert by_key["vllm"].rendered == f"{HOST}/platform/vllm/vllm-openai:{IMAGES['vllm'].tag}@{DIGEST_A}"
    assert by_key["vllm"].target == f"{HOST}/platform/vllm/vllm-openai:{IMAGES['vllm'].tag}"
    assert by_key["lws"].digest == DIGEST_B
    assert by_key["keda"].digest is None


# --------------------------------------------------------------------------------------------------------------
# Lock file
# --------------------------------------------------------------------------------------------------------------


def test_lock_path_follows_stack_config_dir(tmp_path: Path) -> None:
    assert lock_path(tmp_path, "prod") == tmp_path / "stacks" / "Pulumi.prod.lock.yaml"
    (tmp_path / "Pulumi.yaml").write_text("name: x\nstackConfigDir: conf\n")
    assert lock_path(tmp_path, "prod") == tmp_path / "conf" / "Pulumi.prod.lock.yaml"


def test_lock_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "stacks" / "Pulumi.prod.lock.yaml"
    write_lock(path, {"vllm": DIGEST_A, "keda": DIGEST_B})
    document = yaml.safe_load(path.read_text())
    assert document == {
        "images": {
            "keda": {"reference": f"ghcr.io/kedacore/keda:{IMAGES['keda'].tag}", "digest": DIGEST_B},
            "vllm": {"reference": f"docker.io/vllm/vllm-openai:{IMAGES['vllm'].tag}", "digest": DIGEST_A},
        }
    }
    assert load_lock(path) == {"keda": DIGEST_B, "vllm": DIGEST_A}


def _lock(path: Path, images: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"images": images}))
    return path


def test_lock_rejects_a_bad_digest(tmp_path: Path) -> None:
    reference = f"docker.io/vllm/vllm-openai:{IMAGES['vllm'].tag}"
    path = _lock(tmp_path / "Pulumi.prod.lock.yaml", {"vllm": {"reference": reference, "digest": "sha256:abc"}})
    with pytest.raises(LockError, match=r"images\.vllm\.digest='sha256:abc' is not sha256:<64"):
        load_lock(path)
    with pytest.raises(LockError, match="vllm: digest"):
        write_lock(tmp_path / "x.lock.yaml", {"vllm": "md5:" + "0" * 32})


def test_lock_rejects_a_stale_reference(tmp_path: Path) -> None:
    path = _lock(
        tmp_path / "Pulumi.prod.lock.yaml",
        {
            "vllm": {"reference": "docker.io/vllm/vllm-openai:v0.1.0", "digest": DIGEST_A},
            "keda": {"reference": f"ghcr.io/kedacore/keda:{IMAGES['keda'].tag}", "digest": DIGEST_B},
        },
    )
    with pytest.raises(LockError) as info:
        load_lock(path)
    message = str(info.value)
    assert "images.vllm.reference='docker.io/vllm/vllm-openai:v0.1.0' does not match" in message
    assert "re-run `private-llm images lock --stack prod`" in message
    assert "keda" not in message


def test_lock_rejects_an_unknown_image(tmp_path: Path) -> None:
    path = _lock(tmp_path / "Pulumi.prod.lock.yaml", {"nginx": {"reference": "nginx:1", "digest": DIGEST_A}})
    with pytest.raises(LockError, match=r"images\.nginx: not an image of the catalog"):
        load_lock(path)


def test_stale_lock_stops_the_inventory(spec: PlatformSpec, tmp_path: Path) -> None:
    path = lock_path(tmp_path, "bank")
    path.parent.mkdir()
    _lock(path, {"lws": {"reference": "registry.k8s.io/lws/lws:v0.1.0", "digest": DIGEST_A}})
    with pytest.raises(LockError, match=r"images\.lws\.reference"):
        stack_inventory(spec, tmp_path, stack="bank")


def test_apply_lock_pins_rendered_references() -> None:
    pinned = apply_lock(IMAGES, {"vllm": DIGEST_A})
    registry = parse_platform(spec_doc()).registry
    assert registry is not None
    assert pinned["vllm"].render(registry) == f"{HOST}/platform/vllm/vllm-openai:{IMAGES['vllm'].tag}@{DIGEST_A}"
    assert pinned["keda"] is IMAGES["keda"]
    assert IMAGES["vllm"].digest is None  # copies, the catalog is untouched


# --------------------------------------------------------------------------------------------------------------
# Registry client against a fake registry
# --------------------------------------------------------------------------------------------------------------

REPO = "platform/vllm/vllm-openai"
TAG = IMAGES["vllm"].tag
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
SCHEMA1_DIGEST = "sha256:" + "1" * 64  # what a registry converts to when no v2 media type is accepted
USER, PASSWORD, TOKEN = "robot$mirror", "s3cret-pw", "tok-123"


@dataclass
class FakeRegistry:
    url: str = ""
    send_digest_header: bool = True
    manifests: dict[tuple[str, str], bytes] = field(default_factory=lambda: {(REPO, TAG): MANIFEST})
    requests: list[tuple[str, str]] = field(default_factory=list)


def _handler(registry: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _token(self) -> None:
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._send(401, {"Content-Type": "application/json"}, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                return
            assert "service=harbor-registry" in self.path and "scope=repository" in self.path
            self._send(200, {"Content-Type": "application/json"}, json.dumps({"access_token": TOKEN}).encode())

        def _manifest(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                challenge = (
                    f'Bearer realm="{registry.url}/token",service="harbor-registry",scope="repository:{REPO}:pull"'
                )
                self._send(401, {"WWW-Authenticate": challenge})
                return
            _, _, rest = self.path.partition("/v2/")
            repo, _, tag = rest.rpartition("/manifests/")
            body = registry.manifests.get((repo, tag))
            if body is None:
                self._send(404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
                return
            accept = self.headers.get("Accept", "")
            wanted = (
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            digest = MANIFEST_DIGEST if all(t in accept for t in wanted) else SCHEMA1_DIGEST
            headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
            if registry.send_digest_header:
                headers["Docker-Content-Digest"] = digest
            self._send(200, headers, body)

        def do_GET(self) -> None:
            registry.requests.append(("GET", self.path))
            self._token() if self.path.startswith("/token") else self._manifest()

        def do_HEAD(self) -> None:
            registry.requests.append(("HEAD", self.path))
            self._manifest()

    return Handler


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    registry = FakeRegistry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(registry))
    registry.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield registry
    server.shutdown()
    server.server_close()
    thread.join()


def test_resolve_digest_with_bearer_token(fake_registry: FakeRegistry) -> None:
    assert resolve_digest(fake_registry.url, REPO, TAG, auth=(USER, PASSWORD)) == MANIFEST_DIGEST
    methods = [m for m, _ in fake_registry.requests]
    assert methods == ["HEAD", "GET", "HEAD"]  # challenge, token, authorised HEAD: the manifest is never downloaded


def test_resolve_digest_wrong_credentials(fake_registry: FakeRegistry) -> None:
    with pytest.raises(RegistryError) as info:
        resolve_digest(fake_registry.url, REPO, TAG, auth=(USER, "wrong"))
    message = str(info.value)
    assert f"{REPO}:{TAG}" in message and "refused the credentials" in message
    assert "PRIVATELLM_REGISTRY_USERNAME" in message
    assert "wrong" not in message


def test_resolve_digest_unknown_tag(fake_registry: FakeRegistry) -> None:
    with pytest.raises(RegistryError) as info:
        resolve_digest(fake_registry.url, REPO, "v9.9.9", auth=(USER, PASSWORD))
    message = str(info.value)
    assert f"127.0.0.1:{fake_registry.url.rsplit(':', 1)[1]}/{REPO}:v9.9.9 is not in the registry" in message
    assert "not mirrored yet; run the mirror first" in message


def test_resolve_digest_hashes_the_manifest_without_digest_header(fake_registry: FakeRegistry) -> None:
    fake_registry.send_digest_header = False
    assert resolve_digest(fake_registry.url, REPO, TAG, auth=(USER, PASSWORD)) == MANIFEST_DIGEST
    assert [m for m, _ in fake_registry.requests][-1] == "GET"


def test_resolve_digest_is_https_unless_http_is_explicit() -> None:
    seen: list[str] = []

    class Opener:
        def open(self, request: Any, timeout: float) -> Any:
            seen.append(request.full_url)
            raise OSError("no network here")

    with pytest.raises(RegistryError, match=r"cannot reach the registry at https://harbor\.bank\.internal"):
        resolve_digest(HOST, REPO, TAG, opener=Opener())  # type: ignore[arg-type]
    assert seen == [f"https://{HOST}/v2/{REPO}/manifests/{TAG}"]
    with pytest.raises(RegistryError, match="must be https://"):
        resolve_digest(f"ftp://{HOST}", REPO, TAG)


def test_lock_stack_resolves_the_rendered_references(fake_registry: FakeRegistry, tmp_path: Path) -> None:
    doc = spec_doc(
        node_pools=[{"name": "l4", "gpu": "L4", "gpus_per_node": 1, "nodes": 1}],
        models=[{"name": "llama-8b", "model": "Llama-3.1-8B", "pool": "l4", "max_model_len": 8192}],
        gpu_operator={"enabled": False},
    )
    digests = lock_stack(parse_platform(doc), tmp_path, fake_registry.url, (USER, PASSWORD))
    assert digests == {"vllm": MANIFEST_DIGEST}
    assert ("HEAD", f"/v2/{REPO}/manifests/{TAG}") in fake_registry.requests


def test_lock_stack_reports_every_missing_image(fake_registry: FakeRegistry, spec: PlatformSpec) -> None:
    with pytest.raises(RegistryError) as info:
        lock_stack(spec, Path("."), fake_registry.url, (USER, PASSWORD))
    message = str(info.value)
    assert message.startswith("11 of 12 images could not be resolved")
    assert "platform/kedacore/keda:" in message and "not mirrored yet" in message


# --------------------------------------------------------------------------------------------------------------
# Mirror mode under Pulumi mocks
# --------------------------------------------------------------------------------------------------------------


class DockerMocks(offline.RecordingMocks):
    """What the docker provider fills in: the pulled image's id and the pushed digest."""

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        rid, outputs = super().new_resource(args)
        if args.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = "sha256:" + hashlib.sha256(args.name.encode()).hexdigest()
        if args.typ == "docker:index/registryImage:RegistryImage":
            outputs["sha256Digest"] = DIGEST_A
        return rid, outputs


def _image_id(resource_name: str) -> str:
    return "sha256:" + hashlib.sha256(resource_name.encode()).hexdigest()


def run_mirror(monkeypatch: pytest.MonkeyPatch, images: list[ImageEntry]) -> Recording:
    monkeypatch.setattr(offline, "RecordingMocks", DockerMocks)
    spec = parse_platform(spec_doc())

    def program() -> None:
        build_mirror(spec, images, "robot$mirror", "s3cret-pw")

    return run_program(config_from_mapping("mirror", {"privatellm:mode": "mirror"}), program=program)


def test_mirror_pulls_tags_and_pushes_each_image(monkeypatch: pytest.MonkeyPatch, spec: PlatformSpec) -> None:
    images, _ = stack_inventory(spec, Path("."))
    rec = run_mirror(monkeypatch, images)
    by_type: dict[str, dict[str, Any]] = {}
    for r in rec.resources:
        by_type.setdefault(r.type, {})[r.name] = r
    [component] = by_type["privatellm:supplychain:ImageMirror"].values()
    [provider] = by_type["pulumi:providers:docker"].values()
    assert len(by_type["docker:index/remoteImage:RemoteImage"]) == len(images) == 12

    pull = by_type["docker:index/remoteImage:RemoteImage"]["image-mirror-vllm-pull"]
    tag = by_type["docker:index/tag:Tag"]["image-mirror-vllm-tag"]
    push = by_type["docker:index/registryImage:RegistryImage"]["image-mirror-vllm-push"]
    vllm_tag = IMAGES["vllm"].tag
    assert pull.inputs["name"] == f"docker.io/vllm/vllm-openai:{vllm_tag}"
    assert pull.inputs["keepLocally"] is True
    assert tag.inputs["sourceImage"] == _image_id("image-mirror-vllm-pull")
    assert tag.inputs["targetImage"] == f"{HOST}/platform/vllm/vllm-openai:{vllm_tag}"
    assert push.inputs["name"] == f"{HOST}/platform/vllm/vllm-openai:{vllm_tag}"
    assert push.inputs["keepRemotely"] is True
    assert push.inputs["triggers"] == {"source_image_id": _image_id("image-mirror-vllm-pull")}
    assert tag.urn in push.options["dependsOn"]

    nfd = by_type["docker:index/tag:Tag"]["image-mirror-node-feature-discovery-tag"]
    assert nfd.inputs["targetImage"] == f"{HOST}/platform/nfd/node-feature-discovery:v0.19.0"
    for kind in ("remoteImage:RemoteImage", "tag:Tag", "registryImage:RegistryImage"):
        for r in by_type[f"docker:index/{kind}"].values():
            assert r.parent == component.urn
            assert r.provider == provider.urn

    # The registry password is a secret: masked on disk, never written out in plain text.
    assert provider.masked["registryAuth"] == "[secret]"
    [auth] = json.loads(provider.inputs["registryAuth"])
    assert auth == {"address": HOST, "username": "robot$mirror", "password": "s3cret-pw"}
    assert "s3cret-pw" not in json.dumps([r.to_json() for r in rec.resources])


def test_mirror_main_reads_the_stack_and_secure_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(offline, "RecordingMocks", DockerMocks)
    doc = spec_doc(
        node_pools=[{"name": "l4", "gpu": "L4", "gpus_per_node": 1, "nodes": 1}],
        models=[{"name": "llama-8b", "model": "Llama-3.1-8B", "pool": "l4", "max_model_len": 8192}],
        gpu_operator={"enabled": False},
    )
    config = config_from_mapping(
        "mirror",
        {
            "privatellm:platform": doc,
            "privatellm:mode": "mirror",
            "privatellm:registryUsername": "robot$mirror",
            "privatellm:registryPassword": {"secure": "v1:abc"},
        },
        project_dir=tmp_path,
    )
    rec = run_program(config, program=mirror_main)
    assert [r.name for r in rec.resources if r.type == "docker:index/registryImage:RegistryImage"] == [
        "image-mirror-vllm-push"
    ]
    [provider] = [r for r in rec.resources if r.type == "pulumi:providers:docker"]
    assert provider.masked["registryAuth"] == "[secret]"
    assert json.loads(provider.inputs["registryAuth"])[0]["password"] == "[secure:privatellm:registryPassword]"


def test_mirror_refuses_duplicate_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = ImageEntry("vllm", "docker.io/vllm/vllm-openai:v1", f"{HOST}/platform/vllm/vllm-openai:v1")
    with pytest.raises(offline.OfflineError, match="catalog keys listed twice: vllm"):
        run_mirror(monkeypatch, [entry, entry])
