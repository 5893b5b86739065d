"""Model weights on the deploy host: the `sha256sum` manifest, a local check, and an upload to S3-compatible storage.

The manifest is exactly what the init container (`components/assets/verify_weights.py`) checks before vLLM starts:
one `<sha256>  <path relative to the model root>` line per file, sorted. The local check reuses that script's
`parse_manifest`, `LocalStore` and `verify`, so a folder that passes here passes there, with the same
`INTEGRITY FAILURE: ...` lines.

`upload_model` puts every listed file under `s3://bucket/prefix/` with server-side encryption (multipart for large
files) and writes `prefix/sha256sums` last, only after every file is up and has the expected size: a prefix without
`sha256sums` is an incomplete upload, which the init container refuses. An existing, different `sha256sums` is never
overwritten; an identical one makes the upload a resumable no-op.

No function here prints. Credentials are passed to boto3 and never formatted into a message.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from components.assets import verify_weights
from components.assets.verify_weights import WEIGHT_SUFFIXES, LocalStore, S3Store, parse_manifest, sha256_stream

if TYPE_CHECKING:
    from rich.console import Console

    from infra.config import PlatformSpec

MANIFEST_NAME = "sha256sums"
MiB = 1024 * 1024
CHUNK = verify_weights.CHUNK  # bytes read at a time while hashing; a file is never read whole
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_MULTIPART_CHUNKSIZE = 64 * MiB
MIN_PART = 5 * MiB  # S3's smallest part but the last
SSE_MODES = ("aws:kms", "AES256")

Progress = Callable[[str, int, int], None]
"""Called as `progress(relative_path, bytes_just_processed, file_size)`, possibly from boto3's transfer threads."""

SseMode = Literal["aws:kms", "AES256"]


class WeightsError(Exception):
    """A manifest, model folder or upload that cannot be used; the message names what is wrong and the fix."""


@dataclass(frozen=True)
class UploadResult:
    bucket: str
    prefix: str
    manifest: str
    uploaded: tuple[str, ...]
    """Files put in this run."""
    skipped: tuple[str, ...]
    """Files already present with this manifest and the right size (an identical earlier upload)."""
    bytes_uploaded: int
    manifest_written: bool
    """False when the identical manifest was already there."""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}/{MANIFEST_NAME}"


@dataclass(frozen=True)
class S3Target:
    """Where one model's weights live, from its `storage` section (type: s3)."""

    model: str
    bucket: str
    prefix: str
    endpoint: str | None
    region: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


# --------------------------------------------------------------------------------------------------------------
# Manifest and local verification
# --------------------------------------------------------------------------------------------------------------


def _check_dir(model_dir: Path) -> Path:
    if not model_dir.is_dir():
        raise WeightsError(
            f"{model_dir} is not a directory; pass the folder holding the model's files (config.json, *.safetensors)"
        )
    return model_dir


def _read_chunks(path: Path, rel: str, progress: Progress | None) -> Iterator[bytes]:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                if progress is not None:
                    progress(rel, len(chunk), size)
                yield chunk
    except OSError as exc:
        raise WeightsError(
            f"cannot read {path}: {exc.strerror or exc}; fix the file's permissions or remove it from the folder"
        ) from None


def _digest(path: Path, rel: str, progress: Progress | None) -> str:
    return sha256_stream(_read_chunks(path, rel, progress))


def _check_rel(rel: str, model_dir: Path) -> None:
    # parse_manifest strips a path and has no `sha256sum` escaping: such names would not round-trip.
    if "\n" in rel or "\r" in rel or "\\" in rel or rel != rel.strip():
        raise WeightsError(
            f"{model_dir / rel!r} has a name the manifest cannot hold (a newline, backslash or leading/trailing "
            "space); rename it"
        )


def _where(path: Path) -> Path:
    """A path with its folder resolved but not its last part (a symlinked file is still itself)."""
    return path.parent.resolve() / path.name


def manifest_files(model_dir: Path, exclude: Iterable[Path] = ()) -> list[str]:
    """Relative POSIX paths of every file under `model_dir`, sorted, as the verifier's `LocalStore` lists them,
    without a top-level `sha256sums` and the `exclude` paths."""
    root = _check_dir(Path(model_dir))
    skipped = {_where(root / MANIFEST_NAME), *(_where(Path(p)) for p in exclude)}
    files = []
    for rel in sorted(LocalStore(str(root)).files()):
        if _where(root / rel) in skipped:
            continue
        _check_rel(rel, root)
        files.append(rel)
    return files


def compute_manifest(model_dir: Path, progress: Progress | None = None, exclude: Iterable[Path] = ()) -> str:
    """The `sha256sum`-format manifest of every file under `model_dir`: sorted relative POSIX paths, two spaces.

    A top-level `sha256sums` (the manifest itself) and the `exclude` paths are left out. Files are streamed in
    `CHUNK`-sized reads."""
    root = Path(model_dir)
    files = manifest_files(root, exclude)
    if not files:
        raise WeightsError(f"{root} holds no files; download the model's weights into it first")
    lines = [f"{_digest(root / rel, rel, progress)}  {rel}\n" for rel in files]
    text = "".join(lines)
    parse_manifest(text)  # what we write, the init container must read
    return text


def _parse(manifest_text: str, what: str = "the manifest") -> dict[str, str]:
    try:
        return parse_manifest(manifest_text)
    except ValueError as exc:
        raise WeightsError(
            f"{what} is not a sha256sum manifest: {exc}; regenerate it with `private-llm models manifest DIR > FILE`"
        ) from None


class _ProgressLocalStore(LocalStore):
    """The verifier's LocalStore, hashing through our chunked reader (progress, clear errors)."""

    def __init__(self, root: Path, progress: Progress | None) -> None:
        super().__init__(str(root))
        self._path = root
        self._progress = progress

    def digest(self, rel: str) -> str:
        return _digest(self._path / rel, rel, self._progress)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # verify_weights.verify prints an "ok <file>" line per match for the init container's log; keep them out.
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def verify_dir(model_dir: Path, manifest_text: str, progress: Progress | None = None) -> list[str]:
    """Problems of `model_dir` against the manifest, worded as the init container words them: a listed file missing
    or with another sha256, or a weight file (.safetensors, .bin, .pt, .pth, .gguf) the manifest does not list.
    An empty list means the init container will accept this folder."""
    root = _check_dir(Path(model_dir))
    manifest = _parse(manifest_text)
    with _quiet():
        return verify_weights.verify(manifest, _ProgressLocalStore(root, progress))


# --------------------------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------------------------


def _is_aws_endpoint(endpoint: str | None) -> bool:
    if not endpoint:
        return True
    host = (urlparse(endpoint).hostname or "").lower()
    return host == "amazonaws.com" or host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def s3_target(spec: PlatformSpec, model_name: str) -> S3Target:
    """Bucket, prefix (default: the model name, as the vLLM deployment reads it), endpoint and region of a model."""
    names = [m.name for m in spec.models]
    if model_name not in names:
        known = ", ".join(names) or "none"
        raise WeightsError(f"no model named {model_name!r} in the stack (models: {known}); pass one of them")
    index = names.index(model_name)
    storage = spec.models[index].storage
    if storage.type != "s3" or not storage.bucket:
        raise WeightsError(
            f"models[{index}].storage.type={storage.type!r} for model {model_name!r}: weights are uploaded only to "
            "S3-compatible storage; set storage.type: s3 with endpoint and bucket, or copy the files onto the "
            "volume yourself"
        )
    prefix = (storage.prefix or model_name).strip("/")
    return S3Target(model_name, storage.bucket, prefix, storage.endpoint, storage.region)


def s3_client_for(
    spec: PlatformSpec,
    model_name: str,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
) -> Any:
    """A boto3 S3 client for the model's store (its endpoint and region). With no keys, boto3's default chain
    (environment, profile, instance role) is used. Non-AWS endpoints (MinIO, Ceph) get path-style addressing."""
    import boto3
    from botocore.config import Config

    target = s3_target(spec, model_name)
    if bool(access_key) != bool(secret_key):
        raise WeightsError(
            "give both an access key id and a secret access key (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or "
            "neither, to use the default credential chain"
        )
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "auto" if _is_aws_endpoint(target.endpoint) else "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=target.endpoint or None,
        region_name=target.region,
        aws_access_key_id=access_key or None,
        aws_secret_access_key=secret_key or None,
        aws_session_token=session_token or None,
        config=config,
    )


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code"))
    return None


def _access_fix(bucket: str, prefix: str) -> str:
    return (
        f"check the credentials and that they allow s3:ListBucket on {bucket} and s3:GetObject, s3:PutObject on "
        f"{bucket}/{prefix}/*"
    )


def _get_manifest(s3_client: Any, bucket: str, prefix: str) -> str | None:
    key = f"{prefix}/{MANIFEST_NAME}"
    try:
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        if _error_code(exc) == "NoSuchBucket":
            raise WeightsError(
                f"bucket {bucket} does not exist; create it (encrypted, versioned) or correct storage.bucket"
            ) from None
        raise WeightsError(f"cannot read s3://{bucket}/{key}: {exc}; {_access_fix(bucket, prefix)}") from None
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        return "\0"  # not a manifest; _parse reports it


def _list_objects(s3_client: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Relative key -> size of every object under `prefix/`."""
    found: dict[str, int] = {}
    try:
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            for item in page.get("Contents", []):
                rel = item["Key"][len(prefix) + 1 :]
                if rel and not rel.endswith("/"):
                    found[rel] = int(item["Size"])
    except Exception as exc:
        raise WeightsError(f"cannot list s3://{bucket}/{prefix}/: {exc}; {_access_fix(bucket, prefix)}") from None
    return found


def _differences(old: dict[str, str], new: dict[str, str], limit: int = 5) -> str:
    changes = [f"{rel} differs" for rel in sorted(old.keys() & new.keys()) if old[rel] != new[rel]]
    changes += [f"{rel} is new" for rel in sorted(new.keys() - old.keys())]
    changes += [f"{rel} is gone" for rel in sorted(old.keys() - new.keys())]
    more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
    return ", ".join(changes[:limit]) + more


class _ClientS3Store(S3Store):
    """The verifier's S3Store on a client we were given (the script builds its own from the environment)."""

    def __init__(self, s3_client: Any, bucket: str, prefix: str) -> None:  # no super(): it would build a client
        self.client = s3_client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._files: list[str] | None = None

    def files(self) -> list[str]:
        if self._files is None:  # the script's exists() lists the prefix per file; list once
            self._files = super().files()
        return self._files


def verify_remote(bucket: str, prefix: str, s3_client: Any, manifest_text: str | None = None) -> list[str]:
    """The init container's check of `s3://bucket/prefix` (downloads and hashes every listed object) against
    `manifest_text`, or against the `sha256sums` stored under the prefix when none is given."""
    prefix = prefix.strip("/")
    if manifest_text is None:
        manifest_text = _get_manifest(s3_client, bucket, prefix)
        if manifest_text is None:
            return [
                f"INTEGRITY FAILURE: s3://{bucket}/{prefix}/{MANIFEST_NAME} does not exist: the upload is "
                "incomplete or never ran"
            ]
    manifest = _parse(manifest_text)
    with _quiet():
        return verify_weights.verify(manifest, _ClientS3Store(s3_client, bucket, prefix))


def _check_prefix(bucket: str, prefix: str) -> str:
    clean = prefix.strip("/")
    if not bucket:
        raise WeightsError("bucket is empty; set models[].storage.bucket")
    if not clean:
        raise WeightsError(
            f"prefix {prefix!r} is empty: the weights would land at the root of bucket {bucket}; give a prefix "
            "such as the model name"
        )
    if ".." in clean.split("/") or "//" in clean:
        raise WeightsError(f"prefix {prefix!r} must be a plain key prefix without '..' or empty segments")
    return clean


def upload_model(
    model_dir: Path,
    bucket: str,
    prefix: str,
    s3_client: Any,
    manifest_text: str | None = None,
    sse: SseMode = "aws:kms",
    kms_key_id: str | None = None,
    progress: Progress | None = None,
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
    verify_sizes: bool = True,
) -> UploadResult:
    """Upload every file the manifest lists to `s3://bucket/prefix/<path>`, then the manifest as
    `prefix/sha256sums`.

    - `manifest_text=None`: the manifest is computed from the folder; a given manifest is first checked against the
      folder (`verify_dir`) and nothing is uploaded on any problem.
    - Every object is written with server-side encryption `sse` (`aws:kms` with `kms_key_id` or the bucket's key,
      or `AES256`); files from `multipart_threshold` bytes up go in `multipart_chunksize` parts.
    - A different `sha256sums` under the prefix, or a weight object the manifest does not list, is refused before
      anything is written. The identical manifest makes the run resumable: files already there with the right size
      are skipped and the manifest is left as is.
    - `sha256sums` is written last, only when every file is up (and, with `verify_sizes`, has its local size);
      on any failure it is not written, so the init container refuses the incomplete prefix.
    """
    from boto3.s3.transfer import TransferConfig

    if sse not in SSE_MODES:
        raise WeightsError(f"sse={sse!r} is not supported; use 'aws:kms' (KMS key) or 'AES256' (store-managed key)")
    if kms_key_id and sse != "aws:kms":
        raise WeightsError(f"kms_key_id is set but sse={sse!r}; use sse='aws:kms' with a KMS key, or drop the key id")
    if multipart_chunksize < MIN_PART:
        raise WeightsError(
            f"multipart_chunksize={multipart_chunksize} is below the S3 minimum part size of {MIN_PART} bytes (5 MiB)"
        )
    prefix = _check_prefix(bucket, prefix)
    root = _check_dir(Path(model_dir))
    where = f"s3://{bucket}/{prefix}"

    if manifest_text is None:
        manifest_text = compute_manifest(root, progress)
        manifest = parse_manifest(manifest_text)
    else:
        manifest = _parse(manifest_text)
        problems = verify_dir(root, manifest_text, progress)
        if problems:
            raise WeightsError(
                f"{root} does not match the manifest, nothing was uploaded to {where}:\n"
                + "\n".join(f"  {p}" for p in problems)
                + "\nfix the folder (download the files again) or regenerate the manifest with "
                "`private-llm models manifest DIR > FILE`"
            )
    sizes = {rel: (root / rel).stat().st_size for rel in manifest}

    existing_text = _get_manifest(s3_client, bucket, prefix)
    same = False
    if existing_text is not None:
        existing = _parse(existing_text, f"the existing {where}/{MANIFEST_NAME}")
        if existing != manifest:
            raise WeightsError(
                f"{where}/{MANIFEST_NAME} already exists and lists other weights ({_differences(existing, manifest)}); "
                f"refusing to overwrite bucket {bucket} prefix {prefix}. Upload to a new prefix (for example "
                f"{prefix}-v2, and point models[].storage.prefix at it), or delete the old objects first if you mean "
                "to replace this model"
            )
        same = True

    remote = _list_objects(s3_client, bucket, prefix)
    strays = sorted(rel for rel in remote if rel.endswith(WEIGHT_SUFFIXES) and rel not in manifest)
    if strays:
        shown = ", ".join(strays[:5]) + (f" and {len(strays) - 5} more" if len(strays) > 5 else "")
        raise WeightsError(
            f"{where}/ already holds weight files the manifest does not list ({shown}); the init container would "
            "refuse them. Delete them or upload to a new prefix"
        )

    extra: dict[str, str] = {"ServerSideEncryption": sse}
    if kms_key_id:
        extra["SSEKMSKeyId"] = kms_key_id
    config = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize)
    uploaded: list[str] = []
    skipped: list[str] = []
    sent = 0
    for rel in sorted(manifest):
        if same and remote.get(rel) == sizes[rel]:
            skipped.append(rel)
            continue
        key = f"{prefix}/{rel}"
        callback = None
        if progress is not None:
            callback = _callback(progress, rel, sizes[rel])
        try:
            s3_client.upload_file(str(root / rel), bucket, key, ExtraArgs=extra, Config=config, Callback=callback)
        except Exception as exc:
            raise WeightsError(
                f"uploading {rel} to s3://{bucket}/{key} failed: {exc}. No {MANIFEST_NAME} was written, so the "
                f"init container refuses {where} until the upload completes; fix the cause "
                f"({_access_fix(bucket, prefix)}; with sse='aws:kms' the store needs a KMS key, else use AES256) "
                "and run the same upload again"
            ) from None
        uploaded.append(rel)
        sent += sizes[rel]

    if verify_sizes:
        for rel in uploaded:
            key = f"{prefix}/{rel}"
            try:
                size = int(s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"])
            except Exception as exc:
                raise WeightsError(
                    f"cannot read back s3://{bucket}/{key} after uploading it: {exc}; no {MANIFEST_NAME} was written; "
                    "run the same upload again"
                ) from None
            if size != sizes[rel]:
                raise WeightsError(
                    f"s3://{bucket}/{key} holds {size} bytes but {root / rel} has {sizes[rel]}; no {MANIFEST_NAME} "
                    "was written; check that nothing else writes under this prefix and run the same upload again"
                )

    written = False
    if not same:
        # Re-read just before writing: another upload may have finished meanwhile.
        now = _get_manifest(s3_client, bucket, prefix)
        if now is not None and _parse(now, f"the existing {where}/{MANIFEST_NAME}") != manifest:
            raise WeightsError(
                f"{where}/{MANIFEST_NAME} was written by someone else during this upload and lists other weights; "
                f"the objects under {where}/ are now mixed: delete them and upload again, or use a new prefix"
            )
        if now is None:
            try:
                s3_client.put_object(
                    Bucket=bucket,
                    Key=f"{prefix}/{MANIFEST_NAME}",
                    Body=manifest_text.encode("utf-8"),
                    ContentType="text/plain; charset=utf-8",
                    **extra,
                )
            except Exception as exc:
                raise WeightsError(
                    f"writing {where}/{MANIFEST_NAME} failed: {exc}; every file is up, run the same upload again"
                ) from None
            written = True
    return UploadResult(bucket, prefix, manifest_text, tuple(uploaded), tuple(skipped), sent, written)


def _callback(progress: Progress, rel: str, size: int) -> Callable[[int], None]:
    def report(amount: int) -> None:
        progress(rel, amount, size)

    return report


# --------------------------------------------------------------------------------------------------------------
# Progress display (for the CLI)
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def rich_progress(console: Console | None = None, description: str = "") -> Iterator[Progress]:
    """A `Progress` callback drawing one bar per file on stderr (stdout stays free for `manifest DIR > FILE`)."""
    from rich import progress as bars_
    from rich.console import Console

    bars = bars_.Progress(
        bars_.TextColumn("{task.description}"),
        bars_.BarColumn(),
        bars_.DownloadColumn(),
        bars_.TransferSpeedColumn(),
        bars_.TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )
    tasks: dict[str, Any] = {}
    lock = threading.Lock()

    def report(rel: str, amount: int, size: int) -> None:
        with lock:
            task = tasks.get(rel)
            if task is None:
                task = tasks[rel] = bars.add_task(f"{description}{rel}".strip(), total=size)
        bars.advance(task, amount)

    with bars:
        yield report


__all__ = [
    "CHUNK",
    "DEFAULT_MULTIPART_CHUNKSIZE",
    "DEFAULT_MULTIPART_THRESHOLD",
    "MANIFEST_NAME",
    "Progress",
    "S3Target",
    "UploadResult",
    "WeightsError",
    "compute_manifest",
    "manifest_files",
    "rich_progress",
    "s3_client_for",
    "s3_target",
    "upload_model",
    "verify_dir",
    "verify_remote",
]
