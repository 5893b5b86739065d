#!/usr/bin/env python3
"""Verify model weights against a SHA-256 manifest before the model server starts (runs as an init container).

Usage:
  verify_weights.py --manifest FILE --root /models/llama      # files on a mounted volume
  verify_weights.py --manifest FILE --root s3://bucket/prefix  # objects in S3-compatible storage (needs boto3;
                                                               # endpoint from AWS_ENDPOINT_URL, credentials from env)

The manifest is in `sha256sum` format: one `<64 hex digits>  <path relative to root>` per line. Every listed file must
exist and match; a weight file (.safetensors, .bin, .pt, .pth, .gguf) under the root that the manifest does not list
is also a failure, so a swapped or added shard cannot slip through. Exit 0 when all match, 1 on any mismatch (one
"INTEGRITY FAILURE" line per problem), 2 on a usage or manifest error. Standard library only, plus boto3 for S3.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from collections.abc import Iterator

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CHUNK = 8 * 1024 * 1024
LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def parse_manifest(text: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.fullmatch(line)
        if not match:
            raise ValueError(f"manifest line {number} is not '<sha256>  <path>': {line[:80]!r}")
        digest, path = match.group(1).lower(), match.group(2).strip()
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"manifest line {number}: path {path!r} must be relative to the model root")
        if path in entries:
            raise ValueError(f"manifest line {number}: {path!r} is listed twice")
        entries[path] = digest
    if not entries:
        raise ValueError("manifest lists no files")
    return entries


def sha256_stream(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _read_file(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


class LocalStore:
    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def files(self) -> list[str]:
        found = []
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                found.append(os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/"))
        return found

    def exists(self, rel: str) -> bool:
        return os.path.isfile(os.path.join(self.root, rel))

    def digest(self, rel: str) -> str:
        return sha256_stream(_read_file(os.path.join(self.root, rel)))


class S3Store:
    def __init__(self, uri: str) -> None:
        import boto3  # only needed for S3 roots

        bucket, _, prefix = uri[len("s3://") :].partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)

    def files(self) -> list[str]:
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                found.append(item["Key"][len(self.prefix) :])
        return found

    def exists(self, rel: str) -> bool:
        return rel in set(self.files())

    def digest(self, rel: str) -> str:
        body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + rel)["Body"]
        return sha256_stream(iter(lambda: body.read(CHUNK), b""))


def verify(manifest: dict[str, str], store: LocalStore | S3Store) -> list[str]:
    problems = []
    present = set(store.files())
    for rel, expected in sorted(manifest.items()):
        if rel not in present:
            problems.append(f"INTEGRITY FAILURE: {rel} is listed in the manifest but missing")
            continue
        actual = store.digest(rel)
        if actual != expected:
            problems.append(f"INTEGRITY FAILURE: {rel} sha256 {actual} does not match the manifest ({expected})")
        else:
            print(f"ok {rel} {actual}", flush=True)
    for rel in sorted(present - set(manifest)):
        if rel.endswith(WEIGHT_SUFFIXES):
            problems.append(f"INTEGRITY FAILURE: weight file {rel} is not listed in the manifest")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="sha256sum-format manifest file")
    parser.add_argument("--root", required=True, help="model folder or s3://bucket/prefix")
    args = parser.parse_args(argv)
    try:
        with open(args.manifest, encoding="utf-8") as handle:
            manifest = parse_manifest(handle.read())
    except (OSError, ValueError) as exc:
        print(f"INTEGRITY FAILURE: cannot read manifest {args.manifest}: {exc}", file=sys.stderr, flush=True)
        return 2
    store: LocalStore | S3Store = S3Store(args.root) if args.root.startswith("s3://") else LocalStore(args.root)
    problems = verify(manifest, store)
    for problem in problems:
        print(problem, file=sys.stderr, flush=True)
    if problems:
        print(f"model weights under {args.root} failed verification: the server will not start", file=sys.stderr)
        return 1
    print(f"verified {len(manifest)} files under {args.root}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
