"""PKI, mTLS wiring and the gateway: what each stack renders, and the bad inputs."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.gateway import API_KEY_PURPOSE, key_windows
from infra.config import StackConfigError, parse_platform
from infra.offline import Recording, load_stack_config, run_program
from tests.conftest import ROOT, masked_keys
from tests.platforms import HARBOR, bank, model, render


def pem(ca: bool = True, days: int = 365, start_days_ago: int = 1, key_cert_sign: bool = True) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Issuing CA")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=start_days_ago))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, key_cert_sign, key_cert_sign, False, False), critical=True
        )
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def platform(**kw: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "registry": {"host": HARBOR, "immutable_projects": ["platform"]},
        "models": [model(served_model_name="llama-3.1-8b", integrity={"configmap": "approved"})],
        "gateway": {"hostname": "llm.bank.internal", "key_rotation_days": 30, "source_ranges": ["10.0.0.0/8"]},
        "tenants": [
            {
                "name": "retail",
                "groups": {"admin": ["r"]},
                "api": {"requests_per_minute": 100, "tokens_per_minute": 5000},
            },
            {"name": "audit", "access": "list-models", "groups": {"admin": ["a"]}},
        ],
    }
    return bank(**{**defaults, **kw})


def crs(rec: Recording, kind: str) -> dict[str, Any]:
    return {r.object_name: r for r in rec.kubernetes_objects() if r.kind == kind}


def test_self_signed_root_issuer_and_bundle() -> None:
    rec = render(platform())
    issuers = crs(rec, "ClusterIssuer")
    assert issuers["bank-bootstrap"].inputs["spec"] == {"selfSigned": {}}
    assert issuers["bank-platform-ca"].inputs["spec"] == {"ca": {"secretName": "bank-root-ca"}}
    root = crs(rec, "Certificate")["bank-root-ca"].inputs["spec"]
    assert root["isCA"] is True and root["issuerRef"]["name"] == "bank-bootstrap"
    [bundle] = crs(rec, "Bundle").values()
    assert bundle.inputs["spec"]["sources"] == [{"secret": {"name": "bank-root-ca", "key": "ca.crt"}}]
    assert bundle.inputs["spec"]["target"]["namespaceSelector"] == {
        "matchLabels": {"app.kubernetes.io/part-of": "private-llm"}
    }
    charts = {c.name: c.inputs for c in rec.charts()}
    cm = charts["pki-cert-manager"]
    assert cm["chart"] == "oci://quay.io/jetstack/charts/cert-manager" and cm["version"] == "v1.21.1"
    assert cm["values"]["crds"] == {"enabled": True, "keep": True}
    assert cm["values"]["image"]["repository"] == "harbor.bank.internal/platform/jetstack/cert-manager-controller"
    assert charts["pki-trust-manager"]["values"]["defaultPackage"] == {"enabled": False}


def test_every_model_serves_mtls_with_profile_certificates() -> None:
    rec = render(platform())
    certs = crs(rec, "Certificate")
    server = certs["llama-8b-tls"].inputs["spec"]
    assert server["dnsNames"][:3] == ["llama-8b", "llama-8b.llm-inference", "llama-8b.llm-inference.svc"]
    assert "server auth" in server["usages"]
    assert server["duration"] == f"{90 * 24}h" and server["renewBefore"] == f"{30 * 24}h"
    assert server["privateKey"]["rotationPolicy"] == "Always"
    assert "client auth" in certs["llama-8b-probe-tls"].inputs["spec"]["usages"]
    assert "client auth" in certs["prometheus-client-tls"].inputs["spec"]["usages"]
    [deployment] = [d for d in rec.kubernetes_objects() if d.kind == "Deployment" and d.namespace == "llm-inference"]
    args = deployment.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--ssl-cert-reqs") + 1] == "2"
    assert args[args.index("--ssl-ciphers") + 1] == "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
    monitor = crs(rec, "ServiceMonitor")["llama-8b"].inputs["spec"]["endpoints"][0]
    assert monitor["tlsConfig"]["cert"]["secret"]["name"] == "prometheus-client-tls"


def test_enterprise_ca_from_secure_config() -> None:
    doc = platform(pki={"mode": "enterprise", "enterprise": {"certificate_pem": pem(), "key_secret": "caKey"}})
    rec = render(doc, **{"privatellm:caKey": {"secure": "v1:k"}})
    secret = next(r for r in rec.kubernetes_objects() if r.kind == "Secret" and r.object_name == "bank-enterprise-ca")
    assert secret.inputs["type"] == "kubernetes.io/tls" and masked_keys(secret) == {"ca.crt", "tls.crt", "tls.key"}
    assert crs(rec, "ClusterIssuer")["bank-platform-ca"].inputs["spec"] == {"ca": {"secretName": "bank-enterprise-ca"}}
    assert "bank-bootstrap" not in crs(rec, "ClusterIssuer")


def test_vault_issuer() -> None:
    vault = {
        "server": "https://vault.bank.internal:8200",
        "path": "pki_int/sign/llm",
        "role": "cert-manager",
        "ca_pem": pem(),
    }
    rec = render(platform(pki={"mode": "vault", "vault": vault}))
    spec = crs(rec, "ClusterIssuer")["bank-platform-ca"].inputs["spec"]["vault"]
    assert spec["server"] == vault["server"] and spec["auth"]["kubernetes"]["role"] == "cert-manager"
    [bundle] = crs(rec, "Bundle").values()
    assert bundle.inputs["spec"]["sources"] == [{"configMap": {"name": "bank-vault-ca", "key": "ca.crt"}}]


@pytest.mark.parametrize(
    ("ca", "message"),
    [
        (lambda: pem(ca=False), "is not a CA certificate"),
        (lambda: pem(days=-1, start_days_ago=30), "has expired"),
        (lambda: pem(key_cert_sign=False), "cannot sign certificates"),
        (
            lambda: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
            "not a readable PEM certificate",
        ),
        (lambda: "hello", "must be a PEM certificate"),
    ],
    ids=["leaf", "expired", "no-cert-sign", "garbage", "not-pem"],
)
def test_bad_enterprise_ca_is_refused_offline(ca: Any, message: str) -> None:
    with pytest.raises(StackConfigError) as info:
        parse_platform(platform(pki={"mode": "enterprise", "enterprise": {"certificate_pem": ca(), "key_secret": "k"}}))
    assert any("pki.enterprise.certificate_pem" in p and message in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pki": {"mode": "hsm"}}, "pki.mode='hsm' is not allowed"),
        ({"pki": {"mode": "enterprise"}}, "mode enterprise needs an enterprise section"),
        (
            {"gateway": {"hostname": "llm.bank.internal", "key_rotation_days": 120}},
            "gateway.key_rotation_days=120 is above the finance profile's maximum of 90 days",
        ),
        ({"pki": {"certificate_days": 365}}, "pki.certificate_days=365 is above the finance profile's maximum"),
        ({"gateway": {"hostname": "llm.bank.internal", "redis_url": "redis:6379"}}, "redis_url needs redis_cidrs"),
        ({"gateway": {"hostname": "llm.bank.internal", "max_tokens": 0}}, "gateway.max_tokens"),
    ],
)
def test_bad_pki_and_gateway_input(change: dict[str, Any], message: str) -> None:
    with pytest.raises(StackConfigError) as info:
        parse_platform(platform(**change))
    assert any(message in p for p in info.value.problems), info.value.problems


def test_gateway_objects() -> None:
    rec = render(platform())
    [gateway] = crs(rec, "Gateway").values()
    [listener] = gateway.inputs["spec"]["listeners"]
    assert listener["protocol"] == "HTTPS" and listener["tls"]["certificateRefs"] == [
        {"kind": "Secret", "name": "gateway-tls"}
    ]
    [client] = crs(rec, "ClientTrafficPolicy").values()
    assert client.inputs["spec"]["tls"] == {"minVersion": "1.3"}
    [proxy] = crs(rec, "EnvoyProxy").values()
    assert proxy.inputs["spec"]["backendTLS"]["clientCertificateRef"]["name"] == "gateway-client-tls"
    log = proxy.inputs["spec"]["telemetry"]["accessLog"]["settings"][0]["format"]
    assert log["type"] == "JSON"
    assert {"tenant", "model", "prompt_tokens", "completion_tokens", "status", "duration_ms"} <= set(log["json"])
    assert not any("BODY" in v.upper() for v in log["json"].values())
    assert proxy.inputs["spec"]["provider"]["kubernetes"]["envoyService"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    [route] = crs(rec, "AIGatewayRoute").values()
    [rule] = route.inputs["spec"]["rules"]
    assert rule["matches"] == [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "llama-3.1-8b"}]}]
    [tls_policy] = crs(rec, "BackendTLSPolicy").values()
    assert tls_policy.inputs["spec"]["validation"]["hostname"] == "llama-8b.llm-inference.svc.cluster.local"
    assert tls_policy.inputs["spec"]["validation"]["caCertificateRefs"][0]["name"] == "bank-platform-ca"
    charts = {c.name: c.inputs for c in rec.charts()}
    eg = charts["envoy-gateway"]["values"]["config"]["envoyGateway"]
    assert eg["extensionManager"]["service"]["fqdn"]["port"] == 1063
    assert eg["provider"]["kubernetes"]["deploy"]["type"] == "GatewayNamespace"


def test_tenant_keys_rotate_in_overlapping_slots_and_guests_only_list() -> None:
    rec = render(platform())
    passwords = [
        r for r in rec.resources if r.type == "random:index/randomPassword:RandomPassword" and "-key-" in r.name
    ]
    assert len(passwords) == 4  # two tenants x two slots
    assert all(p.inputs["length"] == 48 for p in passwords)
    keepers = {p.name.rsplit("-", 1)[-1]: p.inputs["keepers"] for p in passwords}
    assert {k["purpose"] for k in keepers.values()} == {API_KEY_PURPOSE}
    assert {k["rotationDays"] for k in keepers.values()} == {"30"}
    # the two slots' windows start half a period apart
    starts = sorted(datetime.datetime.fromisoformat(k["window"]) for k in keepers.values())
    assert starts[-1] - starts[0] == datetime.timedelta(days=15)
    secrets = {
        s.object_name: s for s in rec.kubernetes_objects() if s.kind == "Secret" and s.namespace == "llm-gateway"
    }
    inference = secrets["tenant-inference-keys"].inputs["stringData"]
    everyone = secrets["tenant-all-keys"].inputs["stringData"]
    assert set(inference) == {"retail.a", "retail.b"}
    assert set(everyone) == {"retail.a", "retail.b", "audit.a", "audit.b"}
    assert all(v.startswith("Bearer ") for v in inference.values())
    assert masked_keys(secrets["tenant-inference-keys"]) == {"retail.a", "retail.b"}
    policies = {p.object_name: p.inputs["spec"] for p in rec.kubernetes_objects() if p.kind == "SecurityPolicy"}
    assert policies["bank-llm-inference-auth"]["apiKeyAuth"]["credentialRefs"][0]["name"] == "tenant-inference-keys"
    assert policies["bank-llm-list-models-auth"]["apiKeyAuth"]["credentialRefs"][0]["name"] == "tenant-all-keys"
    assert policies["bank-llm-inference-auth"]["apiKeyAuth"]["sanitize"] is True


def test_per_tenant_limits() -> None:
    rec = render(platform())
    [limits] = [r for r in rec.kubernetes_objects() if r.kind == "BackendTrafficPolicy"]
    spec = limits.inputs["spec"]
    assert spec["requestBuffer"] == {"limit": "1Mi"}
    rules = spec["rateLimit"]["local"]["rules"]  # no Redis declared: limits are per proxy
    retail = [r for r in rules if "retail" in r["clientSelectors"][0]["headers"][0]["value"]]
    assert {r["limit"]["requests"] for r in retail} == {100, 5000}
    tokens = next(r for r in retail if "cost" in r)
    assert tokens["cost"]["response"]["metadata"] == {"namespace": "io.envoy.ai_gateway", "key": "llm_total_token"}
    with_redis = render(
        platform(
            gateway={
                "hostname": "llm.bank.internal",
                "redis_url": "redis.bank.internal:6379",
                "redis_cidrs": ["10.1.1.1/32"],
            }
        )
    )
    [limits] = [r for r in with_redis.kubernetes_objects() if r.kind == "BackendTrafficPolicy"]
    assert "global" in limits.inputs["spec"]["rateLimit"]
    charts = {c.name: c.inputs for c in with_redis.charts()}
    assert (
        charts["envoy-gateway"]["values"]["config"]["envoyGateway"]["rateLimit"]["backend"]["redis"]["url"]
        == "redis.bank.internal:6379"
    )


def test_finance_prod_uses_the_enterprise_ca_and_dev_the_self_signed_root(crds: Path) -> None:
    finance = run_program(load_stack_config(ROOT, "finance-prod"))
    issuers = crs(finance, "ClusterIssuer")
    assert issuers["bank-llm-platform-ca"].inputs["spec"] == {"ca": {"secretName": "bank-llm-issuing-ca"}}
    dev = run_program(load_stack_config(ROOT, "dev"))
    assert "llm-dev-bootstrap" in crs(dev, "ClusterIssuer")
    outputs = json.dumps([r.masked for r in finance.resources])
    assert "Bearer " not in outputs  # keys never reach files in clear


def test_max_tokens_cap_reaches_every_model_server() -> None:
    rec = render(platform(gateway={"hostname": "llm.bank.internal", "max_tokens": 1024}))
    deployments = [o for o in rec.kubernetes_objects() if o.kind == "Deployment" and o.namespace == "llm-inference"]
    servers = [
        d for d in deployments if "--served-model-name" in d.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    ]
    assert servers
    for d in servers:
        args = d.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--override-generation-config") + 1] == '{"max_new_tokens": 1024}'


EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("days_after_epoch", "a", "b"),
    [
        (0, 0, -15),  # at the epoch slot a starts; b is half way through the window before
        (14.9, 0, -15),
        (15, 0, 15),  # half a period later: b gets a new key, a's key keeps working
        (29.9, 0, 15),
        (30, 30, 15),  # a full period: a rotates, b's key (15 days old) keeps working
        (45, 30, 45),
        (-1, -30, -15),
    ],
)
def test_key_windows_stagger_by_half_a_period(days_after_epoch: float, a: int, b: int) -> None:
    windows = key_windows(EPOCH, 30, EPOCH + datetime.timedelta(days=days_after_epoch))
    assert windows == {"a": EPOCH + datetime.timedelta(days=a), "b": EPOCH + datetime.timedelta(days=b)}


def test_keys_are_replaced_when_their_window_ends_and_only_then() -> None:
    """Across 60 days of daily `pulumi up` runs, every key changes exactly when its window ends, at most one slot
    changes on a given day, and some key stays valid throughout."""
    previous = key_windows(EPOCH, 30, EPOCH)
    changes = []
    for day in range(1, 61):
        now = EPOCH + datetime.timedelta(days=day)
        current = key_windows(EPOCH, 30, now)
        changed = [slot for slot in "ab" if current[slot] != previous[slot]]
        assert len(changed) <= 1
        for slot in changed:
            assert current[slot] == now  # a new window starts the day the old one ends
        changes += [(day, slot) for slot in changed]
        assert all(
            now - start < datetime.timedelta(days=30) for start in current.values()
        )  # no key outlives its period
        previous = current
    assert changes == [(15, "b"), (30, "a"), (45, "b"), (60, "a")]


def test_keepers_follow_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("components.gateway.clock", lambda: EPOCH + datetime.timedelta(days=1))
    early = render(platform())
    monkeypatch.setattr("components.gateway.clock", lambda: EPOCH + datetime.timedelta(days=16))
    later = render(platform())

    def keepers(rec: Recording) -> dict[str, str]:
        return {
            r.name: r.inputs["keepers"]["window"]
            for r in rec.resources
            if r.type == "random:index/randomPassword:RandomPassword" and "-key-" in r.name
        }

    before, after = keepers(early), keepers(later)
    changed = {name for name in before if before[name] != after[name]}
    assert changed and all(name.endswith("-b") for name in changed)  # day 15: only slot b rotated


def test_more_models_than_one_route_holds_are_split_across_routes(crds: Path) -> None:
    """An AIGatewayRoute holds at most 15 rules (CRD maxItems): 20 models need two routes, both authenticated and
    rate-limited."""
    from components.gateway import RULES_PER_ROUTE, GatewayModel, GatewayTenant, LlmGateway
    from infra.tools.schemas import CrdSchemas
    from tests.conftest import run
    from tests.platforms import gateway_args

    def program() -> None:
        models = [GatewayModel(name=f"model-{i}", service=f"model-{i}", namespace="llm") for i in range(20)]
        tenants = [GatewayTenant(name="retail", requests_per_minute=60, tokens_per_minute=1000)]
        LlmGateway("gw", gateway_args(models, tenants))

    rec = run(program)
    routes = {r.object_name: r.inputs for r in rec.kubernetes_objects() if r.kind == "AIGatewayRoute"}
    assert sorted(routes) == ["bank-llm-models", "bank-llm-models-2"]
    assert [len(r["spec"]["rules"]) for r in routes.values()] == [RULES_PER_ROUTE, 20 - RULES_PER_ROUTE]
    schemas = CrdSchemas(crds)
    assert all(schemas.validate(r) == [] for r in routes.values())
    policies = {r.kind: r.inputs["spec"]["targetRefs"] for r in rec.kubernetes_objects() if "Policy" in r.kind}
    auth = [p for p in rec.kubernetes_objects() if p.kind == "SecurityPolicy" and "inference" in p.object_name]
    assert {t["name"] for t in auth[0].inputs["spec"]["targetRefs"]} == set(routes)
    assert {t["name"] for t in policies["BackendTrafficPolicy"]} == {*routes, "bank-llm-list-models"}
