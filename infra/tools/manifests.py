"""The pack's Kubernetes rules on plain manifests: any tool's YAML (`helm template`, kustomize, kubectl exports).

`load_manifests(path)` reads a file or every `*.yaml`/`*.yml`/`*.json` under a folder (multi-document YAML and
`kind: List` included); `manifests_recording(...)` turns the objects into the same `RecordedResource`s the offline
engine records, with the Pulumi type token the real engine would give them (`apps/v1` + `Deployment` →
`kubernetes:apps/v1:Deployment`, core `v1` → `kubernetes:core/v1:...`), so the very rule objects of the pack judge
them; `check_manifests(...)` runs the resource rules and the schema validation and returns a `CheckReport`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infra.config import DEFAULT_KUBERNETES_VERSION
from infra.inputs import MIB, InputError, load_yaml_all, read_text
from infra.offline import RecordedResource, Recording
from infra.tools.checks import CheckReport, build_report
from policies.pack import merge_pack_config, policy_config, profile_pack_config
from policies.profiles import PROFILES

SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest that cannot be checked: names the file, the document and what to fix."""


def pulumi_type(api_version: str, kind: str) -> str:
    """The Pulumi Kubernetes type token of an object: `kubernetes:<group>/<version>:<Kind>` (`core` for v1)."""
    group, _, version = api_version.rpartition("/")
    return f"kubernetes:{group or 'core'}/{version}:{kind}"


MAX_MANIFEST_FILE = 32 * MIB
MAX_FILES = 20_000


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and not p.is_dir())
        if len(files) > MAX_FILES:
            raise ManifestError(f"--manifests {path}: more than {MAX_FILES} files; check one folder at a time")
        return files
    if path.exists() or path.is_symlink():
        return [path]
    raise ManifestError(f"--manifests {path}: no such file or folder")


def load_manifests(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, object) for every Kubernetes object under `path`; `where` is `file#document`."""
    found: list[tuple[str, dict[str, Any]]] = []
    files = _files(path)
    if not files:
        raise ManifestError(f"--manifests {path}: no {', '.join(SUFFIXES)} files in this folder")
    for file in files:
        try:
            documents = load_yaml_all(read_text(file, "--manifests", MAX_MANIFEST_FILE), f"--manifests {file}")
        except InputError as exc:
            raise ManifestError(str(exc)) from None
        for index, doc in enumerate(documents):
            if doc is None:
                continue
            where = f"{file}#{index}"
            items = doc.get("items") if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") else None
            for item_index, obj in enumerate(items if isinstance(items, list) else [doc]):
                at = f"{where}.items[{item_index}]" if items is not None else where
                if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
                    raise ManifestError(f"{at}: not a Kubernetes object (needs apiVersion and kind)")
                found.append((at, obj))
    return found


def manifests_recording(objects: list[tuple[str, dict[str, Any]]], label: str) -> Recording:
    resources = []
    for index, (_, obj) in enumerate(objects):
        raw_meta = obj.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        name = str(meta.get("name") or f"unnamed-{index}")
        typ = pulumi_type(str(obj["apiVersion"]), str(obj["kind"]))
        namespace = meta.get("namespace")
        resources.append(
            RecordedResource.declared("manifests", typ, name, obj, urn_name=f"{namespace or '_'}/{name}#{index}")
        )
    return Recording(stack=label, resources=resources)


def check_manifests(
    path: Path,
    profile: str = "baseline",
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    registries: list[str] | None = None,
    exempt_namespaces: dict[str, str] | None = None,
    crd_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> CheckReport:
    """The pack's Kubernetes rules and schema validation on the objects under `path`, with `profile`'s levels and
    thresholds, documented exceptions and `--policy-pack-config` style overrides."""
    if profile not in PROFILES:
        raise ManifestError(f"--profile {profile!r} is not a profile; choose one of {', '.join(PROFILES)}")
    recording = manifests_recording(load_manifests(path), f"manifests:{path}")
    config = merge_pack_config(
        profile_pack_config(
            profile,
            policy_config(
                kubernetes_version=kubernetes_version,
                exempt_namespaces=exempt_namespaces,
                allowed_registries=list(registries or []),
                profile=profile,
            ),
        ),
        overrides or {},
    )
    # Stack rules judge the objects together (a PDB per serving workload, default-deny and quota per namespace);
    # plain YAML has no resource options, so only the pack's own (annotation) view of retained volumes applies.
    return build_report(recording, config, profile, kubernetes_version, crd_dir, engine_options=False)
