"""The offline engine: recording, secrets, duplicates, failures, chart inputs and the render layout."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import pytest
import yaml

from infra.offline import (
    SECRET_MASK,
    OfflineError,
    clean,
    config_from_mapping,
    load_stack_config,
    manifest_path,
    run_program,
    write_render,
)
from infra.tools.schemas import validate_builtin
from tests.conftest import ROOT, run


def secret_program() -> None:
    password = random.RandomPassword("db-password", length=32, special=False)
    k8s.core.v1.Secret(
        "db",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="db", namespace="llm-registry"),
        string_data={"password": password.result},
    )
    token = pulumi.Config("privatellm").require_secret("apiToken")
    k8s.core.v1.Secret(
        "token",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="token", namespace="llm-gateway"),
        string_data={"token": token},
    )


def test_masked_secrets_stay_objects_the_api_server_accepts() -> None:
    """`data` holds base64 and a docker config is parsed by the API server: their masks are valid for both."""

    def program() -> None:
        password = random.RandomPassword("p", length=32)
        k8s.core.v1.Secret(
            "opaque",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="opaque", namespace="llm-registry"),
            data={"key": password.result.apply(lambda v: base64.b64encode(v.encode()).decode())},
        )
        k8s.core.v1.Secret(
            "pull",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="pull", namespace="llm-registry"),
            type="kubernetes.io/dockerconfigjson",
            string_data={".dockerconfigjson": password.result.apply(lambda v: json.dumps({"auths": {"h": v}}))},
        )

    rec = run(program=program)
    opaque = rec.one("Secret", "opaque").masked
    assert base64.b64decode(opaque["data"]["key"]) == b"[secret]"
    pull = rec.one("Secret", "pull").masked["stringData"][".dockerconfigjson"]
    assert json.loads(pull) == {"auths": {"[secret]": {"auth": "[secret]"}}}
    for secret in rec.of_kind("Secret"):
        assert validate_builtin(secret.masked, "1.31") == []


def test_secrets_are_masked_on_disk_and_placeholders_for_policies(tmp_path: Path) -> None:
    config = config_from_mapping("t", {"privatellm:apiToken": {"secure": "v1:AAAA"}})
    assert config.secret_keys == ["privatellm:apiToken"]
    rec = run_program(config, program=secret_program)
    db = next(r for r in rec.resources if r.name == "db")
    token = next(r for r in rec.resources if r.name == "token")
    # Masked value by value: a reviewer sees which keys each Secret holds.
    assert db.masked["stringData"] == {"password": SECRET_MASK}
    assert token.masked["stringData"] == {"token": SECRET_MASK}
    assert token.inputs["stringData"] == {"token": "[secure:privatellm:apiToken]"}
    assert db.inputs["stringData"] == {"password": "[generated:RandomPassword:db-password]"}
    result = write_render(rec, tmp_path)
    everything = result.resources_json.read_text() + "".join(p.read_text() for p in result.manifests)
    assert "[secure:" not in everything and "[generated:RandomPassword" not in everything
    assert yaml.safe_load((tmp_path / "manifests/llm-registry/Secret-db.yaml").read_text())["stringData"] == {
        "password": "[secret]"
    }
    random_password = next(r for r in rec.resources if r.type == "random:index/randomPassword:RandomPassword")
    assert "result" in random_password.options["additionalSecretOutputs"]


def test_numbers_come_back_as_ints_and_envelopes_unwrap() -> None:
    envelope = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": {"n": 3.0}}
    assert clean({"a": 2.0, "b": 2.5, "s": envelope}, mask=False) == {"a": 2, "b": 2.5, "s": {"n": 3}}
    assert clean({"s": envelope}, mask=True) == {"s": {"n": SECRET_MASK}}  # the shape kept, each value masked


def test_duplicate_urns_fail() -> None:
    def program() -> None:
        k8s.core.v1.ConfigMap("same", metadata={"name": "a", "namespace": "x"})
        k8s.core.v1.ConfigMap("same", metadata={"name": "b", "namespace": "x"})

    with pytest.raises(OfflineError, match=r"duplicate resource URNs: .*ConfigMap::same"):
        run(program=program)


def test_two_resources_for_one_kubernetes_object_fail() -> None:
    def program() -> None:
        k8s.core.v1.ConfigMap("one", metadata={"name": "settings", "namespace": "x"})
        k8s.core.v1.ConfigMap("two", metadata={"name": "settings", "namespace": "x"})

    with pytest.raises(OfflineError, match="two resources create the same Kubernetes object: ConfigMap/x/settings"):
        run(program=program)


def test_failing_component_is_named() -> None:
    platform = {"name": "bank", "tenants": [{"name": "retail", "groups": {"admin": ["a"]}, "limits": {}}]}
    import infra.builders.namespaces as namespaces_module

    original = namespaces_module.SecureNamespace

    class Exploding(original):  # type: ignore[misc,valid-type]
        def __init__(self, name: str, *args: object, **kwargs: object) -> None:
            if name == "tenant-retail":
                raise RuntimeError("boom")
            super().__init__(name, *args, **kwargs)  # type: ignore[arg-type]

    namespaces_module.SecureNamespace = Exploding  # type: ignore[misc]
    try:
        with pytest.raises(OfflineError) as info:
            run(platform=platform, stack="prod")
    finally:
        namespaces_module.SecureNamespace = original  # type: ignore[misc]
    assert info.value.component == "tenant-retail"
    assert str(info.value) == "stack 'prod', component 'tenant-retail': boom"


def test_bad_stack_file_fails_before_any_resource_with_the_key_named() -> None:
    with pytest.raises(OfflineError) as info:
        run(platform={"tenants": [{"name": "retail", "groups": {"admin": ["a"]}, "tensor_paralel_size": 3}]})
    message = str(info.value)
    assert "privatellm:platform.tenants[0].tensor_paralel_size: unknown key 'tensor_paralel_size'" in message


def test_secret_ref_to_a_plaintext_key_is_refused() -> None:
    with pytest.raises(OfflineError, match="stored in plain text"):
        run(platform={"cluster": {"kubeconfig_secret": "kc"}}, **{"privatellm:kc": "apiVersion: v1"})


def test_kubeconfig_from_secure_config_reaches_the_provider_as_a_secret() -> None:
    rec = run(platform={"cluster": {"kubeconfig_secret": "kc"}}, **{"privatellm:kc": {"secure": "v1:xyz"}})
    [provider] = [r for r in rec.resources if r.type == "pulumi:providers:kubernetes"]
    assert provider.masked["kubeconfig"] == SECRET_MASK
    assert all(r.provider == provider.urn for r in rec.kubernetes_objects())


def test_chart_inputs_are_recorded_and_rendered(tmp_path: Path) -> None:
    def program() -> None:
        k8s.helm.v4.Chart(
            "harbor",
            chart="oci://harbor.bank.internal/charts/harbor",
            version="1.18.0",
            namespace="llm-registry",
            values={"expose": {"type": "clusterIP"}, "existingSecretAdminPassword": "harbor-admin"},
        )

    rec = run(program=program)
    [chart] = rec.charts()
    result = write_render(rec, tmp_path)
    assert result.charts == [tmp_path / "charts" / "harbor.yaml"]
    import yaml

    doc = yaml.safe_load(result.charts[0].read_text())
    assert doc["chart"] == "oci://harbor.bank.internal/charts/harbor"
    assert doc["version"] == "1.18.0"
    assert doc["namespace"] == "llm-registry"
    assert doc["values"]["existingSecretAdminPassword"] == "harbor-admin"
    assert not chart.is_kubernetes_object


def test_render_layout_of_the_dev_stack(tmp_path: Path) -> None:
    rec = run_program(load_stack_config(ROOT, "dev"))
    result = write_render(rec, tmp_path)
    manifests = sorted(p.relative_to(tmp_path / "manifests").as_posix() for p in result.manifests)
    assert "_cluster/Namespace-tenant-research.yaml" in manifests
    assert "_cluster/ClusterRole-llm-dev-tenant-admin.yaml" in manifests
    assert "tenant-research/NetworkPolicy-default-deny-all.yaml" in manifests
    assert "llm-inference/ResourceQuota-namespace-quota.yaml" in manifests
    assert len(manifests) == len(rec.kubernetes_objects())
    import yaml

    for path in result.manifests:
        [doc] = list(yaml.safe_load_all(path.read_text()))
        assert list(doc)[:3] == ["apiVersion", "kind", "metadata"]
        assert manifest_path(next(r for r in rec.kubernetes_objects() if r.manifest() == doc)) == path.relative_to(
            tmp_path / "manifests"
        )
    data = json.loads(result.resources_json.read_text())
    assert data["stack"] == "dev"
    urns = [r["urn"] for r in data["resources"]]
    assert len(urns) == len(set(urns)) == len(rec.resources)
    for entry in data["resources"]:
        assert set(entry) >= {"urn", "type", "name", "parent", "inputs"}
    namespaces = [r for r in data["resources"] if r["type"] == "kubernetes:core/v1:Namespace"]
    assert all(
        r["parent"].endswith("privatellm:baseline:SecureNamespace::" + r["inputs"]["metadata"]["name"])
        for r in namespaces
    )


def test_render_is_deterministic(tmp_path: Path) -> None:
    first = write_render(run_program(load_stack_config(ROOT, "dev")), tmp_path / "a")
    second = write_render(run_program(load_stack_config(ROOT, "dev")), tmp_path / "b")
    import difflib

    diff = list(
        difflib.unified_diff(
            first.resources_json.read_text().splitlines(), second.resources_json.read_text().splitlines(), lineterm=""
        )
    )
    assert diff == []
    for a, b in zip(sorted(first.manifests), sorted(second.manifests), strict=True):
        assert a.read_text() == b.read_text()


def test_unknown_stack_lists_the_known_ones() -> None:
    with pytest.raises(OfflineError, match=r"no stack file .*Pulumi.nope.yaml \(stacks here: .*dev"):
        load_stack_config(ROOT, "nope")
