"""Model-server and data controls: what vLLM may run and send, how much it accepts, and that data volumes outlive a
`pulumi destroy`.

Sources: OWASP Top 10 for LLM Applications 2025 (LLM02 sensitive information disclosure: no request logging, no
telemetry leaving the site; LLM03 supply chain: no code shipped with a model; LLM10 unbounded consumption: a bounded
context), NSA/CISA hardening guidance (logging and data protection), HIPAA §164.310(d)(2)(iv) (data backup and storage).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import Severity, StackValidationArgs

from policies.base import (
    LEADER_WORKER_SET,
    POD_TYPES,
    PodTemplate,
    Rule,
    StackRule,
    containers,
    exemption_for,
    flag_value,
    get_path,
    hipaa,
    is_vllm_server,
    nist,
    nsa,
    owasp,
    pod_templates,
    where_prefix,
)

# Environment that turns vLLM's usage statistics off (vllm/usage/usage_lib.py reads both).
TELEMETRY_OFF = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
REQUEST_LOGGING_FLAGS = ("--enable-log-requests", "--enable-log-outputs")

PVC = "kubernetes:core/v1:PersistentVolumeClaim"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
ELASTICSEARCH = "kubernetes:elasticsearch.k8s.elastic.co/v1:Elasticsearch"
CHART_TYPES = ("kubernetes:helm.sh/v4:Chart", "kubernetes:helm.sh/v3:Chart")
RETAIN_ANNOTATION = "privatellm.io/retain-on-delete"
# Written by components.vllm on a server that is one revision of its model.
REVISION_LABEL = "privatellm.io/revision"
REVISION_WEIGHT_ANNOTATION = "privatellm.io/revision-weight"
APPROVED_BY_ANNOTATION = "privatellm.io/approved-by"
BASE_REVISION = "base"
SERVING_TYPES = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", LEADER_WORKER_SET)


def _vllm_servers(resource_type: str, props: Mapping[str, Any]) -> Iterator[tuple[PodTemplate, str, Mapping[str, Any]]]:
    for template in pod_templates(resource_type, props):
        for label, c in containers(template.spec):
            if is_vllm_server(c):
                yield template, label, c


def _arguments(c: Mapping[str, Any]) -> list[str]:
    return [str(x) for x in [*(c.get("command") or []), *(c.get("args") or [])]]


def trust_remote_code(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    return [
        f"{where_prefix(t)}{label} runs vLLM with --trust-remote-code: Python shipped with the model would execute"
        for t, label, c in _vllm_servers(resource_type, props)
        if any(a == "--trust-remote-code" or a.startswith("--trust-remote-code=") for a in _arguments(c))
    ]


def telemetry_off(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for t, label, c in _vllm_servers(resource_type, props):
        env = {e.get("name"): e.get("value") for e in c.get("env") or [] if isinstance(e, Mapping)}
        missing = [f"{k}={v}" for k, v in TELEMETRY_OFF.items() if str(env.get(k)) != v]
        if missing:
            out.append(f"{where_prefix(t)}{label} may send usage statistics out of the site; set {', '.join(missing)}")
    return out


def request_logging_off(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for t, label, c in _vllm_servers(resource_type, props):
        args = _arguments(c)
        on = [f for f in REQUEST_LOGGING_FLAGS if any(a == f or a.startswith(f + "=") for a in args)]
        if on:
            out.append(f"{where_prefix(t)}{label} logs prompt or completion content ({', '.join(on)})")
    return out


def bounded_context(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for t, label, c in _vllm_servers(resource_type, props):
        if "--headless" in _arguments(c):
            continue  # workers take the leader's limits
        if flag_value(_arguments(c), "--max-model-len") is None:
            out.append(
                f"{where_prefix(t)}{label} has no --max-model-len: the context (and the memory a request may take) "
                "is whatever the model's config allows"
            )
    return out


def _chart_volumes(props: Mapping[str, Any]) -> list[str]:
    values = props.get("values") if isinstance(props.get("values"), Mapping) else {}
    assert isinstance(values, Mapping)
    chart = str(props.get("chart", ""))
    out = []
    if chart.rstrip("/").endswith("harbor") and get_path(values, ("persistence", "enabled")) is not False:
        policy = get_path(values, ("persistence", "resourcePolicy"))
        if policy != "keep":
            out.append(
                f"Harbor persistence.resourcePolicy is {policy!r}; 'keep' leaves the registry, database and "
                "job-log volumes in place when the release is removed"
            )
    for path in (
        ("prometheus", "prometheusSpec", "persistentVolumeClaimRetentionPolicy", "whenDeleted"),
        ("alertmanager", "alertmanagerSpec", "persistentVolumeClaimRetentionPolicy", "whenDeleted"),
    ):
        if get_path(values, path) == "Delete":
            out.append(f"{'.'.join(path)} is Delete; the metrics volume would go with the StatefulSet")
    return out


def data_volumes_retained(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    if resource_type == PVC:
        value = get_path(props, ("metadata", "annotations", RETAIN_ANNOTATION))
        if value != "true":
            return [
                f"PersistentVolumeClaim is not marked {RETAIN_ANNOTATION}: 'true' (set with retain_on_delete=True); "
                "a delete would destroy the data"
            ]
        return []
    if resource_type == STATEFUL_SET:
        if get_path(props, ("spec", "volumeClaimTemplates")) and (
            get_path(props, ("spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted")) == "Delete"
        ):
            return ["persistentVolumeClaimRetentionPolicy.whenDeleted is Delete: its volumes go with the StatefulSet"]
        return []
    if resource_type == ELASTICSEARCH:
        policy = get_path(props, ("spec", "volumeClaimDeletePolicy"))
        if policy != "DeleteOnScaledownOnly":
            return [
                f"volumeClaimDeletePolicy is {policy!r}; ECK's default deletes the data with the cluster, set "
                "DeleteOnScaledownOnly"
            ]
        return []
    return _chart_volumes(props)


def weights_verified(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for template in pod_templates(resource_type, props):
        servers = [label for label, c in containers(template.spec) if is_vllm_server(c)]
        if not servers:
            continue
        verifies = any(
            "verify_weights" in " ".join(_arguments(c))
            for c in template.spec.get("initContainers") or []
            if isinstance(c, Mapping)
        )
        if not verifies:
            out.append(
                f"{where_prefix(template)}{servers[0]} starts without verifying its weights: no init container "
                "checks every file's SHA-256 against the approved manifest"
            )
    return out


def canary_approval(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    labels = get_path(props, ("metadata", "labels")) or {}
    annotations = get_path(props, ("metadata", "annotations")) or {}
    if not isinstance(labels, Mapping) or not isinstance(annotations, Mapping):
        return []
    revision = labels.get(REVISION_LABEL)
    weight = annotations.get(REVISION_WEIGHT_ANNOTATION)
    if revision is None or weight is None or revision == BASE_REVISION:
        return []
    try:
        percent = int(str(weight))
    except ValueError:
        return [f"revision {revision}: annotation {REVISION_WEIGHT_ANNOTATION}={weight!r} is not a whole percent"]
    if percent > 50 and not str(annotations.get(APPROVED_BY_ANNOTATION) or "").strip():
        name = get_path(props, ("metadata", "name"))
        return [
            f"{name}: candidate revision {revision} takes {percent}% of its model's traffic without an approval "
            f"({APPROVED_BY_ANNOTATION})"
        ]
    return []


INFERENCE_RULES: list[Rule] = [
    Rule(
        name="vllm-no-trust-remote-code",
        description=(
            "vLLM never runs Python shipped inside a model repository: a poisoned model would otherwise execute "
            "arbitrary code with access to the weights and every prompt."
        ),
        check=trust_remote_code,
        resource_types=POD_TYPES,
        standards=(owasp("LLM03: Supply Chain"), owasp("LLM04: Data and Model Poisoning")),
        remediation=(
            "Remove --trust-remote-code; use a model whose architecture vLLM implements natively (every model of the "
            "capacity catalog)."
        ),
        severity=Severity.CRITICAL,
    ),
    Rule(
        name="vllm-telemetry-off",
        description="vLLM sends no usage statistics: nothing about the site's models or hardware leaves the network.",
        check=telemetry_off,
        resource_types=POD_TYPES,
        standards=(owasp("LLM02: Sensitive Information Disclosure"), nsa("Network separation: limit egress")),
        remediation="Set env VLLM_NO_USAGE_STATS=1 and DO_NOT_TRACK=1 on every vLLM container (VllmService does).",
        severity=Severity.HIGH,
    ),
    Rule(
        name="vllm-request-logging-off",
        description=(
            "Model servers do not write prompts or completions to their logs: logs are shipped and kept for months, "
            "prompts carry personal and confidential data."
        ),
        check=request_logging_off,
        resource_types=POD_TYPES,
        standards=(owasp("LLM02: Sensitive Information Disclosure"), hipaa("164.312(b)")),
        remediation="Remove --enable-log-requests and --enable-log-outputs; the gateway's audit log records metadata.",
        severity=Severity.HIGH,
    ),
    Rule(
        name="vllm-max-model-len",
        description=(
            "Every model server bounds its context explicitly (--max-model-len), so one request cannot claim the "
            "whole KV cache; the capacity planner sizes replicas for that bound."
        ),
        check=bounded_context,
        resource_types=POD_TYPES,
        standards=(owasp("LLM10: Unbounded Consumption"),),
        remediation="Set max_model_len for the model in the stack file (the planner fills it in by default).",
        severity=Severity.MEDIUM,
    ),
    Rule(
        name="model-weights-verified",
        description=(
            "A model server starts only after an init container has checked every weight file's SHA-256 against the "
            "manifest approved for that model: a swapped or tampered file never serves a prompt."
        ),
        check=weights_verified,
        resource_types=POD_TYPES,
        standards=(owasp("LLM03: Supply Chain"), owasp("LLM04: Data and Model Poisoning")),
        remediation=(
            "Give the model an integrity manifest in the stack file (models[].integrity: manifest_file, sha256 or "
            "configmap); `private-llm models manifest` writes one."
        ),
        severity=Severity.HIGH,
    ),
    Rule(
        name="data-volumes-retained",
        description=(
            "Data volumes (model cache, registry storage, Elasticsearch, metrics) survive a delete or a "
            "`pulumi destroy`: nothing a customer stored is lost by removing the platform."
        ),
        check=data_volumes_retained,
        resource_types=[PVC, STATEFUL_SET, ELASTICSEARCH, *CHART_TYPES],
        standards=(hipaa("164.310(d)(2)(iv)"), nsa("Data protection")),
        remediation=(
            "Create PVCs with retain_on_delete=True and the privatellm.io/retain-on-delete annotation (components "
            "do both); Harbor persistence.resourcePolicy: keep; ECK volumeClaimDeletePolicy: DeleteOnScaledownOnly."
        ),
        severity=Severity.HIGH,
    ),
    Rule(
        name="canary-approval",
        description=(
            "A new revision of a model takes more than half of the model's traffic only once someone approved it: "
            "the approval is recorded on its workload and in the evidence report."
        ),
        check=canary_approval,
        resource_types=SERVING_TYPES,
        standards=(nist("CM-3"),),
        remediation=(
            "Set models[].revisions[].approved_by (who approved the promotion) before giving a named revision more "
            "than 50, or keep it at 50 or less."
        ),
        severity=Severity.HIGH,
    ),
]


PDB = "kubernetes:policy/v1:PodDisruptionBudget"


def _selects(selector: Any, labels: Mapping[str, Any]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects pods with `labels`."""
    if not isinstance(selector, Mapping):
        return False
    match = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    # policy/v1: an empty selector ({}) selects every pod of the namespace.
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for e in expressions:
        if not isinstance(e, Mapping):
            return False
        key, op, values = str(e.get("key")), e.get("operator"), list(e.get("values") or [])
        present = key in labels
        if op == "In" and not (present and labels.get(key) in values):
            return False
        if op == "NotIn" and present and labels.get(key) in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def pdb_per_serving_workload(args: StackValidationArgs) -> list[tuple[str, str | None]]:
    config = args.get_config()
    budgets = [
        (get_path(r.props, ("metadata", "namespace")), get_path(r.props, ("spec", "selector")))
        for r in args.resources
        if r.resource_type == PDB
    ]
    out: list[tuple[str, str | None]] = []
    for r in args.resources:
        if r.resource_type not in SERVING_TYPES or not any(True for _ in _vllm_servers(r.resource_type, r.props)):
            continue
        namespace = get_path(r.props, ("metadata", "namespace"))
        if exemption_for(config, namespace if isinstance(namespace, str) else None) is not None:
            continue
        labels = pod_templates(r.resource_type, r.props)[0].metadata.get("labels") or {}
        if not any(ns == namespace and _selects(sel, labels) for ns, sel in budgets):
            name = get_path(r.props, ("metadata", "name"))
            out.append(
                (
                    f"{r.resource_type.rsplit(':', 1)[-1]} {namespace}/{name} serves a model but no "
                    "PodDisruptionBudget in its namespace selects its pods: a node drain could take every replica",
                    r.urn,
                )
            )
    return out


INFERENCE_STACK_RULES: list[StackRule] = [
    StackRule(
        name="pdb-per-serving-workload",
        description=(
            "Every model-serving Deployment, StatefulSet or LeaderWorkerSet has a PodDisruptionBudget selecting its "
            "pods: node drains and upgrades take replicas down one at a time."
        ),
        check=pdb_per_serving_workload,
        standards=(owasp("LLM10: Unbounded Consumption"), nsa("High availability")),
        remediation="Add a policy/v1 PodDisruptionBudget (maxUnavailable: 1) whose selector matches the pod labels.",
        severity=Severity.MEDIUM,
    )
]
