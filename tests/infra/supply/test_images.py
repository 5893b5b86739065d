"""Supply chain: the stack's image and chart inventory, the lock file, the registry client, the mirror program."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import mocks

from infra import offline
from infra.catalog import CHARTS, IMAGES, LockError, apply_lock, load_lock, lock_path, write_lock
from infra.config import PlatformSpec, parse_platform
from infra.offline import Recording, config_from_mapping, run_program
from infra.supply.inventory import ImageEntry, InventoryError, inventory_document, inventory_of_render, stack_inventory
from infra.supply.lock import lock_stack
from infra.supply.mirror import build_mirror, select_images
from infra.supply.mirror import main as mirror_main
from infra.supply.registry_client import RegistryError, resolve_digest

HOST = "harbor.bank.internal"
BOOTSTRAP = "bootstrap.bank.internal:5000"
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def spec_doc(**kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "bank",
        "registry": {"host": HOST},
        # the operator installs the driver: its image tag carries the nodes' OS
        "gpu_operator": {"node_os": "ubuntu22.04"},
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


def harbor_doc(**kw: Any) -> dict[str, Any]:
    """A small stack whose Harbor the platform manages: Harbor's and the PKI's images come from the bootstrap
    registry."""
    return spec_doc(
        registry={"host": HOST, "air_gapped": True, "harbor": {"bootstrap_registry": BOOTSTRAP}},
        node_pools=[{"name": "l4", "gpu": "L4", "gpus_per_node": 1, "nodes": 1}],
        models=[{"name": "llama-8b", "model": "Llama-3.1-8B", "pool": "l4", "max_model_len": 8192}],
        **{
            "gpu_operator": {"enabled": False},
            "observability": {"enabled": False},
            "logging": {"enabled": False},
            **kw,
        },
    )


def small_doc(**kw: Any) -> dict[str, Any]:
    """One model, no GPU Operator, no monitoring or logging: vLLM and the PKI's images only."""
    return spec_doc(
        node_pools=[{"name": "l4", "gpu": "L4", "gpus_per_node": 1, "nodes": 1}],
        models=[{"name": "llama-8b", "model": "Llama-3.1-8B", "pool": "l4", "max_model_len": 8192}],
        **{
            "gpu_operator": {"enabled": False},
            "observability": {"enabled": False},
            "logging": {"enabled": False},
            **kw,
        },
    )


# The driver is installed by the operator (the default): its image and the driver manager are pulled; no pool uses
# MIG, so the MIG manager is not.
GPU_OPERATOR_KEYS = [
    "gpu-operator",
    "nvidia-driver",
    "nvidia-container-toolkit",
    "nvidia-device-plugin",
    "dcgm-exporter",
    "k8s-driver-manager",
    "node-feature-discovery",
]
KEDA_KEYS = ["keda", "keda-metrics-apiserver", "keda-admission-webhooks"]
PKI_KEYS = [
    *(f"cert-manager-{p}" for p in ("controller", "webhook", "cainjector", "acmesolver", "startupapicheck")),
    "trust-manager",
]
MONITORING_KEYS = [
    "prometheus-operator",
    "prometheus-config-reloader",
    "kube-webhook-certgen",
    "prometheus",
    "alertmanager",
    "grafana",
    "grafana-sidecar",
    "kube-state-metrics",
]
LOGGING_KEYS = ["eck-operator", "elasticsearch", "kibana", "fluent-bit", "elasticsearch-exporter"]
HARBOR_KEYS = [k for k in IMAGES if k.startswith("harbor-")]


# --------------------------------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------------------------------


def test_inventory_lists_every_image_and_chart_through_the_registry(spec: PlatformSpec, tmp_path: Path) -> None:
    images, charts = stack_inventory(spec, tmp_path)
    keys = [i.key for i in images]
    assert set(keys) == {"vllm", "lws", *KEDA_KEYS, *GPU_OPERATOR_KEYS, *PKI_KEYS, *MONITORING_KEYS, *LOGGING_KEYS}
    assert keys == [k for k in IMAGES if k in keys]  # catalog order
    by_key = {i.key: i for i in images}
    vllm = by_key["vllm"]
    assert vllm.upstream == f"docker.io/vllm/vllm-openai:{IMAGES['vllm'].tag}"
    assert vllm.rendered == f"{HOST}/platform/vllm/vllm-openai:{IMAGES['vllm'].tag}"
    assert (vllm.host, vllm.repository, vllm.tag) == (HOST, "platform/vllm/vllm-openai", IMAGES["vllm"].tag)
    # Found in the pod templates of a Deployment and of a LeaderWorkerSet (leader and worker templates).
    assert vllm.used_by == ("Deployment/llm-inference/llama-8b", "LeaderWorkerSet/llm-inference/deepseek-v3")
    assert by_key["dcgm-exporter"].rendered == f"{HOST}/platform/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless"
    assert by_key["dcgm-exporter"].used_by == ("Chart/gpu-operator/gpu-operator",)
    assert by_key["lws"].upstream == "registry.k8s.io/lws/lws:v0.9.0"
    assert all(i.rendered.startswith(f"{HOST}/platform/") and i.digest is None for i in images)
    assert not any(i.bootstrap for i in images)
    assert [c.key for c in charts] == [
        "lws",
        "keda",
        "gpu-operator",
        "cert-manager",
        "trust-manager",
        "kube-prometheus-stack",
        "eck-operator",
        "fluent-bit",
    ]
    by_chart = {c.key: c for c in charts}
    assert (by_chart["lws"].reference, by_chart["lws"].version) == (f"oci://{HOST}/charts/lws", "0.9.0")
    assert by_chart["lws"].upstream == "oci://registry.k8s.io/lws/charts/lws"
    assert by_chart["keda"].upstream == "https://kedacore.github.io/charts/keda"
    # Not air-gapped: the program installs each chart from its upstream repository.
    assert by_chart["lws"].source == "oci://registry.k8s.io/lws/charts/lws"
    assert by_chart["keda"].source == "https://kedacore.github.io/charts/keda"
    assert by_chart["keda"].releases == ("llm-operators/keda",)
    assert all(c.version == CHARTS[c.key].version for c in charts)


def test_inventory_of_a_small_stack_has_no_lws_keda_or_gpu_operator(tmp_path: Path) -> None:
    images, charts = stack_inventory(parse_platform(small_doc()), tmp_path)
    assert [i.key for i in images] == ["vllm", *PKI_KEYS]
    assert [c.key for c in charts] == ["cert-manager", "trust-manager"]


def test_inventory_leaves_out_what_a_chart_does_not_deploy(tmp_path: Path) -> None:
    """A preinstalled driver: the GPU Operator's driver and driver manager are off, so their images are not pulled."""
    doc = spec_doc(gpu_operator={"driver": "preinstalled", "driver_version": "580.95.05"})
    images, _ = stack_inventory(parse_platform(doc), tmp_path)
    keys = {i.key for i in images}
    assert "gpu-operator" in keys and not keys & {"nvidia-driver", "k8s-driver-manager", "mig-manager"}


def test_inventory_of_a_managed_harbor_pulls_harbor_and_the_pki_from_the_bootstrap_registry(tmp_path: Path) -> None:
    images, charts = stack_inventory(parse_platform(harbor_doc()), tmp_path)
    assert [i.key for i in images] == ["vllm", *PKI_KEYS, *HARBOR_KEYS]
    bootstrap = {i.key for i in images if i.bootstrap}
    assert bootstrap == {*PKI_KEYS, *HARBOR_KEYS}
    for image in images:
        expected = BOOTSTRAP if image.bootstrap else HOST
        assert image.host == expected and image.rendered.startswith(f"{expected}/platform/")
    core = next(i for i in images if i.key == "harbor-core")
    assert core.rendered == f"{BOOTSTRAP}/platform/goharbor/harbor-core:v2.15.1"
    assert core.used_by == ("Chart/llm-registry/harbor",)
    assert {c.key for c in charts} == {"cert-manager", "trust-manager", "harbor"}


def test_inventory_json_extends_the_documented_shape(tmp_path: Path) -> None:
    images, charts = stack_inventory(parse_platform(harbor_doc()), tmp_path)
    document = inventory_document(images, charts)
    [core] = [i for i in document["images"] if i["key"] == "harbor-core"]
    assert set(core) == {"key", "upstream", "rendered", "digest", "bootstrap", "used_by"}
    assert core["bootstrap"] is True and core["used_by"] == ["Chart/llm-registry/harbor"]
    [chart] = [c for c in document["charts"] if c["key"] == "harbor"]
    assert set(chart) == {"key", "name", "version", "repository", "reference", "upstream", "source", "releases"}
    assert json.loads(json.dumps(document)) == document
    assert [ImageEntry.from_json(i) for i in document["images"]] == images


def _resource(type_: str, name: str, inputs: dict[str, Any]) -> offline.RecordedResource:
    return offline.RecordedResource.declared("t", type_, name, inputs)


def test_inventory_refuses_what_it_cannot_mirror(spec: PlatformSpec) -> None:
    """An image outside the catalog or the stack's registry, a chart image without a tag or repository (the chart
    would pick one, from the internet), an unknown chart: all reported at once, none silently left out."""
    pod = {"containers": [{"name": "c", "image": "docker.io/library/nginx:1.27"}]}
    recording = Recording(
        stack="t",
        resources=[
            _resource(
                "kubernetes:apps/v1:Deployment",
                "web",
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": "apps"},
                    "spec": {"template": {"spec": pod}},
                },
            ),
            _resource(
                "kubernetes:helm.sh/v4:Chart",
                "lws",
                {
                    "name": "lws",
                    "namespace": "ops",
                    "chart": f"oci://{HOST}/charts/lws",
                    "version": CHARTS["lws"].version,
                    "values": {
                        "image": {"manager": {"repository": f"{HOST}/platform/lws/lws"}},
                        "sidecar": {"image": {"tag": "v1"}},
                        "off": {"enabled": False, "image": {"tag": "ignored"}},
                    },
                },
            ),
            _resource(
                "kubernetes:helm.sh/v4:Chart",
                "redis",
                {"name": "redis", "chart": "oci://registry-1.docker.io/bitnamicharts/redis", "version": "1.0.0"},
            ),
        ],
    )
    with pytest.raises(InventoryError) as info:
        inventory_of_render(spec, recording)
    message = str(info.value)
    assert "4 image or chart problems" in message
    assert "Deployment/apps/web spec.template.spec.containers[0].image: image 'docker.io/library/nginx:1.27'" in message
    assert "values.image.manager: repository 'harbor.bank.internal/platform/lws/lws' without a tag" in message
    assert "values.sidecar.image: tag 'v1' without a repository" in message
    assert "Chart/redis: chart 'oci://registry-1.docker.io/bitnamicharts/redis' is not in the catalog" in message
    assert "ignored" not in message


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
    user: str = USER
    password: str = PASSWORD
    anonymous: bool = False
    """Serves manifests without any authentication (a site registry the nodes pull from without a pull secret)."""
    authorizations: list[str] = field(default_factory=list)
    """Every Authorization header received."""

    def add(self, repository: str, tag: str) -> str:
        """Store a manifest for repository:tag; returns the digest the registry will answer."""
        body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "r": repository})
        self.manifests[(repository, tag)] = body.encode()
        return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


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
            expected = "Basic " + base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._send(401, {"Content-Type": "application/json"}, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                return
            assert "service=harbor-registry" in self.path and "scope=repository" in self.path
            self._send(200, {"Content-Type": "application/json"}, json.dumps({"access_token": TOKEN}).encode())

        def _manifest(self) -> None:
            _, _, rest = self.path.partition("/v2/")
            repo, _, tag = rest.rpartition("/manifests/")
            if not registry.anonymous and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                challenge = (
                    f'Bearer realm="{registry.url}/token",service="harbor-registry",scope="repository:{repo}:pull"'
                )
                self._send(401, {"WWW-Authenticate": challenge})
                return
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
            accepted = all(t in accept for t in wanted)
            digest = "sha256:" + hashlib.sha256(body).hexdigest() if accepted else SCHEMA1_DIGEST
            headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
            if registry.send_digest_header:
                headers["Docker-Content-Digest"] = digest
            self._send(200, headers, body)

        def _record(self) -> None:
            registry.requests.append((self.command, self.path))
            if self.headers.get("Authorization"):
                registry.authorizations.append(self.headers["Authorization"])

        def do_GET(self) -> None:
            self._record()
            self._token() if self.path.startswith("/token") else self._manifest()

        def do_HEAD(self) -> None:
            self._record()
            self._manifest()

    return Handler


@contextmanager
def serve(registry: FakeRegistry) -> Iterator[FakeRegistry]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(registry))
    registry.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    with serve(FakeRegistry()) as registry:
        yield registry


@pytest.fixture
def bootstrap_registry() -> Iterator[FakeRegistry]:
    """The site's existing registry: anonymous pulls (the nodes pull Harbor's and the PKI's images without a pull
    secret), no manifests until a test adds them."""
    with serve(FakeRegistry(manifests={}, anonymous=True)) as registry:
        yield registry


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
    spec = parse_platform(small_doc())
    images, _ = stack_inventory(spec, tmp_path)
    expected = {i.key: fake_registry.add(i.repository, i.tag) for i in images}
    digests = lock_stack(spec, tmp_path, fake_registry.url, (USER, PASSWORD))
    assert digests == expected and set(digests) == {"vllm", *PKI_KEYS}
    assert ("HEAD", f"/v2/{REPO}/manifests/{TAG}") in fake_registry.requests
    assert ("HEAD", f"/v2/platform/jetstack/trust-manager/manifests/{IMAGES['trust-manager'].tag}") in (
        fake_registry.requests
    )


def test_lock_stack_reports_every_missing_image(fake_registry: FakeRegistry, spec: PlatformSpec) -> None:
    images, _ = stack_inventory(spec, Path("."))
    with pytest.raises(RegistryError) as info:
        lock_stack(spec, Path("."), fake_registry.url, (USER, PASSWORD))
    message = str(info.value)
    assert message.startswith(f"{len(images) - 1} of {len(images)} images could not be resolved")
    assert "platform/kedacore/keda:" in message and "not mirrored yet" in message
    assert "platform/prometheus/prometheus:" in message and "platform/jetstack/cert-manager-controller:" in message


def test_lock_resolves_bootstrap_images_in_the_bootstrap_registry(
    fake_registry: FakeRegistry, bootstrap_registry: FakeRegistry, tmp_path: Path
) -> None:
    """Harbor's and the PKI's images are pulled from the bootstrap registry: their digests come from there, Harbor
    is never asked for them, and Harbor's credentials never reach the bootstrap registry."""
    spec = parse_platform(harbor_doc())
    images, _ = stack_inventory(spec, tmp_path)
    expected = {i.key: (bootstrap_registry if i.bootstrap else fake_registry).add(i.repository, i.tag) for i in images}
    digests = lock_stack(spec, tmp_path, fake_registry.url, (USER, PASSWORD), bootstrap_url=bootstrap_registry.url)
    assert digests == expected
    assert set(digests) == {"vllm", *PKI_KEYS, *HARBOR_KEYS}
    asked_harbor = {path for _, path in fake_registry.requests if "/manifests/" in path}
    asked_bootstrap = {path for _, path in bootstrap_registry.requests}
    assert asked_harbor == {f"/v2/{REPO}/manifests/{TAG}"}
    assert asked_bootstrap == {f"/v2/{i.repository}/manifests/{i.tag}" for i in images if i.bootstrap}
    assert bootstrap_registry.authorizations == []


def test_lock_names_the_bootstrap_registry_for_a_missing_bootstrap_image(
    fake_registry: FakeRegistry, bootstrap_registry: FakeRegistry, tmp_path: Path
) -> None:
    spec = parse_platform(harbor_doc())
    images, _ = stack_inventory(spec, tmp_path)
    for i in images:
        if i.key != "harbor-core":
            (bootstrap_registry if i.bootstrap else fake_registry).add(i.repository, i.tag)
    with pytest.raises(RegistryError) as info:
        lock_stack(spec, tmp_path, fake_registry.url, (USER, PASSWORD), bootstrap_url=bootstrap_registry.url)
    message = str(info.value)
    assert message.startswith(f"1 of {len(images)} images could not be resolved")
    port = bootstrap_registry.url.rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}/platform/goharbor/harbor-core:v2.15.1 is not in the registry" in message
    assert "push it to the bootstrap registry at exactly this reference" in message
    assert "privatellm:mirrorTo all or bootstrap" in message and message.endswith("(bootstrap registry)")


def test_lock_takes_bootstrap_credentials_from_the_environment(
    fake_registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A bootstrap registry that requires its own account: PRIVATELLM_BOOTSTRAP_REGISTRY_* (URL, user, password)."""
    spec = parse_platform(harbor_doc())
    images, _ = stack_inventory(spec, tmp_path)
    with serve(FakeRegistry(manifests={}, user="site-reader", password="site-pw")) as bootstrap:
        for i in images:
            (bootstrap if i.bootstrap else fake_registry).add(i.repository, i.tag)
        monkeypatch.setenv("PRIVATELLM_BOOTSTRAP_REGISTRY_URL", bootstrap.url)
        monkeypatch.setenv("PRIVATELLM_BOOTSTRAP_REGISTRY_USERNAME", "site-reader")
        monkeypatch.setenv("PRIVATELLM_BOOTSTRAP_REGISTRY_PASSWORD", "site-pw")
        digests = lock_stack(spec, tmp_path, fake_registry.url, (USER, PASSWORD))
        assert len(digests) == len(images)
        site = "Basic " + base64.b64encode(b"site-reader:site-pw").decode()
        harbor = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert site in bootstrap.authorizations and harbor not in bootstrap.authorizations
        assert site not in fake_registry.authorizations
        monkeypatch.setenv("PRIVATELLM_BOOTSTRAP_REGISTRY_PASSWORD", "wrong")
        with pytest.raises(RegistryError) as info:
            lock_stack(spec, tmp_path, fake_registry.url, (USER, PASSWORD))
    assert "PRIVATELLM_BOOTSTRAP_REGISTRY_USERNAME" in str(info.value) and "wrong" not in str(info.value)


def test_lock_checks_but_does_not_pin_a_driver_tag_the_stack_sets(fake_registry: FakeRegistry, tmp_path: Path) -> None:
    """gpu_operator.driver_version sets the driver's tag, and the operator appends the nodes' OS to it: that image
    must be in the registry, but the lock (which records catalog references) cannot pin it."""
    doc = small_doc(gpu_operator={"driver": "operator", "driver_version": "580.95.05", "node_os": "ubuntu22.04"})
    spec = parse_platform(doc)
    images, _ = stack_inventory(spec, tmp_path)
    [driver] = [i for i in images if i.key == "nvidia-driver"]
    assert driver.upstream == "nvcr.io/nvidia/driver:580.95.05-ubuntu22.04" and not driver.lockable
    for i in images:
        fake_registry.add(i.repository, i.tag)
    digests = lock_stack(spec, tmp_path, fake_registry.url, (USER, PASSWORD))
    assert "nvidia-driver" not in digests and "gpu-operator" in digests
    assert ("HEAD", f"/v2/{driver.repository}/manifests/580.95.05-ubuntu22.04") in fake_registry.requests
    write_lock(lock_path(tmp_path, "bank"), digests)  # a lock of only catalog references is valid


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
    assert len(by_type["docker:index/remoteImage:RemoteImage"]) == len(images) == 31

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


def _mirror_config(doc: dict[str, Any], tmp_path: Path, **extra: Any) -> Any:
    return config_from_mapping(
        "mirror",
        {
            "privatellm:platform": doc,
            "privatellm:mode": "mirror",
            "privatellm:registryUsername": "robot$mirror",
            "privatellm:registryPassword": {"secure": "v1:abc"},
            **extra,
        },
        project_dir=tmp_path,
    )


def _pushed(rec: Recording) -> dict[str, str]:
    return {
        r.name.removeprefix("image-mirror-").removesuffix("-push"): r.inputs["name"]
        for r in rec.resources
        if r.type == "docker:index/registryImage:RegistryImage"
    }


def _exports(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", lambda name, value: exported.__setitem__(name, value))
    return exported


def test_mirror_main_reads_the_stack_and_secure_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(offline, "RecordingMocks", DockerMocks)
    exported = _exports(monkeypatch)
    doc = small_doc()
    rec = run_program(_mirror_config(doc, tmp_path), program=mirror_main)
    images, charts = stack_inventory(parse_platform(doc), tmp_path)
    # The inventory of the render, all of it: vLLM and the PKI's images.
    assert _pushed(rec) == {i.key: i.target for i in images}
    assert set(_pushed(rec)) == {"vllm", *PKI_KEYS}
    [provider] = [r for r in rec.resources if r.type == "pulumi:providers:docker"]
    assert provider.masked["registryAuth"] == "[secret]"
    assert json.loads(provider.inputs["registryAuth"])[0]["password"] == "[secure:privatellm:registryPassword]"
    assert set(exported) == {"mirrored", "charts"}
    assert set(exported["charts"]) == {c.key for c in charts} == {"cert-manager", "trust-manager"}
    assert exported["charts"]["cert-manager"]["installedFrom"] == "oci://quay.io/jetstack/charts/cert-manager"


def test_mirror_pushes_bootstrap_images_to_the_bootstrap_registry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With a managed Harbor, the images pulled before Harbor exists go to the bootstrap registry (with its own
    credentials when given, as a secret), everything else to Harbor."""
    monkeypatch.setattr(offline, "RecordingMocks", DockerMocks)
    exported = _exports(monkeypatch)
    extra = {
        "privatellm:bootstrapRegistryUsername": "site-pusher",
        "privatellm:bootstrapRegistryPassword": {"secure": "v1:def"},
    }
    rec = run_program(_mirror_config(harbor_doc(), tmp_path, **extra), program=mirror_main)
    pushed = _pushed(rec)
    assert set(pushed) == {"vllm", *PKI_KEYS, *HARBOR_KEYS}
    assert pushed["vllm"] == f"{HOST}/platform/vllm/vllm-openai:{IMAGES['vllm'].tag}"
    assert pushed["harbor-core"] == f"{BOOTSTRAP}/platform/goharbor/harbor-core:v2.15.1"
    assert pushed["trust-manager"] == f"{BOOTSTRAP}/platform/jetstack/trust-manager:{IMAGES['trust-manager'].tag}"
    [provider] = [r for r in rec.resources if r.type == "pulumi:providers:docker"]
    assert provider.masked["registryAuth"] == "[secret]"
    auths = json.loads(provider.inputs["registryAuth"])
    assert auths == [
        {"address": HOST, "username": "robot$mirror", "password": "[secure:privatellm:registryPassword]"},
        {"address": BOOTSTRAP, "username": "site-pusher", "password": "[secure:privatellm:bootstrapRegistryPassword]"},
    ]
    assert "notMirrored" not in exported
    assert exported["charts"]["harbor"]["installedFrom"] == f"oci://{BOOTSTRAP}/charts/harbor"


def test_mirror_to_bootstrap_only_for_a_first_deploy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Before Harbor exists only the bootstrap registry can take images: mirrorTo=bootstrap pushes those, needs no
    Harbor credentials, and without bootstrap credentials uses the bastion's docker login (address only)."""
    monkeypatch.setattr(offline, "RecordingMocks", DockerMocks)
    exported = _exports(monkeypatch)
    config = config_from_mapping(
        "mirror",
        {"privatellm:platform": harbor_doc(), "privatellm:mode": "mirror", "privatellm:mirrorTo": "bootstrap"},
        project_dir=tmp_path,
    )
    rec = run_program(config, program=mirror_main)
    pushed = _pushed(rec)
    assert set(pushed) == {*PKI_KEYS, *HARBOR_KEYS}
    assert all(ref.startswith(f"{BOOTSTRAP}/platform/") for ref in pushed.values())
    [provider] = [r for r in rec.resources if r.type == "pulumi:providers:docker"]
    assert json.loads(provider.inputs["registryAuth"]) == [{"address": BOOTSTRAP}]
    assert exported["notMirrored"] == {"vllm": f"{HOST}/platform/vllm/vllm-openai:{IMAGES['vllm'].tag}"}


def test_mirror_to_registry_only_leaves_the_bootstrap_registry_to_the_site(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(offline, "RecordingMocks", DockerMocks)
    exported = _exports(monkeypatch)
    rec = run_program(
        _mirror_config(harbor_doc(), tmp_path, **{"privatellm:mirrorTo": "registry"}), program=mirror_main
    )
    assert set(_pushed(rec)) == {"vllm"}
    [provider] = [r for r in rec.resources if r.type == "pulumi:providers:docker"]
    assert [a["address"] for a in json.loads(provider.inputs["registryAuth"])] == [HOST]
    assert set(exported["notMirrored"]) == {*PKI_KEYS, *HARBOR_KEYS}
    assert exported["notMirrored"]["harbor-db"] == f"{BOOTSTRAP}/platform/goharbor/harbor-db:v2.15.1"


def test_mirror_to_bootstrap_without_a_bootstrap_registry_fails(tmp_path: Path) -> None:
    config = config_from_mapping(
        "mirror",
        {"privatellm:platform": small_doc(), "privatellm:mode": "mirror", "privatellm:mirrorTo": "bootstrap"},
        project_dir=tmp_path,
    )
    with pytest.raises(offline.OfflineError, match="pulls nothing from a bootstrap registry"):
        run_program(config, program=mirror_main)


def test_select_images_rejects_an_unknown_target() -> None:
    entry = ImageEntry("vllm", "docker.io/vllm/vllm-openai:v1", f"{HOST}/platform/vllm/vllm-openai:v1")
    assert select_images([entry], "all") == ([entry], [])
    with pytest.raises(ValueError, match="privatellm:mirrorTo='everything' must be one of all, bootstrap, registry"):
        select_images([entry], "everything")


def test_mirror_refuses_duplicate_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = ImageEntry("vllm", "docker.io/vllm/vllm-openai:v1", f"{HOST}/platform/vllm/vllm-openai:v1")
    with pytest.raises(offline.OfflineError, match="catalog keys listed twice: vllm"):
        run_mirror(monkeypatch, [entry, entry])


def test_operator_driver_needs_the_nodes_os(tmp_path: Path) -> None:
    doc = small_doc(gpu_operator={"driver": "operator", "driver_version": "580.95.05"})
    with pytest.raises(InventoryError, match=r"gpu_operator.node_os is not set: with driver: operator"):
        stack_inventory(parse_platform(doc), tmp_path)


def test_cli_lock_takes_the_bootstrap_registry_url(
    fake_registry: FakeRegistry, bootstrap_registry: FakeRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml
    from typer.testing import CliRunner

    from infra.cli import app
    from tests.conftest import ROOT

    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.t.yaml").write_text(
        yaml.safe_dump({"config": {"privatellm:platform": harbor_doc()}})
    )
    images, _ = stack_inventory(parse_platform(harbor_doc()), tmp_path)
    for i in images:
        (bootstrap_registry if i.bootstrap else fake_registry).add(i.repository, i.tag)
    monkeypatch.setenv("PRIVATELLM_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("PRIVATELLM_REGISTRY_PASSWORD", PASSWORD)
    monkeypatch.delenv("PRIVATELLM_BOOTSTRAP_REGISTRY_URL", raising=False)
    args = ["images", "lock", "--stack", "t", "--project-dir", str(tmp_path), "--registry-url", fake_registry.url]
    result = CliRunner().invoke(app, [*args, "--bootstrap-registry-url", bootstrap_registry.url])
    assert result.exit_code == 0, result.output
    assert f"locked {len(images)} images" in result.output
    assert any("/manifests/" in path for _, path in bootstrap_registry.requests)
