"""Schema validation of rendered objects: built-in kinds with kubernetes-validate (strict), custom resources
against upstream CRD schemas (`<group>/<Kind>_<version>.json`, each a CRD's `openAPIV3Schema`).

A field a CRD schema does not declare would be pruned silently by the API server, so it is reported as an error
here. CEL rules (`x-kubernetes-validations`) are not evaluated offline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from kubernetes_validate import utils as kv_utils
from kubernetes_validate.utils import SchemaNotFoundError, VersionNotSupportedError
from referencing import Registry, Resource

# API groups served by Kubernetes itself ("" is the core group). Anything else is a custom resource, including
# groups that end in k8s.io but are installed as CRDs (gateway.networking.k8s.io, *.x-k8s.io).
BUILTIN_GROUPS = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "apps",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "internal.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "resource.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "storagemigration.k8s.io",
    }
)


def group_of(api_version: str) -> str:
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def is_builtin(obj: Mapping[str, Any]) -> bool:
    return group_of(str(obj.get("apiVersion", ""))) in BUILTIN_GROUPS


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(object)"


def _schema_dir(kubernetes_version: str) -> tuple[str, str]:
    """(requested version, kubernetes-validate's strict schema folder for it)."""
    desired = kubernetes_version.removeprefix("v")
    if kv_utils.major_minor(desired) > kv_utils.latest_version():
        raise VersionNotSupportedError(version=kv_utils.major_minor(desired))
    version = [v for v in kv_utils.all_versions() if kv_utils.major_minor(v) <= kv_utils.major_minor(desired)][-1]
    return desired, f"v{version}-local-strict"


@cache
def definition_validator(kubernetes_version: str, definition: str) -> jsonschema.protocols.Validator:
    """The strict schema of one Kubernetes API type (e.g. io.k8s.api.core.v1.SecurityContext): for the parts of a
    chart's values that the chart renders verbatim into an object."""
    desired, schema_dir = _schema_dir(kubernetes_version)
    definitions = kv_utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", desired)
    if definition not in definitions.get("$defs", {}):
        raise KeyError(f"no Kubernetes {kubernetes_version} definition {definition}")
    schema = {"$schema": definitions["$schema"], "$ref": f"{definitions['$id']}#/$defs/{definition}"}
    registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


@cache
def _builtin_validator(kubernetes_version: str, kind: str, api_version: str) -> jsonschema.protocols.Validator:
    """kubernetes-validate's strict schema for one kind, built once: `kubernetes_validate.validate` re-reads and
    re-parses the kind's schema and the whole definitions file for every object (most of a check's time)."""
    desired, schema_dir = _schema_dir(kubernetes_version)
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv_utils.schema_contents(
            f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{group_version}.json", desired
        )
    except FileNotFoundError:
        raise SchemaNotFoundError(version=kv_utils.major_minor(desired), kind=kind, api_version=api_version) from None
    definitions = kv_utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", desired)
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def validate_builtin(obj: Mapping[str, Any], kubernetes_version: str) -> list[str]:
    """Strict validation of a built-in object (kubernetes-validate's schemas and rules, validators cached); a missing
    schema is an error, not a warning."""
    try:
        validator = _builtin_validator(kubernetes_version, str(obj.get("kind")), str(obj.get("apiVersion")))
    except SchemaNotFoundError:
        return [
            f"no Kubernetes {kubernetes_version} schema for {obj.get('kind')} {obj.get('apiVersion')}: "
            "the API is removed, not yet served or misspelt"
        ]
    except VersionNotSupportedError:
        return [f"kubernetes-validate has no schemas for Kubernetes {kubernetes_version}"]
    error = jsonschema.exceptions.best_match(validator.iter_errors(dict(obj)))
    if error is not None:
        return [f"{_path(error.path)}: {error.message}"]
    return []


# --------------------------------------------------------------------------------------------------------------
# CRD schemas
# --------------------------------------------------------------------------------------------------------------

_DROP = {"nullable", "format", "description", "example", "externalDocs", "default"}


def _fix_pattern(pattern: str) -> str:
    # Go RE2 allows a flag group such as (?i) mid-expression; Python does not. Apply it to the whole pattern
    # (slightly more permissive, never stricter).
    if "(?i)" in pattern and not pattern.startswith("(?i)"):
        return "(?i)" + pattern.replace("(?i)", "")
    return pattern


def to_json_schema(node: Any) -> Any:
    """An OpenAPI v3 structural schema → JSON Schema (draft 4) that also rejects fields the API server prunes."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in _DROP:
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = to_json_schema(value) if isinstance(value, Mapping | list) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(v) for v in value]
        elif key == "pattern":
            out[key] = _fix_pattern(str(value))
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


class CrdSchemas:
    """Upstream CRD schemas laid out as `<dir>/<group>/<Kind>_<version>.json`."""

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise FileNotFoundError(f"CRD schema directory {directory} does not exist")
        self.directory = directory

    def schema_file(self, api_version: str, kind: str) -> Path:
        group, _, version = api_version.rpartition("/")
        return self.directory / group / f"{kind}_{version}.json"

    def validator(self, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
        return _load_validator(self.schema_file(api_version, kind))

    def validate(self, obj: Mapping[str, Any]) -> list[str]:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        validator = self.validator(api_version, kind)
        if validator is None:
            return [
                f"no CRD schema for {kind} {api_version} in {self.directory} "
                f"(expected {self.schema_file(api_version, kind).relative_to(self.directory)})"
            ]
        problems = []
        for error in sorted(validator.iter_errors(dict(obj)), key=lambda e: list(map(str, e.absolute_path))):
            where = _path(error.absolute_path)
            if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
                schema = error.schema if isinstance(error.schema, Mapping) else {}
                allowed = set(schema.get("properties", {}))
                extra = sorted(k for k in error.instance if k not in allowed)
                problems.append(
                    f"{where}: field(s) {', '.join(extra)} not declared in the CRD schema; the API server would "
                    "prune them silently"
                )
            else:
                problems.append(f"{where}: {error.message}")
        if not isinstance(obj.get("metadata"), Mapping) or not obj["metadata"].get("name"):
            problems.append("metadata.name: required")
        return problems


@cache
def _load_validator(path: Path) -> jsonschema.protocols.Validator | None:
    if not path.is_file():
        return None
    schema = to_json_schema(json.loads(path.read_text()))
    for sub in _iter_patterns(schema):
        re.compile(sub)
    return jsonschema.Draft4Validator(schema)


def _iter_patterns(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_iter_patterns(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_iter_patterns(item))
    return found
