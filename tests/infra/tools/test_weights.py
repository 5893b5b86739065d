"""`infra.tools.weights`: the manifest against hashlib and the real init-container verifier; uploads against moto."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from rich.console import Console

from components.assets.verify_weights import parse_manifest
from infra.config import parse_platform
from infra.tools import weights
from infra.tools.weights import (
    MANIFEST_NAME,
    WeightsError,
    compute_manifest,
    rich_progress,
    s3_client_for,
    s3_target,
    upload_model,
    verify_dir,
    verify_remote,
)
from tests.conftest import ROOT, fake_aws_environment

VERIFIER = ROOT / "components" / "assets" / "verify_weights.py"
BUCKET = "models"
PREFIX = "llama-8b"
MiB = 1024 * 1024


def make_model(root: Path) -> Path:
    files = {
        "config.json": b'{"architectures": ["LlamaForCausalLM"]}\n',
        "model-00001-of-00002.safetensors": b"\x01" * 3000 + b"shard-one",
        "model-00002-of-00002.safetensors": b"\x02" * 2000 + b"shard-two",
        "tokenizer/tokenizer.json": b'{"version": "1.0"}',
        "original/consolidated.00.pth": b"pth-bytes",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_model(tmp_path / "llama")


# --------------------------------------------------------------------------------------------------------------
# Manifest and local verification
# --------------------------------------------------------------------------------------------------------------


def test_manifest_matches_hashlib_and_parses(model_dir: Path) -> None:
    (model_dir / MANIFEST_NAME).write_text("stale manifest from a `> DIR/sha256sums` redirect\n")
    text = compute_manifest(model_dir)
    expected = sorted(
        p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
    )
    assert text == "".join(f"{sha(model_dir / rel)}  {rel}\n" for rel in expected)
    parsed = parse_manifest(text)
    assert list(parsed) == expected
    assert MANIFEST_NAME not in parsed
    assert parsed["tokenizer/tokenizer.json"] == sha(model_dir / "tokenizer" / "tokenizer.json")


def test_manifest_streams_in_chunks_and_reports_progress(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "CHUNK", 1024)
    calls: list[tuple[str, int, int]] = []
    text = compute_manifest(model_dir, progress=lambda rel, n, size: calls.append((rel, n, size)))
    shard = "model-00001-of-00002.safetensors"
    shard_calls = [c for c in calls if c[0] == shard]
    assert [n for _, n, _ in shard_calls] == [1024, 1024, 3009 - 2048]  # 3009 bytes read 1 KiB at a time
    assert {size for _, _, size in shard_calls} == {3009}
    assert sum(n for _, n, _ in calls) == sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    assert parse_manifest(text)[shard] == sha(model_dir / shard)


def test_rich_progress_draws_on_its_console(model_dir: Path) -> None:
    out = io.StringIO()
    with rich_progress(Console(file=out, force_terminal=False, width=120)) as progress:
        text = compute_manifest(model_dir, progress=progress)
    assert parse_manifest(text)
    assert "model-00001-of-00002.safetensors" in out.getvalue()


def test_manifest_excludes_and_rejects(tmp_path: Path, model_dir: Path) -> None:
    out = model_dir / "approved.sha256"
    out.write_text("x")
    assert "approved.sha256" not in parse_manifest(compute_manifest(model_dir, exclude=[out]))
    assert "approved.sha256" in parse_manifest(compute_manifest(model_dir))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="holds no files"):
        compute_manifest(empty)
    with pytest.raises(WeightsError, match="is not a directory"):
        compute_manifest(tmp_path / "absent")
    (model_dir / "bad\nname.bin").write_bytes(b"x")
    with pytest.raises(WeightsError, match="manifest cannot hold"):
        compute_manifest(model_dir)


def test_verify_dir_passes_then_detects_tamper_missing_unlisted(model_dir: Path) -> None:
    text = compute_manifest(model_dir)
    assert verify_dir(model_dir, text) == []

    shard = model_dir / "model-00002-of-00002.safetensors"
    listed = parse_manifest(text)["model-00002-of-00002.safetensors"]
    shard.write_bytes(b"\x02" * 2000 + b"shard-TWO")
    (model_dir / "original" / "consolidated.00.pth").unlink()
    (model_dir / "model-00003-of-00002.safetensors").write_bytes(b"smuggled")
    (model_dir / "README.md").write_text("not a weight file: allowed unlisted")

    assert verify_dir(model_dir, text) == [
        "INTEGRITY FAILURE: model-00002-of-00002.safetensors sha256 "
        f"{sha(shard)} does not match the manifest ({listed})",
        "INTEGRITY FAILURE: original/consolidated.00.pth is listed in the manifest but missing",
        "INTEGRITY FAILURE: weight file model-00003-of-00002.safetensors is not listed in the manifest",
    ]


def test_verify_dir_prints_nothing_and_rejects_bad_manifest(model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert verify_dir(model_dir, compute_manifest(model_dir)) == []
    assert capsys.readouterr().out == ""
    with pytest.raises(WeightsError, match=r"not a sha256sum manifest.*private-llm models manifest"):
        verify_dir(model_dir, "deadbeef  config.json\n")


def test_manifest_accepted_by_the_real_verifier_script(tmp_path: Path, model_dir: Path) -> None:
    manifest = tmp_path / "sha256sums"
    manifest.write_text(compute_manifest(model_dir))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(VERIFIER), "--manifest", str(manifest), "--root", str(model_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    good = run()
    assert good.returncode == 0, good.stderr
    assert "verified 5 files" in good.stdout
    (model_dir / "config.json").write_text("{}")
    bad = run()
    assert bad.returncode == 1
    assert "INTEGRITY FAILURE: config.json sha256" in bad.stderr


# --------------------------------------------------------------------------------------------------------------
# Upload (moto)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    fake_aws_environment(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def keys(client: Any, prefix: str = PREFIX) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/" if prefix else "")
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def manifest_exists(client: Any) -> bool:
    return f"{PREFIX}/{MANIFEST_NAME}" in keys(client)


def test_upload_puts_every_file_encrypted_and_manifest_last(s3: Any, model_dir: Path, monkeypatch) -> None:
    # upload_file of a small file calls put_object itself: record both, with what called them.
    order: list[tuple[str, str]] = []
    real_upload, real_put = s3.upload_file, s3.put_object

    def upload_file(filename: str, bucket: str, key: str, **kw: Any) -> None:
        order.append(("upload_file", key))
        real_upload(filename, bucket, key, **kw)

    def put_object(**kw: Any) -> Any:
        order.append(("put_object", kw["Key"]))
        return real_put(**kw)

    monkeypatch.setattr(s3, "upload_file", upload_file)
    monkeypatch.setattr(s3, "put_object", put_object)

    result = upload_model(model_dir, BUCKET, PREFIX, s3, sse="AES256")

    text = compute_manifest(model_dir)
    listed = sorted(parse_manifest(text))
    manifest_key = f"{PREFIX}/{MANIFEST_NAME}"
    assert [k for call, k in order if call == "upload_file"] == [f"{PREFIX}/{rel}" for rel in listed]
    assert order[-1] == ("put_object", manifest_key)
    assert [k for _, k in order].count(manifest_key) == 1
    assert keys(s3) == {f"{PREFIX}/{rel}" for rel in listed} | {f"{PREFIX}/{MANIFEST_NAME}"}
    for key in keys(s3):
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "AES256", key
    for rel in listed:
        body = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{rel}")["Body"].read()
        assert body == (model_dir / rel).read_bytes()
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{MANIFEST_NAME}")["Body"].read().decode() == text
    assert result.uploaded == tuple(listed)
    assert result.skipped == ()
    assert result.manifest_written
    assert result.bytes_uploaded == sum((model_dir / rel).stat().st_size for rel in listed)
    assert result.uri == f"s3://{BUCKET}/{PREFIX}"
    # The init container's own check of the uploaded prefix (its S3 store, on our client) passes.
    assert verify_remote(BUCKET, PREFIX, s3) == []


def test_upload_with_kms_key(s3: Any, model_dir: Path) -> None:
    key_arn = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    upload_model(model_dir, BUCKET, PREFIX, s3, sse="aws:kms", kms_key_id=key_arn)
    for key in keys(s3):
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert head["SSEKMSKeyId"] == key_arn, key


def test_upload_uses_multipart_above_threshold(s3: Any, model_dir: Path) -> None:
    big = model_dir / "model-big.safetensors"
    big.write_bytes(b"\x07" * (5 * MiB + 4096))
    upload_model(model_dir, BUCKET, PREFIX, s3, sse="AES256", multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    big_head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/model-big.safetensors")
    assert big_head["ETag"].strip('"').endswith("-2")  # two parts: 5 MiB + 4 KiB
    assert big_head["ContentLength"] == big.stat().st_size
    small_head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/config.json")
    assert "-" not in small_head["ETag"]
    assert verify_remote(BUCKET, PREFIX, s3) == []


def test_failed_file_upload_leaves_no_manifest(s3: Any, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_upload = s3.upload_file
    failing = f"{PREFIX}/model-00002-of-00002.safetensors"

    def upload_file(filename: str, bucket: str, key: str, **kw: Any) -> None:
        if key == failing:
            raise OSError("connection reset by peer")
        real_upload(filename, bucket, key, **kw)

    monkeypatch.setattr(s3, "upload_file", upload_file)
    with pytest.raises(WeightsError) as info:
        upload_model(model_dir, BUCKET, PREFIX, s3, sse="AES256")
    message = str(info.value)
    assert "model-00002-of-00002.safetensors" in message
    assert "connection reset by peer" in message
    assert f"No {MANIFEST_NAME} was written" in message
    uploaded = keys(s3)
    assert f"{PREFIX}/model-00001-of-00002.safetensors" in uploaded  # earlier files went up ...
    assert failing not in uploaded
    assert not manifest_exists(s3)  # ... but the prefix is not marked complete
    assert verify_remote(BUCKET, PREFIX, s3)[0].startswith("INTEGRITY FAILURE: s3://models/llama-8b/sha256sums")

    monkeypatch.setattr(s3, "upload_file", real_upload)
    result = upload_model(model_dir, BUCKET, PREFIX, s3, sse="AES256")  # the rerun completes it
    assert result.manifest_written
    assert verify_remote(BUCKET, PREFIX, s3) == []


def test_size_mismatch_after_upload_leaves_no_manifest(s3: Any, model_dir: Path, monkeypatch) -> None:
    real_head = s3.head_object

    def head_object(**kw: Any) -> dict[str, Any]:
        head = real_head(**kw)
        if kw["Key"].endswith("config.json"):
            head["ContentLength"] -= 1
        return head

    monkeypatch.setattr(s3, "head_object", head_object)
    with pytest.raises(WeightsError, match=r"config.json holds \d+ bytes but .* has \d+; no sha256sums was written"):
        upload_model(model_dir, BUCKET, PREFIX, s3, sse="AES256")
    assert not manifest_exists(s3)


def test_refuses_a_different_existing_manifest(s3: Any, model_dir: Path) -> None:
    upload_model(model_dir, BUCKET, PREFIX, s3, sse="AES256")
    before = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{MANIFEST_NAME}")["Body"].read()
    config_before = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/config.json")["Body"].read()

    (model_dir / "config.json").write_text('{"architectures": ["Other"]}')
    with pytest.raises(WeightsError) as info:
        upload_model(model_dir, BUCKET, PREFIX, s3, sse="AES256")
    message = str(info.value)
    assert f"s3://{BUCKET}/{PREFIX}/{MANIFEST_NAME} already exists" in message
    assert "config.json differs" in message
    assert f"bucket {BUCKET} prefix {PREFIX}" in message
    assert "new prefix" in message
    # Nothing was touched.
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{MANIFEST_NAME}")["Body"].read() == before
    assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/config.json")["Body"].read() == config_before


def test_second_identical_upload_skips_and_repairs(s3: Any, model_dir: Path) -> None:
    first = upload_model(model_dir, BUCKET, PREFIX, s3, sse="AES256")
    second = upload_model(model_dir, BUCKET, PREFIX, s3, sse="AES256")
    assert second.uploaded == ()
    assert second.skipped == first.uploaded
    assert not second.manifest_written

    s3.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/tokenizer/tokenizer.json")
    third = upload_model(model_dir, BUCKET, PREFIX, s3, sse="AES256", manifest_text=first.manifest)
    assert third.uploaded == ("tokenizer/tokenizer.json",)
    assert verify_remote(BUCKET, PREFIX, s3) == []


def test_refuses_stray_weights_and_a_manifest_the_folder_fails(s3: Any, model_dir: Path) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/old-model.safetensors", Body=b"old")
    with pytest.raises(WeightsError, match=r"already holds weight files the manifest does not list \(old-model"):
        upload_model(model_dir, BUCKET, PREFIX, s3, sse="AES256")
    assert keys(s3) == {f"{PREFIX}/old-model.safetensors"}

    text = compute_manifest(model_dir)
    (model_dir / "original" / "consolidated.00.pth").write_bytes(b"changed")
    with pytest.raises(WeightsError, match="does not match the manifest, nothing was uploaded") as info:
        upload_model(model_dir, BUCKET, "other", s3, manifest_text=text, sse="AES256")
    assert "INTEGRITY FAILURE: original/consolidated.00.pth sha256" in str(info.value)
    assert keys(s3, "other") == set()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sse": "none"}, "sse='none' is not supported"),
        ({"sse": "AES256", "kms_key_id": "arn:aws:kms:x"}, "kms_key_id is set but sse='AES256'"),
        ({"prefix": "/"}, "weights would land at the root of bucket models"),
        ({"prefix": "a/../b"}, "without '..'"),
        ({"multipart_chunksize": MiB}, "below the S3 minimum part size"),
    ],
)
def test_upload_rejects_bad_arguments(s3: Any, model_dir: Path, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"bucket": BUCKET, "prefix": PREFIX, "s3_client": s3, **kwargs}
    with pytest.raises(WeightsError, match=match):
        upload_model(model_dir, **args)
    assert keys(s3, "") == set()


# --------------------------------------------------------------------------------------------------------------
# Client from the stack
# --------------------------------------------------------------------------------------------------------------


def spec_with(storage: dict[str, Any] | None) -> Any:
    model: dict[str, Any] = {"name": "llama-8b", "model": "Llama-3.1-8B", "pool": "h100", "max_model_len": 8192}
    if storage is not None:
        model["storage"] = storage
    return parse_platform(
        {
            "node_pools": [{"name": "h100", "gpu": "H100-80GB-SXM", "gpus_per_node": 8, "nodes": 1}],
            "models": [model],
        }
    )


S3_STORAGE = {
    "type": "s3",
    "endpoint": "https://minio.bank.internal:9000",
    "bucket": "models",
    "region": "eu-central-1",
    "access_key_id_secret": "ak",
    "secret_access_key_secret": "sk",
    "egress_cidrs": ["10.30.0.0/24"],
}


def test_s3_client_for_uses_the_model_storage_section() -> None:
    spec = spec_with(S3_STORAGE)
    target = s3_target(spec, "llama-8b")
    assert (target.bucket, target.prefix, target.uri) == ("models", "llama-8b", "s3://models/llama-8b")
    assert s3_target(spec_with({**S3_STORAGE, "prefix": "/weights/llama/"}), "llama-8b").prefix == "weights/llama"

    client = s3_client_for(spec, "llama-8b", access_key="AKIDEXAMPLE", secret_key="wJalrXUtnFEMIEXAMPLEKEY")
    assert client.meta.endpoint_url == "https://minio.bank.internal:9000"
    assert client.meta.region_name == "eu-central-1"
    assert client.meta.config.s3["addressing_style"] == "path"
    credentials = client._request_signer._credentials
    assert (credentials.access_key, credentials.secret_key) == ("AKIDEXAMPLE", "wJalrXUtnFEMIEXAMPLEKEY")


def test_s3_client_for_errors_name_the_fix_and_no_secret() -> None:
    with pytest.raises(WeightsError, match=r"no model named 'qwen' in the stack \(models: llama-8b\)"):
        s3_client_for(spec_with(S3_STORAGE), "qwen")
    with pytest.raises(WeightsError, match=r"models\[0\].storage.type='pvc'.*set storage.type: s3"):
        s3_client_for(spec_with(None), "llama-8b")
    with pytest.raises(WeightsError, match="give both an access key id and a secret access key") as info:
        s3_client_for(spec_with(S3_STORAGE), "llama-8b", secret_key="wJalrXUtnFEMIEXAMPLEKEY")
    assert "wJalrXUtnFEMIEXAMPLEKEY" not in str(info.value)
