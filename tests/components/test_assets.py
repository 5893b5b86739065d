"""The scripts shipped into pods, run with the real interpreter: weight integrity and the mTLS health probe."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from moto import mock_aws

from components import assets

VERIFY = Path(assets.__file__).with_name("verify_weights.py")
PROBE = Path(assets.__file__).with_name("probe.py")


def make_model(root: Path) -> str:
    (root / "sub").mkdir(parents=True)
    files = {"model-00001-of-00002.safetensors": b"a" * 1000, "sub/model-00002-of-00002.safetensors": b"b" * 2000}
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    (root / "config.json").write_text("{}")
    return "".join(f"{hashlib.sha256(d).hexdigest()}  {rel}\n" for rel, d in files.items())


def verify(manifest: Path, root: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(VERIFY), "--manifest", str(manifest), "--root", root], capture_output=True, text=True
    )


def test_matching_weights_pass(tmp_path: Path) -> None:
    manifest = tmp_path / "sha256sums"
    manifest.write_text(make_model(tmp_path / "model"))
    result = verify(manifest, str(tmp_path / "model"))
    assert result.returncode == 0, result.stderr
    assert "verified 2 files" in result.stdout


def test_tampered_weight_stops_the_pod_with_a_clear_line(tmp_path: Path) -> None:
    manifest = tmp_path / "sha256sums"
    manifest.write_text(make_model(tmp_path / "model"))
    (tmp_path / "model" / "sub" / "model-00002-of-00002.safetensors").write_bytes(b"c" * 2000)
    result = verify(manifest, str(tmp_path / "model"))
    assert result.returncode == 1
    assert "INTEGRITY FAILURE: sub/model-00002-of-00002.safetensors sha256" in result.stderr
    assert "the server will not start" in result.stderr


def test_missing_and_unlisted_weights_fail(tmp_path: Path) -> None:
    manifest = tmp_path / "sha256sums"
    manifest.write_text(make_model(tmp_path / "model"))
    (tmp_path / "model" / "model-00001-of-00002.safetensors").unlink()
    (tmp_path / "model" / "extra.bin").write_bytes(b"x")
    result = verify(manifest, str(tmp_path / "model"))
    assert result.returncode == 1
    assert "model-00001-of-00002.safetensors is listed in the manifest but missing" in result.stderr
    assert "weight file extra.bin is not listed in the manifest" in result.stderr


@pytest.mark.parametrize(
    "text",
    ["", "not a manifest\n", f"{'0' * 64}  ../etc/passwd\n", f"{'0' * 64}  a\n{'1' * 64}  a\n"],
    ids=["empty", "garbage", "escape", "duplicate"],
)
def test_bad_manifest_is_a_usage_error(tmp_path: Path, text: str) -> None:
    manifest = tmp_path / "sha256sums"
    manifest.write_text(text)
    (tmp_path / "model").mkdir()
    result = verify(manifest, str(tmp_path / "model"))
    assert result.returncode == 2
    assert "cannot read manifest" in result.stderr


@pytest.fixture
def s3_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    import importlib.util

    spec = importlib.util.spec_from_file_location("verify_weights", VERIFY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with mock_aws():
        yield module


def test_s3_weights_are_streamed_and_verified(
    tmp_path: Path, s3_module: object, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    shard = b"weights" * 1000
    s3.put_object(Bucket="models", Key="llama/model.safetensors", Body=shard)
    s3.put_object(Bucket="models", Key="llama/config.json", Body=b"{}")
    manifest = tmp_path / "sha256sums"
    manifest.write_text(f"{hashlib.sha256(shard).hexdigest()}  model.safetensors\n")
    main = s3_module.main  # type: ignore[attr-defined]
    assert main(["--manifest", str(manifest), "--root", "s3://models/llama"]) == 0
    s3.put_object(Bucket="models", Key="llama/model.safetensors", Body=b"tampered")
    assert main(["--manifest", str(manifest), "--root", "s3://models/llama"]) == 1
    assert "INTEGRITY FAILURE: model.safetensors sha256" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# mTLS probe against a real TLS server that requires client certificates
# ---------------------------------------------------------------------------------------------------------------


def _cert(name: str, issuer_key: ec.EllipticCurvePrivateKey | None, issuer: x509.Name | None, ca: bool, server: bool):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("vllm.llm-inference.svc")]), critical=False
            )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".crt")
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture
def mtls_server(tmp_path: Path) -> Iterator[tuple[int, Path, Path, Path, Path]]:
    ca_key, ca_cert = _cert("platform-ca", None, None, ca=True, server=False)
    _, ca_path = _write(tmp_path / "ca", ca_key, ca_cert)
    s_key, s_cert = _cert("vllm", ca_key, ca_cert.subject, ca=False, server=True)
    s_key_path, s_cert_path = _write(tmp_path / "server", s_key, s_cert)
    c_key, c_cert = _cert("gateway", ca_key, ca_cert.subject, ca=False, server=False)
    c_key_path, c_cert_path = _write(tmp_path / "client", c_key, c_cert)

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Health)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(s_cert_path, s_key_path)
    context.load_verify_locations(ca_path)
    context.verify_mode = ssl.CERT_REQUIRED
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], c_cert_path, c_key_path, ca_path, tmp_path
    finally:
        httpd.shutdown()


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PROBE), *args], capture_output=True, text=True, timeout=30)


def test_probe_with_client_certificate_passes(mtls_server: tuple[int, Path, Path, Path, Path]) -> None:
    port, cert, key, ca, _ = mtls_server
    result = probe("--port", str(port), "--cert", str(cert), "--key", str(key), "--ca", str(ca))
    assert result.returncode == 0, result.stderr


def test_probe_fails_without_certificate_or_on_wrong_path(mtls_server: tuple[int, Path, Path, Path, Path]) -> None:
    port, cert, key, ca, _ = mtls_server
    assert probe("--port", str(port)).returncode == 1
    wrong = probe("--port", str(port), "--path", "/nope", "--cert", str(cert), "--key", str(key), "--ca", str(ca))
    assert wrong.returncode == 1 and "HTTP 404" in wrong.stderr


def test_tls_forwarder_lets_a_plain_client_reach_an_mtls_server(
    mtls_server: tuple[int, Path, Path, Path, Path],
) -> None:
    import socket
    import time
    import urllib.request

    port, cert, key, ca, _ = mtls_server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = s.getsockname()[1]
    forward = Path(assets.__file__).with_name("tls_forward.py")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(forward),
            "--listen",
            str(listen),
            "--upstream",
            f"127.0.0.1:{port}",
            "--server-name",
            "vllm.llm-inference.svc",
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--ca",
            str(ca),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{listen}/health", timeout=2) as response:
                    status = response.status
            except OSError:
                time.sleep(0.1)
        assert status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=5)
