"""TLS and identity rules: passing and violating fixtures for each kind they apply to."""

from __future__ import annotations

from typing import Any

import pytest

from policies.pack import policy_config
from policies.tls import TLS_RULES, go_duration_hours
from tests.policies.fixtures import POD_KINDS, good_template, violations, wrap
from tests.policies.mutations import Mutation, is_kind, is_vllm_workload, server, set_flag

RULES = {r.name: r for r in TLS_RULES}
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"


def gateway(*listeners: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "gw", "namespace": "llm-gateway"}, "spec": {"listeners": list(listeners)}}


HTTPS = {"name": "https", "protocol": "HTTPS", "port": 443, "tls": {"certificateRefs": [{"name": "gateway-tls"}]}}


def test_gateway_listeners() -> None:
    rule = RULES["gateway-tls-listeners"]
    assert violations(rule, GATEWAY, gateway(HTTPS)) == []
    assert violations(rule, GATEWAY, gateway(HTTPS, {"name": "http", "protocol": "HTTP", "port": 80}))
    assert violations(rule, GATEWAY, gateway({"name": "https", "protocol": "HTTPS", "port": 443}))
    assert violations(
        rule, "kubernetes:gateway.networking.k8s.io/v1beta1:Gateway", gateway({"name": "t", "protocol": "TCP"})
    )


def test_ingress_must_cover_every_host_with_tls() -> None:
    rule = RULES["gateway-tls-listeners"]
    ingress = "kubernetes:networking.k8s.io/v1:Ingress"
    good = {"spec": {"tls": [{"hosts": ["a.bank"], "secretName": "t"}], "rules": [{"host": "a.bank"}]}}
    assert violations(rule, ingress, good) == []
    assert violations(rule, ingress, {"spec": {"rules": [{"host": "a.bank"}]}})
    partial = {"spec": {"tls": [{"hosts": ["a.bank"]}], "rules": [{"host": "a.bank"}, {"host": "b.bank"}]}}
    assert violations(rule, ingress, partial) == ["Ingress host 'b.bank' is not covered by spec.tls"]


def vllm(args: list[str]) -> dict[str, Any]:
    t = good_template()
    t["spec"]["containers"][0].update(command=["vllm", "serve"], args=["/models/m", *args])
    return t


MTLS = [
    "--ssl-certfile",
    "/t/tls.crt",
    "--ssl-keyfile",
    "/t/tls.key",
    "--ssl-ca-certs",
    "/t/ca.crt",
    "--ssl-cert-reqs",
    "2",
]


@pytest.mark.parametrize("kind", POD_KINDS)
def test_vllm_must_verify_client_certificates(kind: str) -> None:
    rule = RULES["vllm-client-certificates"]
    assert violations(rule, *wrap(kind, vllm(MTLS))) == []
    assert violations(rule, *wrap(kind, vllm([])))
    one_way = [a for a in MTLS if a not in ("--ssl-cert-reqs", "2")]
    found = violations(rule, *wrap(kind, vllm(one_way)))
    assert found and "--ssl-cert-reqs 2" in found[0]
    # Headless multi-node workers serve no API; other containers are not model servers.
    assert violations(rule, *wrap(kind, vllm(["--headless"]))) == []
    assert violations(rule, *wrap(kind, good_template())) == []


def test_benchmark_client_is_not_a_server() -> None:
    t = good_template()
    t["spec"]["containers"][0].update(command=["/bin/sh", "-c", "vllm bench serve --base-url http://x"])
    assert violations(RULES["vllm-client-certificates"], *wrap("Job", t)) == []


@pytest.mark.parametrize(
    ("kind", "namespace", "fails"),
    [
        ("LoadBalancer", "llm-gateway", False),
        ("LoadBalancer", "llm-inference", True),
        ("NodePort", "tenant-x", True),
        ("ClusterIP", "tenant-x", False),
    ],
)
def test_exposure(kind: str, namespace: str, fails: bool) -> None:
    rule = RULES["no-external-services"]
    service = {"metadata": {"name": "s", "namespace": namespace}, "spec": {"type": kind}}
    config = policy_config(gateway_namespaces=["llm-gateway"])
    assert bool(violations(rule, "kubernetes:core/v1:Service", service, config=config)) == fails
    # An EnvoyProxy without an explicit type gets Envoy Gateway's LoadBalancer.
    proxy = {"metadata": {"name": "p", "namespace": namespace}, "spec": {}}
    found = violations(rule, "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy", proxy, config=config)
    assert bool(found) == (namespace != "llm-gateway")


@pytest.mark.parametrize(
    ("spec", "fails"),
    [
        ({"duration": "2160h", "privateKey": {"rotationPolicy": "Always"}}, False),
        ({"duration": "2161h", "privateKey": {"rotationPolicy": "Always"}}, True),
        ({"duration": "2160h", "privateKey": {"rotationPolicy": "Never"}}, True),
        ({"privateKey": {"rotationPolicy": "Always"}}, True),
        ({"duration": "90 days", "privateKey": {"rotationPolicy": "Always"}}, True),
        ({"isCA": True, "duration": "87600h"}, False),
    ],
)
def test_certificate_lifetime(spec: dict[str, Any], fails: bool) -> None:
    found = violations(RULES["certificate-lifetime"], "kubernetes:cert-manager.io/v1:Certificate", {"spec": spec})
    assert bool(found) == fails


def test_go_durations() -> None:
    assert go_duration_hours("2160h") == 2160
    assert go_duration_hours("1h30m") == 1.5
    assert go_duration_hours("90d") is None and go_duration_hours("") is None


@pytest.mark.parametrize(
    ("props", "fails"),
    [({"rotationDays": 30}, False), ({"rotationDays": 91}, True), ({"rotationMonths": 6}, True), ({}, True)],
)
def test_key_rotation_period(props: dict[str, Any], fails: bool) -> None:
    assert bool(violations(RULES["key-rotation-period"], "time:index/rotating:Rotating", props)) == fails


def api_key(**keepers: str) -> dict[str, Any]:
    return {"length": 48, "keepers": {"purpose": "gateway-api-key", "window": "2026-01-01T00:00:00Z", **keepers}}


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        (api_key(rotationDays="30"), None),
        (api_key(rotationDays="365"), "API keys rotate every 365 days; the profile allows at most 90"),
        (api_key(), "API key has no rotation period"),
        ({"keepers": {"purpose": "gateway-api-key", "rotationDays": "30"}}, "no rotation window"),
        ({"length": 32, "keepers": {"purpose": "db-password"}}, None),  # not an API key: another rule's business
        ({"length": 32}, None),
    ],
)
def test_key_rotation_on_api_keys(props: dict[str, Any], expected: str | None) -> None:
    found = violations(RULES["key-rotation-period"], "random:index/randomPassword:RandomPassword", props)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0]


def test_the_gateway_marks_keys_the_way_the_rule_reads_them() -> None:
    from components.gateway import API_KEY_PURPOSE
    from policies.tls import API_KEY_PURPOSE as RULE_PURPOSE

    assert API_KEY_PURPOSE == RULE_PURPOSE


# ---------------------------------------------------------------------------------------------------------------
# Mutations: each a violation injected into every shipped stack's render (tests/stacks/test_mutations.py)
# ---------------------------------------------------------------------------------------------------------------

MUTATIONS: list[Mutation] = [
    Mutation(
        "vllm-client-certificates",
        "no client verification",
        is_vllm_workload,
        server(lambda c: set_flag(c, "--ssl-cert-reqs", "0")),
    ),
    Mutation(
        "no-external-services",
        "NodePort",
        is_kind("Service"),
        lambda props: props["spec"].update(type="NodePort"),
    ),
    Mutation(
        "gateway-tls-listeners",
        "HTTP listener",
        is_kind("Gateway"),
        lambda props: props["spec"]["listeners"][0].update(protocol="HTTP"),
    ),
    Mutation(
        "certificate-lifetime",
        "ten-year leaf",
        lambda r: is_kind("Certificate")(r) and not r.inputs["spec"].get("isCA"),
        lambda props: props["spec"].update(duration="87600h"),
    ),
    Mutation(
        "key-rotation-period",
        "keys for 1000 days",
        lambda r: (
            r.type == "random:index/randomPassword:RandomPassword"
            and r.inputs.get("keepers", {}).get("purpose") == "gateway-api-key"
        ),
        lambda props: props["keepers"].update(rotationDays="1000"),
    ),
    Mutation(
        "key-rotation-period",
        "keys without a window",
        lambda r: (
            r.type == "random:index/randomPassword:RandomPassword"
            and r.inputs.get("keepers", {}).get("purpose") == "gateway-api-key"
        ),
        lambda props: props["keepers"].pop("window"),
    ),
]
