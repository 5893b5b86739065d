"""Schema validation: kubernetes-validate strict for built-in kinds, upstream CRD schemas for custom resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi_kubernetes as k8s
import pytest

from infra.tools.checks import validate_schemas
from infra.tools.schemas import CrdSchemas, is_builtin, to_json_schema, validate_builtin
from tests.conftest import run


def lws(**spec_extra: Any) -> dict[str, Any]:
    template = {"spec": {"containers": [{"name": "vllm", "image": "harbor.bank.internal/models/vllm:v0.33.0"}]}}
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "llama-70b", "namespace": "llm-inference"},
        "spec": {"replicas": 1, "leaderWorkerTemplate": {"size": 2, "workerTemplate": template}, **spec_extra},
    }


def certificate(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": "vllm-server", "namespace": "llm-inference"},
        "spec": {
            "secretName": "vllm-server-tls",
            "issuerRef": {"name": "platform-ca", "kind": "ClusterIssuer"},
            **spec,
        },
    }


def test_builtin_groups() -> None:
    assert is_builtin({"apiVersion": "v1"})
    assert is_builtin({"apiVersion": "networking.k8s.io/v1"})
    assert not is_builtin({"apiVersion": "gateway.networking.k8s.io/v1"})
    assert not is_builtin({"apiVersion": "leaderworkerset.x-k8s.io/v1"})


def test_strict_builtin_validation() -> None:
    good = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}}
    assert validate_builtin(good, "1.31") == []
    unknown_field = {**good, "spec": {"x": 1}}
    assert validate_builtin(unknown_field, "1.31")
    wrong_type = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": "lots"}}
    assert validate_builtin(wrong_type, "1.31")[0].startswith("spec.hard:")


def test_removed_api_is_an_error_not_a_warning() -> None:
    psp = {"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "metadata": {"name": "p"}, "spec": {}}
    [problem] = validate_builtin(psp, "1.31")
    assert problem.startswith("no Kubernetes 1.31 schema for PodSecurityPolicy policy/v1beta1")


def test_openapi_conversion_rejects_pruned_fields_but_keeps_preserved_ones() -> None:
    schema = to_json_schema(
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "nullable": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"x": {}}},
                "port": {"x-kubernetes-int-or-string": True},
            },
        }
    )
    assert schema["additionalProperties"] is False
    assert schema["properties"]["a"]["type"] == ["string", "null"]
    assert "additionalProperties" not in schema["properties"]["free"]
    assert schema["properties"]["port"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]


def test_valid_custom_resources(crds: Path) -> None:
    schemas = CrdSchemas(crds)
    assert schemas.validate(lws()) == []
    assert schemas.validate(certificate(dnsNames=["vllm.llm-inference.svc"], duration="720h")) == []


def test_undeclared_field_is_reported_as_pruned(crds: Path) -> None:
    problems = CrdSchemas(crds).validate(lws(tensorParallelSize=8))
    assert problems == [
        "spec: field(s) tensorParallelSize not declared in the CRD schema; the API server would prune them silently"
    ]
    nested = CrdSchemas(crds).validate(certificate(privateKey={"rotationPolicy": "Always", "rotate": True}))
    assert nested == [
        "spec.privateKey: field(s) rotate not declared in the CRD schema; the API server would prune them silently"
    ]


def test_wrong_type_and_enum_in_custom_resource(crds: Path) -> None:
    problems = CrdSchemas(crds).validate(certificate(privateKey={"rotationPolicy": "Sometimes"}))
    assert len(problems) == 1 and problems[0].startswith("spec.privateKey.rotationPolicy: 'Sometimes' is not one of")
    assert any(p.startswith("spec.secretName:") for p in CrdSchemas(crds).validate(certificate(secretName=3)))


def test_missing_crd_schema_is_an_error(crds: Path) -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    [problem] = CrdSchemas(crds).validate(obj)
    assert problem.startswith("no CRD schema for Widget example.com/v1")


def test_every_shipped_crd_schema_loads(crds: Path) -> None:
    schemas = CrdSchemas(crds)
    files = sorted(crds.glob("*/*.json"))
    assert files
    for path in files:
        kind, version = path.stem.rsplit("_", 1)
        assert schemas.validator(f"{path.parent.name}/{version}", kind) is not None


def test_custom_resources_of_a_program_are_checked(crds: Path) -> None:
    def program() -> None:
        k8s.apiextensions.CustomResource(
            "lws",
            api_version="leaderworkerset.x-k8s.io/v1",
            kind="LeaderWorkerSet",
            metadata={"name": "llama-70b", "namespace": "llm-inference"},
            spec={"leaderWorkerTemplate": {"size": 2, "workerTemplate": {"spec": {"containers": []}}}, "bogus": 1},
        )

    rec = run(program=program)
    results = validate_schemas(rec, "1.31", crds)
    failed = [r for r in results if not r.passed]
    assert [r.policy for r in failed] == ["crd-schema"]
    assert "bogus" in failed[0].message
    # Without a schema folder the custom resource is reported as not validated, never silently passed.
    [unchecked] = validate_schemas(rec, "1.31", None)
    assert not unchecked.passed and unchecked.level == "advisory"


def test_crd_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CrdSchemas(tmp_path / "missing")
