"""Index lifecycle documents, and the ILM Job's script run with the real shell and curl against a fake
Elasticsearch on 127.0.0.1."""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components import assets
from infra.observability.ilm import ilm_policy, lifecycle_documents

SCRIPT = Path(assets.__file__).with_name("apply_ilm.sh")


def test_policy_deletes_after_retention() -> None:
    policy = ilm_policy(365)["policy"]
    assert policy["phases"]["delete"] == {"min_age": "365d", "actions": {"delete": {}}}
    with pytest.raises(ValueError, match="retention_days=0"):
        ilm_policy(0)


def test_documents_pair_templates_with_policies() -> None:
    docs = {name: json.loads(text) for name, text in lifecycle_documents(365, 30, 3).items()}
    assert docs["privatellm-audit.policy.json"]["policy"]["phases"]["delete"]["min_age"] == "365d"
    assert docs["privatellm-app.policy.json"]["policy"]["phases"]["delete"]["min_age"] == "30d"
    template = docs["privatellm-audit.template.json"]
    assert template["index_patterns"] == ["privatellm-audit-*"]
    assert template["template"]["settings"]["index.lifecycle.name"] == "privatellm-audit"
    assert template["template"]["settings"]["index.number_of_replicas"] == 1
    single = json.loads(lifecycle_documents(30, 7, 1)["privatellm-app.template.json"])
    assert single["template"]["settings"]["index.number_of_replicas"] == 0


class FakeElasticsearch(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]] = []
    fail_path: str | None = None
    password = "s3cret"

    def do_PUT(self) -> None:
        auth = self.headers.get("Authorization", "")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if auth != "Basic " + base64.b64encode(f"elastic:{self.password}".encode()).decode():
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error":"unauthorized"}')
            return
        if self.path == self.fail_path:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"error":"bad policy"}')
            return
        type(self).received.append((self.path, body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"acknowledged":true}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def elasticsearch() -> Iterator[str]:
    FakeElasticsearch.received = []
    FakeElasticsearch.fail_path = None
    FakeElasticsearch.password = "s3cret"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeElasticsearch)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def apply(url: str, folder: Path, password: str = "s3cret") -> subprocess.CompletedProcess[str]:
    # The Secret is mounted as a file (a Secret volume's file has no trailing newline; a hand-made one may).
    secret = folder.parent / f"{folder.name}-password"
    secret.write_text(password + "\n")
    env = {
        "ES_URL": url,
        "ES_USER": "elastic",
        "ES_PASSWORD_FILE": str(secret),
        "POLICY_DIR": str(folder),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def write_documents(folder: Path) -> None:
    for name, text in lifecycle_documents(365, 30, 3).items():
        (folder / name).write_text(text)


def test_script_applies_policies_then_templates(elasticsearch: str, tmp_path: Path) -> None:
    write_documents(tmp_path)
    result = apply(elasticsearch, tmp_path)
    assert result.returncode == 0, result.stderr
    paths = [p for p, _ in FakeElasticsearch.received]
    assert paths == [
        "/_ilm/policy/privatellm-app",
        "/_ilm/policy/privatellm-audit",
        "/_index_template/privatellm-app",
        "/_index_template/privatellm-audit",
    ]
    assert FakeElasticsearch.received[1][1]["policy"]["phases"]["delete"]["min_age"] == "365d"
    # Idempotent: running again gives the same requests and still succeeds.
    assert apply(elasticsearch, tmp_path).returncode == 0


def test_script_fails_loudly(elasticsearch: str, tmp_path: Path) -> None:
    write_documents(tmp_path)
    wrong = apply(elasticsearch, tmp_path, password="wrong")
    assert wrong.returncode == 1 and "FAILED /_ilm/policy/privatellm-app: HTTP 401" in wrong.stderr
    FakeElasticsearch.fail_path = "/_index_template/privatellm-app"
    bad = apply(elasticsearch, tmp_path)
    assert bad.returncode == 1 and "HTTP 400" in bad.stderr and "bad policy" in bad.stderr


def test_password_with_quotes_and_backslashes_reaches_elasticsearch_intact(elasticsearch: str, tmp_path: Path) -> None:
    write_documents(tmp_path)
    FakeElasticsearch.password = 'a"b\\c d'
    result = apply(elasticsearch, tmp_path, password='a"b\\c d')
    assert result.returncode == 0, result.stderr
    assert len(FakeElasticsearch.received) == 4


def test_script_refuses_a_missing_password_file(elasticsearch: str, tmp_path: Path) -> None:
    write_documents(tmp_path)
    env = {
        "ES_URL": elasticsearch,
        "ES_USER": "elastic",
        "ES_PASSWORD_FILE": str(tmp_path / "absent"),
        "POLICY_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "cannot read ES_PASSWORD_FILE" in result.stderr
    assert FakeElasticsearch.received == []
