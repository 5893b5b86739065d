"""The stack file schema: good files parse with safe defaults; every bad file fails naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import (
    INFERENCE_QUOTA,
    PlatformSpec,
    StackConfigError,
    check_secret_refs,
    parse_platform,
)
from tests.conftest import STACKS


def tenant(**kw: Any) -> dict[str, Any]:
    return {"name": "retail", "groups": {"admin": ["retail-admins"]}, **kw}


def problems(raw: Any) -> list[str]:
    with pytest.raises(StackConfigError) as info:
        parse_platform(raw, "test")
    return info.value.problems


def test_empty_platform_gets_safe_defaults() -> None:
    spec = parse_platform({})
    assert spec.profile == "baseline"
    assert spec.cluster.kubernetes_version == "1.31"
    assert [ns.name for _, ns in spec.namespaces.items()] == [
        "llm-inference",
        "llm-gateway",
        "llm-registry",
        "llm-pki",
        "llm-monitoring",
        "llm-logging",
        "llm-operators",
    ]
    assert spec.tenants == []
    # Tenants get no GPUs, no LoadBalancers and no NodePorts unless the stack grants them.
    hard = parse_platform({"tenants": [tenant()]}).tenants[0].quota.hard()
    assert hard["requests.nvidia.com/gpu"] == "0"
    assert hard["services.loadbalancers"] == "0"
    assert hard["services.nodeports"] == "0"
    # The inference namespace's GPUs are bounded by node pools, not by a quota line.
    assert "requests.nvidia.com/gpu" not in INFERENCE_QUOTA.hard()
    assert spec.namespaces.quota_for("inference") == INFERENCE_QUOTA


def test_tenant_namespace_defaults_to_tenant_prefix() -> None:
    spec = parse_platform({"tenants": [tenant(), tenant(name="support", namespace="support-ns")]})
    assert [t.namespace_name for t in spec.tenants] == ["tenant-retail", "support-ns"]


@pytest.mark.parametrize("path", sorted(STACKS.glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_every_shipped_stack_parses(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    spec = parse_platform(document["config"]["privatellm:platform"], path.stem)
    assert isinstance(spec, PlatformSpec)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            {"tenants": [tenant(namspace="x")]},
            ["privatellm:platform.tenants[0].namspace: unknown key 'namspace'; did you mean 'namespace'?"],
            id="misspelt-tenant-key",
        ),
        pytest.param(
            {"clustr": {}},
            ["privatellm:platform.clustr: unknown key 'clustr'; did you mean 'cluster'?"],
            id="misspelt-top-level-key",
        ),
        pytest.param(
            {"cluster": {"kubernetes_version": "1.29"}},
            ["privatellm:platform.cluster.kubernetes_version='1.29' must be a supported Kubernetes minor version"],
            id="old-kubernetes",
        ),
        pytest.param(
            {"profile": "bank"},
            ["privatellm:platform.profile='bank' is not allowed; use one of 'baseline', 'finance'"],
            id="unknown-profile",
        ),
        pytest.param(
            {"namespaces": {"inference": {"name": "kube-system"}}},
            ["privatellm:platform.namespaces.inference.name='kube-system' is reserved"],
            id="reserved-namespace",
        ),
        pytest.param(
            {"tenants": [tenant(name="Retail_Banking")]},
            ["privatellm:platform.tenants[0].name='Retail_Banking' must be a DNS-1123 label"],
            id="bad-tenant-name",
        ),
        pytest.param(
            {"tenants": [tenant(quota={"requests_memory": "lots"})]},
            ["privatellm:platform.tenants[0].quota.requests_memory='lots' is not a Kubernetes quantity"],
            id="bad-quantity",
        ),
        pytest.param(
            {"tenants": [tenant(quota={"requests_cpu": "64", "limits_cpu": "8"})]},
            ["privatellm:platform.tenants[0].quota: requests_cpu=64 is larger than limits_cpu=8"],
            id="requests-over-limits",
        ),
        pytest.param(
            {"tenants": [tenant(quota={"gpus": -1})]},
            ["privatellm:platform.tenants[0].quota.gpus=-1"],
            id="negative-gpus",
        ),
        pytest.param(
            {"tenants": [{"name": "retail"}]},
            ["privatellm:platform.tenants[0]: groups.admin is empty"],
            id="tenant-without-owner",
        ),
        pytest.param(
            {"tenants": [tenant(), tenant()]},
            ["tenants[1].name='retail' repeats tenants[0].name"],
            id="duplicate-tenant",
        ),
        pytest.param(
            {"tenants": [tenant(namespace="llm-gateway")]},
            ["tenants[0].namespace='llm-gateway' is already used by gateway"],
            id="tenant-takes-platform-namespace",
        ),
        pytest.param(
            {"cluster": {"kubeconfig_path": "/etc/kube", "kubeconfig_secret": "kc"}},
            ["privatellm:platform.cluster: set either kubeconfig_path"],
            id="two-kubeconfigs",
        ),
        pytest.param(
            {"cluster": {"ldap_password": "hunter2"}},
            ["privatellm:platform.cluster.ldap_password holds a credential in plain text"],
            id="plaintext-password",
        ),
        pytest.param(
            {"cluster": {"kubeconfig_secret": {"secure": "v1:abc"}}},
            ["privatellm:platform.cluster.kubeconfig_secret: encrypted values inside privatellm:platform"],
            id="nested-secure-value",
        ),
        pytest.param(
            {"cluster": {"context": "-----BEGIN RSA PRIVATE KEY-----\nMIIE"}},
            ["privatellm:platform.cluster.context contains key material"],
            id="key-material-in-value",
        ),
        pytest.param(
            {"tenants": [tenant(limits={"default_request_cpu": "2", "default_limit_cpu": "1"})]},
            ["tenants[0].limits: default_request_cpu=2 is larger than default_limit_cpu=1"],
            id="limit-range-order",
        ),
        pytest.param(
            {"tenants": [{"name": "retail", "groups": {"admin": ["CN=retail-admins", "OU=Groups", "DC=bank"]}}]},
            ["tenants[0].groups.admin[1]='OU=Groups' looks like a piece of a distinguished name"],
            id="distinguished-name-split-by-yaml",
        ),
        pytest.param(
            {"tenants": "retail"},
            ["privatellm:platform.tenants='retail'"],
            id="tenants-not-a-list",
        ),
    ],
)
def test_bad_stack_file_names_the_field(raw: dict[str, Any], expected: list[str]) -> None:
    found = problems(raw)
    for fragment in expected:
        assert any(fragment in p for p in found), f"{fragment!r} not in {found}"


def test_every_problem_is_listed_at_once() -> None:
    found = problems({"profile": "bank", "clustr": {}, "tenants": [tenant(namspace="x")]})
    assert len(found) == 3
    message = str(StackConfigError(found, "prod"))
    assert message.startswith("stack 'prod': privatellm:platform has 3 problems:")


def test_plaintext_credential_is_reported_once_not_also_as_unknown_key() -> None:
    found = problems({"cluster": {"token": "abc"}})
    assert found == [
        "privatellm:platform.cluster.token holds a credential in plain text; store it with "
        "`pulumi config set --secret privatellm:<name>` and reference it as '<field>_secret: <name>'"
    ]


def test_missing_platform_key() -> None:
    assert "privatellm:platform is not set" in problems(None)[0]


def test_secret_refs_must_be_set_and_encrypted() -> None:
    spec = parse_platform({"cluster": {"kubeconfig_secret": "kubeconfig"}})
    assert spec.secret_refs() == [("cluster.kubeconfig_secret", "kubeconfig")]
    unset = check_secret_refs(spec, is_set=lambda k: False, is_secret=lambda k: False)
    # The field's value is a key name, never repeated (it could be the secret itself, pasted by mistake).
    assert unset == [
        "privatellm:platform.cluster.kubeconfig_secret names a config key that is not set; set it with "
        "`pulumi config set --secret <key> ...` (<key>: the name written in cluster.kubeconfig_secret, not repeated "
        "here)"
    ]
    plain = check_secret_refs(spec, is_set=lambda k: True, is_secret=lambda k: False)
    assert "stored in plain text" in plain[0]
    assert check_secret_refs(spec, is_set=lambda k: True, is_secret=lambda k: k == "privatellm:kubeconfig") == []


def test_two_elasticsearch_nodes_fail_in_the_schema_naming_the_field() -> None:
    """Two master-eligible nodes cannot keep a quorum: refused by the stack schema, not later by a component."""
    [problem] = problems({"logging": {"elasticsearch_nodes": 2}})
    assert problem == (
        "privatellm:platform.logging.elasticsearch_nodes=2 cannot keep a quorum of master-eligible nodes "
        "(with 2, losing either stops the cluster); use 1 or at least 3"
    )
    for nodes in (1, 3, 5):
        assert parse_platform({"logging": {"elasticsearch_nodes": nodes}}).logging.elasticsearch_nodes == nodes


def test_managed_harbor_defaults_to_a_load_balancer_entry() -> None:
    spec = parse_platform(
        {"registry": {"host": "harbor.example.internal", "harbor": {"bootstrap_registry": "b.internal"}}}
    )
    assert spec.registry is not None and spec.registry.harbor is not None
    assert spec.registry.harbor.expose.service_type == "LoadBalancer"
    assert spec.registry.harbor.bootstrap_charts is None
    assert spec.registry.harbor_node_port is None
    node_port = parse_platform(
        {
            "registry": {
                "host": "harbor.example.internal:30443",
                "harbor": {"bootstrap_registry": "b.internal", "expose": {"service_type": "NodePort"}},
            }
        }
    )
    assert node_port.registry is not None
    assert node_port.registry.harbor_node_port == 30443
    assert node_port.registry.hostname == "harbor.example.internal"
