"""Model revisions: the stack file's revisions and rollout, what each revision renders, the gateway's weighted, cohort
and pin rules, the complete guest model list, and every bad input refused naming the field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from components.gateway import (
    REVISION_HEADER,
    REVISION_LOG_FIELDS,
    TENANT_HEADER,
    GatewayModel,
    GatewayRollout,
    LlmGateway,
)
from components.vllm import APPROVED_BY_ANNOTATION, REVISION_LABEL, REVISION_WEIGHT_ANNOTATION
from infra.config import parse_platform
from infra.offline import OfflineError, Recording
from infra.pack_config import stack_pack_config
from infra.tools.checks import check_recording
from infra.tools.schemas import CrdSchemas
from tests.conftest import run
from tests.platforms import bank, gateway_args, model, render
from tests.policies.mutations import vllm_container

TENANTS: list[dict[str, Any]] = [
    {"name": "retail", "groups": {"admin": ["r"]}, "api": {"requests_per_minute": 100, "tokens_per_minute": 5000}},
    {"name": "qa", "groups": {"admin": ["q"]}},
    {"name": "beta", "groups": {"admin": ["b"]}},
    {"name": "audit", "access": "list-models", "groups": {"admin": ["a"]}},
]
GATEWAY = {"hostname": "llm.bank.internal", "key_rotation_days": 30, "source_ranges": ["10.0.0.0/8"]}
REVISIONS: list[dict[str, Any]] = [
    {"weight": 90},
    {"name": "r2", "weight": 10, "max_model_len": 4096, "integrity": {"configmap": "approved-r2"}, "replicas": 1},
]
ROLLOUT = {"evaluators": ["qa"], "cohorts": {"r2": ["beta"]}}


def chat(**kw: Any) -> dict[str, Any]:
    return model(served_model_name="chat", integrity={"configmap": "approved"}, **kw)


def platform(**kw: Any) -> dict[str, Any]:
    return bank(
        **{
            "registry": {"host": "harbor.bank.internal", "immutable_projects": ["platform"]},
            "gateway": GATEWAY,
            "tenants": TENANTS,
            "models": [chat(revisions=REVISIONS, rollout=ROLLOUT)],
            **kw,
        }
    )


@pytest.fixture(scope="module")
def canary() -> Recording:
    return render(platform())


@pytest.fixture(scope="module")
def plain() -> Recording:
    return render(platform(models=[chat()]))


def objects(rec: Recording, kind: str) -> dict[str, dict[str, Any]]:
    return {r.object_name: r.inputs for r in rec.kubernetes_objects() if r.kind == kind}


# ------------------------------------------------------------------------------------------------- rendered


def test_every_revision_has_its_own_server_objects(canary: Recording) -> None:
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "ServiceAccount"):
        assert {"llama-8b", "llama-8b-r2"} <= set(objects(canary, kind)), kind
    certificates = objects(canary, "Certificate")
    assert {"llama-8b-tls", "llama-8b-r2-tls", "llama-8b-probe-tls", "llama-8b-r2-probe-tls"} <= set(certificates)
    assert "llama-8b-r2.llm-inference.svc" in certificates["llama-8b-r2-tls"]["spec"]["dnsNames"]
    assert {"llama-8b-serving", "llama-8b-r2-serving"} <= set(objects(canary, "NetworkPolicy"))
    deployments = objects(canary, "Deployment")
    stable, candidate = deployments["llama-8b"], deployments["llama-8b-r2"]
    # the candidate's overrides, the stable revision as the model says; both serve the public name
    assert candidate["spec"]["replicas"] == 1
    args = {name: vllm_container(d)["args"] for name, d in (("stable", stable), ("candidate", candidate))}
    assert args["candidate"][args["candidate"].index("--max-model-len") + 1] == "4096"
    assert args["stable"][args["stable"].index("--max-model-len") + 1] == "8192"
    assert all(a[a.index("--served-model-name") + 1] == "chat" for a in args.values())
    volumes = json.dumps(candidate["spec"]["template"]["spec"]["volumes"])
    assert "approved-r2" in volumes and "approved-r2" not in json.dumps(stable["spec"]["template"]["spec"]["volumes"])
    # labels and annotations the rules, dashboards and policies read; pods carry no revision label
    assert stable["metadata"]["labels"][REVISION_LABEL] == "base"
    assert candidate["metadata"]["labels"][REVISION_LABEL] == "r2"
    assert candidate["metadata"]["annotations"][REVISION_WEIGHT_ANNOTATION] == "10"
    assert APPROVED_BY_ANNOTATION not in candidate["metadata"]["annotations"]
    assert REVISION_LABEL not in candidate["spec"]["template"]["metadata"]["labels"]
    monitor = objects(canary, "ServiceMonitor")["llama-8b-r2"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["relabelings"] == [{"action": "replace", "targetLabel": "revision", "replacement": "r2"}]


def test_autoscaling_queries_only_its_own_revision() -> None:
    autoscaled = {"enabled": True, "min_replicas": 1, "max_replicas": 2}
    rec = render(platform(models=[chat(autoscaling=autoscaled, revisions=REVISIONS, rollout=ROLLOUT)]))
    scaled = objects(rec, "ScaledObject")
    # the candidate overrides replicas but not autoscaling: both scale, each on its own queue
    queries = {name: s["spec"]["triggers"][0]["metadata"]["query"] for name, s in scaled.items()}
    assert queries["llama-8b"].endswith('model_name="chat",revision="base"})')
    assert queries["llama-8b-r2"].endswith('model_name="chat",revision="r2"})')


def test_declaring_revisions_renames_and_restarts_nothing(canary: Recording, plain: Recording) -> None:
    before = {r.urn for r in plain.resources}
    after = {r.urn for r in canary.resources}
    assert before <= after
    assert {r.urn for r in canary.resources if "r2" in r.name} == after - before
    stable_before = objects(plain, "Deployment")["llama-8b"]
    stable_after = objects(canary, "Deployment")["llama-8b"]
    assert stable_before["spec"] == stable_after["spec"]  # same pod template: the stable servers keep running
    assert objects(plain, "Service")["llama-8b"]["spec"] == objects(canary, "Service")["llama-8b"]["spec"]


def test_weighted_cohort_and_pin_rules(canary: Recording, crds: Path) -> None:
    [route] = objects(canary, "AIGatewayRoute").values()
    rules = {r["name"]: r for r in route["spec"]["rules"]}
    assert list(rules) == ["llama-8b", "llama-8b-cohort-r2", "llama-8b-pin-base", "llama-8b-pin-r2"]
    model_header = {"type": "Exact", "name": "x-ai-eg-model", "value": "chat"}
    weighted = rules["llama-8b"]
    assert weighted["matches"] == [{"headers": [model_header]}]
    assert weighted["backendRefs"] == [{"name": "llama-8b", "weight": 90}, {"name": "llama-8b-r2", "weight": 10}]
    cohort = rules["llama-8b-cohort-r2"]
    assert cohort["matches"] == [
        {"headers": [model_header, {"type": "RegularExpression", "name": TENANT_HEADER, "value": r"(beta)\.(a|b)"}]}
    ]
    assert cohort["backendRefs"] == [{"name": "llama-8b-r2"}]
    pin = rules["llama-8b-pin-base"]
    assert pin["matches"][0]["headers"] == [
        model_header,
        {"type": "Exact", "name": REVISION_HEADER, "value": "base"},
        {"type": "RegularExpression", "name": TENANT_HEADER, "value": r"(qa)\.(a|b)"},
    ]
    assert pin["backendRefs"] == [{"name": "llama-8b"}]
    # more header matches win (Gateway API precedence): pin over cohort over weights
    assert [len(r["matches"][0]["headers"]) for r in rules.values()] == [1, 2, 3, 3]
    assert CrdSchemas(crds).validate(route) == []
    # every revision reached over mTLS: its own Backend, BackendTLSPolicy and AIServiceBackend
    tls = objects(canary, "BackendTLSPolicy")
    assert tls["llama-8b-r2-tls"]["spec"]["validation"]["hostname"] == "llama-8b-r2.llm-inference.svc.cluster.local"
    assert {"llama-8b", "llama-8b-r2"} <= set(objects(canary, "AIServiceBackend")) & set(objects(canary, "Backend"))


def test_audit_log_records_the_serving_revision(canary: Recording, plain: Recording) -> None:
    def log_fields(rec: Recording) -> dict[str, str]:
        [proxy] = objects(rec, "EnvoyProxy").values()
        fields: dict[str, str] = proxy["spec"]["telemetry"]["accessLog"]["settings"][0]["format"]["json"]
        return fields

    assert REVISION_LOG_FIELDS.items() <= log_fields(canary).items()
    assert not set(REVISION_LOG_FIELDS) & set(log_fields(plain))
    ilm = next(c for c in objects(canary, "ConfigMap").values() if "privatellm-audit.template.json" in c["data"])
    template = json.loads(ilm["data"]["privatellm-audit.template.json"])
    assert template["template"]["mappings"]["properties"]["backend"] == {"type": "keyword"}


def test_guests_list_every_model_once(crds: Path) -> None:
    """The list is answered by the gateway itself: every model of the stack, a model with revisions once."""
    other = model(name="qwen", model="Qwen3-8B", served_model_name="qwen3-8b", integrity={"configmap": "q"})
    rec = render(platform(models=[chat(revisions=REVISIONS, rollout=ROLLOUT), other]))
    [listing] = objects(rec, "HTTPRouteFilter").values()
    body = json.loads(listing["spec"]["directResponse"]["body"]["inline"])
    assert [m["id"] for m in body["data"]] == ["chat", "qwen3-8b"]
    assert body["object"] == "list" and {m["object"] for m in body["data"]} == {"model"}
    assert listing["spec"]["directResponse"]["contentType"] == "application/json"
    route = objects(rec, "HTTPRoute")["bank-llm-list-models"]
    [rule] = route["spec"]["rules"]
    assert "backendRefs" not in rule
    assert rule["filters"] == [
        {
            "type": "ExtensionRef",
            "extensionRef": {
                "group": "gateway.envoyproxy.io",
                "kind": "HTTPRouteFilter",
                "name": "bank-llm-model-list",
            },
        }
    ]
    schemas = CrdSchemas(crds)
    assert schemas.validate(listing) == [] and schemas.validate(route) == []


def test_the_pack_passes_the_canary_and_knows_its_weights(canary: Recording, crds: Path) -> None:
    spec = parse_platform(platform(), "test")
    config = stack_pack_config(spec)
    assert config["revision-weights"]["revisionWeights"] == {"chat": {"llama-8b": 90, "llama-8b-r2": 10}}
    report = check_recording(canary, spec, crds)
    revision_rules = {
        "revision-weights",
        "canary-approval",
        "no-hash-lb-on-weighted-routes",
        "pdb-per-serving-workload",
    }
    assert revision_rules <= {r.policy for r in report.results}
    # every revision passes the per-model rules too (the test platform's charts come from the internet: not here)
    per_model = revision_rules | {p for p in (r.policy for r in report.results) if p.startswith(("vllm-", "model-"))}
    assert [r for r in report.results if r.policy in per_model and not r.passed] == []
    servers = {r.resource for r in report.results if r.policy == "vllm-no-trust-remote-code"}
    assert any("llama-8b-r2" in s for s in servers)


def test_a_promoted_revision_alone_and_its_approval() -> None:
    promoted = [{"weight": 0}, {"name": "r2", "weight": 100, "approved_by": "CAB change 1042"}]
    rec = render(platform(models=[chat(revisions=promoted, rollout=ROLLOUT)]))
    deployments = objects(rec, "Deployment")
    # the previous revision stays deployed and warm at weight 0, still pinnable
    assert {"llama-8b", "llama-8b-r2"} <= set(deployments)
    assert deployments["llama-8b-r2"]["metadata"]["annotations"][APPROVED_BY_ANNOTATION] == "CAB change 1042"
    [route] = objects(rec, "AIGatewayRoute").values()
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"name": "llama-8b", "weight": 0},
        {"name": "llama-8b-r2", "weight": 100},
    ]
    # a later change removes it: the named revision alone
    alone = render(platform(models=[chat(revisions=[{"name": "r2", "weight": 100, "approved_by": "CAB 1042"}])]))
    assert "llama-8b" not in objects(alone, "Deployment") and "llama-8b-r2" in objects(alone, "Deployment")


# ------------------------------------------------------------------------------------------------ bad input


def problems_of(doc: dict[str, Any]) -> str:
    with pytest.raises(OfflineError) as info:
        render(doc)
    return str(info.value)


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        pytest.param(
            [chat(revisions=[{"weight": 80}, {"name": "r2", "weight": 10}])],
            "privatellm:platform.models[0]: revision weights add up to 80 + 10 = 90; they must add up to 100",
            id="weights-not-100",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 89.5}, {"name": "r2", "weight": 10.5}])],
            "models[0].revisions[0].weight",
            id="weights-not-integers",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 50}, {"name": "r2", "weight": 30}, {"name": "r3", "weight": 20}])],
            "revisions base, r2, r3 all take traffic; at most two do",
            id="three-serving",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 90}, {"name": "r2", "weight": 10}], rollout={"cohorts": {"r3": ["beta"]}})],
            "rollout.cohorts.r3 names no revision of this model (revisions: base, r2)",
            id="cohort-unknown-revision",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 90}, {"name": "r2", "weight": 10}], rollout={"evaluators": ["qa-team"]})],
            "models[0].rollout.evaluators names 'qa-team', which is not a tenant of this stack",
            id="evaluator-not-a-tenant",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 90}, {"name": "r2", "weight": 10, "replicas": 20}])],
            "node pool 'h100' has 16 GPUs (2 nodes x 8 H100-80GB-SXM) but its models need 21: llama-8b 1 (1 x 1 "
            "GPUs), llama-8b-r2 20 (20 x 1 GPUs); add nodes, lower replicas, or remove a revision whose weight is 0",
            id="revisions-do-not-fit-the-pool",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 90}, {"name": "r2", "weight": 10, "max_model_len": 10_000_000}])],
            "llama-8b-r2: Llama-3.1-8B",
            id="revision-beyond-the-model",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 40}, {"name": "r2", "weight": 60}])],
            "models[0].revisions[1] (r2) takes 60% of llama-8b; the finance profile needs approved_by",
            id="unapproved-majority",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 90}, {"name": "base", "weight": 10}])],
            "revision name 'base' is the unnamed revision's label; choose another name",
            id="base-reserved",
        ),
        pytest.param(
            [chat(revisions=[{"name": "r2", "weight": 90}, {"name": "r2", "weight": 10}])],
            "revision name 'r2' appears 2 times; revision names are unique",
            id="duplicate-revision",
        ),
        pytest.param(
            [chat(rollout=ROLLOUT)],
            "rollout applies to revisions; declare revisions or remove rollout",
            id="rollout-without-revisions",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 90}, {"name": "r" * 40, "weight": 10}])],
            "is longer than 40 characters; choose a shorter revision name",
            id="revision-name-too-long",
        ),
        pytest.param(
            [chat(revisions=REVISIONS, rollout={"gate": {"steps": [5, 1, 100]}})],
            "steps=[5, 1, 100] must rise strictly and end at 100",
            id="gate-steps",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 90}, {"name": "r2", "weight": 10, "extra_args": ["--trust-remote-code"]}])],
            "models[0].revisions[1].extra_args",
            id="revision-parity-extra-args",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 90}, {"name": "r2", "weight": 10, "model": "No-Such-Model"}])],
            "models[0].revisions[1].model",
            id="revision-unknown-model",
        ),
        pytest.param(
            [chat(revisions=[{"weight": 90}, {"name": "r2", "weight": 10, "gpus": 2}])],
            "models[0].revisions[1].gpus",
            id="unknown-override",
        ),
    ],
)
def test_bad_revisions_name_the_field_and_the_fix(models: list[dict[str, Any]], expected: str) -> None:
    assert expected in problems_of(platform(models=models))


def test_revisions_need_the_gateway() -> None:
    doc = platform()
    doc.pop("gateway")
    doc.pop("tenants")
    message = problems_of(doc)
    assert "models[0].revisions: the gateway splits a model's traffic between its revisions; add a gateway" in message


def test_baseline_needs_no_approval() -> None:
    doc = platform(profile="baseline", models=[chat(revisions=[{"weight": 40}, {"name": "r2", "weight": 60}])])
    assert {"llama-8b", "llama-8b-r2"} <= set(objects(render(doc), "Deployment"))


def test_a_revision_whose_objects_collide_with_another_model() -> None:
    other = model(name="llama-8b-r2", served_model_name="other", integrity={"configmap": "o"})
    after = problems_of(platform(models=[chat(revisions=REVISIONS), other]))
    assert "models[1].name='llama-8b-r2' is used by another model" in after
    before = problems_of(platform(models=[other, chat(revisions=REVISIONS)]))
    assert (
        "models[1].revisions[1]: its objects would be named 'llama-8b-r2', already those of "
        "privatellm:platform.models[0].name; give the revision another name"
    ) in before


# ------------------------------------------------------------------------------------------------ component


def revision(service: str, label: str, weight: int) -> GatewayModel:
    return GatewayModel(name="chat", service=service, namespace="llm", model="chat", revision=label, weight=weight)


def test_a_models_rules_stay_in_one_route(crds: Path) -> None:
    plain_models = [GatewayModel(name=f"m{i}", service=f"m{i}", namespace="llm") for i in range(14)]
    canary_models = [revision("chat", "base", 90), revision("chat-r2", "r2", 10)]
    args = gateway_args([*plain_models, *canary_models], rollouts={"chat": GatewayRollout(evaluators=["qa"])})
    rec = run(lambda: LlmGateway("gw", args) and None)
    routes = {r.object_name: r.inputs for r in rec.kubernetes_objects() if r.kind == "AIGatewayRoute"}
    # 14 + 3 rules would overflow the first route: the canary's three rules move together to the second
    assert [len(r["spec"]["rules"]) for r in routes.values()] == [14, 3]
    assert [r["name"] for r in routes["bank-llm-models-2"]["spec"]["rules"]] == ["chat", "chat-pin-base", "chat-pin-r2"]
    schemas = CrdSchemas(crds)
    assert all(schemas.validate(r) == [] for r in routes.values())


@pytest.mark.parametrize(
    ("models", "rollouts", "message"),
    [
        ([revision("chat", "base", 90), revision("chat-r2", "r2", 20)], {}, "revision weights must add up to 100"),
        (
            [revision("chat", "base", 90), revision("chat-r2", "r2", 10)],
            {"chat": GatewayRollout(cohorts={"r3": ["qa"]})},
            "'r3' is not a revision of chat",
        ),
        (
            [revision("chat", "base", 90), revision("chat-r2", "r2", 10)],
            {"chat": GatewayRollout(evaluators=["nobody"])},
            "'nobody' is not a tenant of the gateway",
        ),
        (
            [
                revision("chat", "base", 90),
                GatewayModel("other", "chat-r2", "llm", model="chat", revision="r2", weight=10),
            ],
            {},
            "its revisions must share one served name",
        ),
    ],
)
def test_gateway_args_refuse_inconsistent_revisions(
    models: list[GatewayModel], rollouts: dict[str, GatewayRollout], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        gateway_args(models, rollouts=rollouts)


def test_model_list_escapes_envoy_command_operators() -> None:
    args = gateway_args([GatewayModel(name="chat-100%", service="chat", namespace="llm")])
    rec = run(lambda: LlmGateway("gw", args) and None)
    [listing] = [r.inputs for r in rec.kubernetes_objects() if r.kind == "HTTPRouteFilter"]
    assert '"id":"chat-100%%"' in listing["spec"]["directResponse"]["body"]["inline"]


def test_every_revision_keeps_its_weights_on_a_retained_volume() -> None:
    storage = {"type": "pvc", "size": "100Gi"}
    rec = render(platform(models=[chat(storage=storage, revisions=REVISIONS, rollout=ROLLOUT)]))
    claims = {r.object_name: r for r in rec.kubernetes_objects() if r.kind == "PersistentVolumeClaim"}
    assert {"llama-8b-weights", "llama-8b-r2-weights"} <= set(claims)
    for name in ("llama-8b-weights", "llama-8b-r2-weights"):
        assert claims[name].inputs["metadata"]["annotations"]["privatellm.io/retain-on-delete"] == "true"
        assert claims[name].options["retainOnDelete"] is True
