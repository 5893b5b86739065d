"""How the platform's parts fit together in every shipped stack, read from the offline render: each namespace's quota
admits exactly the external Services it receives, Harbor has an entry point the policies accept, every network
allow has its counterpart, every image pull has its pull secret, the charts needed before Harbor exists come from
the bootstrap registry, and a stack that cannot be built fails before anything is registered."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

import infra.platform
from infra.builders.guardrails import guardrails_args
from infra.config import FULL_PLATFORM_KEY, LOG_SHIPPER_NAMESPACE, PlatformSpec, StackConfigError, parse_platform
from infra.offline import OfflineError, Recording, chart_document, load_stack_config, run_program
from infra.pack_config import stack_policy_config
from infra.tools.checks import spec_of
from policies.base import containers, get_path, pod_templates
from policies.tls import SERVICE, exposure
from tests.conftest import ROOT, run
from tests.stacks.test_stacks import SHIPPED

STACKS = sorted(SHIPPED)
NAME_LABEL = "kubernetes.io/metadata.name"


@functools.cache
def rendered(stack: str) -> tuple[Recording, PlatformSpec]:
    config = load_stack_config(ROOT, stack)
    return run_program(config), spec_of(config)


def variant(stack: str, change: Callable[[dict[str, Any]], None]) -> tuple[Recording, PlatformSpec]:
    """A shipped stack with its platform config changed by `change` (same name: its lock file still applies)."""
    config = load_stack_config(ROOT, stack)
    platform = json.loads(config.values[FULL_PLATFORM_KEY])
    change(platform)
    changed = dataclasses.replace(config, values={**config.values, FULL_PLATFORM_KEY: json.dumps(platform)})
    return run_program(changed), spec_of(changed)


def charts(recording: Recording) -> dict[str, dict[str, Any]]:
    """Release name → chart document (chart, version, namespace, repositoryOpts, values)."""
    return {str(doc["release"]): doc for doc in (chart_document(r) for r in recording.charts())}


def quota_of(recording: Recording, namespace: str) -> Mapping[str, str]:
    [quota] = [q for q in recording.of_kind("ResourceQuota") if q.namespace == namespace]
    hard = quota.inputs["spec"]["hard"]
    assert isinstance(hard, Mapping)
    return hard


# --------------------------------------------------------------------------------------------------------------
# 1, 2. Exposed Services and quotas
# --------------------------------------------------------------------------------------------------------------

HARBOR_EXPOSE = {"loadBalancer": "LoadBalancer", "nodePort": "NodePort"}


def exposed_services(recording: Recording) -> dict[str, tuple[int, int]]:
    """Namespace → (load balancers, node ports) that the Services it will receive count against its quota. The
    Kubernetes quota evaluator counts a LoadBalancer Service as one load balancer and one node port per Service port,
    a NodePort Service as one node port per port."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def add(namespace: str, service_type: str, ports: int) -> None:
        if service_type == "LoadBalancer":
            counts[namespace][0] += 1
        if service_type in ("LoadBalancer", "NodePort"):
            counts[namespace][1] += ports

    for service in recording.of_kind("Service"):
        spec = service.inputs["spec"]
        add(str(service.namespace), spec.get("type") or "ClusterIP", len(spec.get("ports") or []))
    # Envoy Gateway (GatewayNamespace mode) creates each Gateway's proxy Service in the Gateway's namespace: its type
    # from the EnvoyProxy the GatewayClass names, one port per listener port.
    documents = charts(recording)
    if "envoy-gateway" in documents:
        mode = get_path(documents["envoy-gateway"]["values"], ("config", "envoyGateway", "provider", "kubernetes"))
        assert get_path(mode, ("deploy", "type")) == "GatewayNamespace"
    classes = {c.object_name: c.inputs["spec"] for c in recording.of_kind("GatewayClass")}
    proxies = {(p.namespace, p.object_name): p.inputs["spec"] for p in recording.of_kind("EnvoyProxy")}
    for gateway in recording.of_kind("Gateway"):
        ref = classes[gateway.inputs["spec"]["gatewayClassName"]]["parametersRef"]
        proxy = proxies[(ref["namespace"], ref["name"])]
        service_type = get_path(proxy, ("provider", "kubernetes", "envoyService", "type")) or "LoadBalancer"
        add(str(gateway.namespace), service_type, len(gateway.inputs["spec"]["listeners"]))
    # Harbor's chart (1.19.1, templates/nginx/service.yaml): one Service `harbor`, ports http and (TLS on) https.
    for doc in documents.values():
        if str(doc["chart"]).rsplit("/", 1)[-1] == "harbor":
            expose = doc["values"]["expose"]
            ports = 2 if expose["tls"]["enabled"] else 1
            add(str(doc["namespace"]), HARBOR_EXPOSE.get(expose["type"], "ClusterIP"), ports)
    return {ns: (lb, np) for ns, (lb, np) in counts.items()}


@pytest.mark.parametrize("stack", STACKS)
def test_every_quota_admits_exactly_the_external_services_of_its_namespace(stack: str) -> None:
    recording, _ = rendered(stack)
    exposed = exposed_services(recording)
    for quota in recording.of_kind("ResourceQuota"):
        hard = quota.inputs["spec"]["hard"]
        admitted = (int(hard["services.loadbalancers"]), int(hard["services.nodeports"]))
        assert admitted == exposed.get(str(quota.namespace), (0, 0)), quota.namespace


@pytest.mark.parametrize(
    ("service_type", "admitted"), [("LoadBalancer", ("1", "1")), ("NodePort", ("0", "1")), ("ClusterIP", ("0", "0"))]
)
def test_gateway_namespace_admits_the_declared_service_type(service_type: str, admitted: tuple[str, str]) -> None:
    def change(platform: dict[str, Any]) -> None:
        platform["gateway"]["service_type"] = service_type
        # A quota the stack states is kept, except the two counts the declared Service decides.
        platform["namespaces"] = {"gateway": {"name": "llm-gateway", "quota": {"load_balancers": 5, "pods": 30}}}

    recording, spec = variant("dev", change)
    hard = quota_of(recording, spec.namespaces.gateway.name)
    assert (hard["services.loadbalancers"], hard["services.nodeports"]) == admitted
    assert hard["pods"] == "30"
    [proxy] = recording.of_kind("EnvoyProxy")
    assert proxy.inputs["spec"]["provider"]["kubernetes"]["envoyService"]["type"] == service_type


def harbor_stacks() -> list[str]:
    return [s for s in STACKS if (r := rendered(s)[1].registry) is not None and r.harbor is not None]


def harbor_service(namespace: str, service_type: str) -> dict[str, Any]:
    """The Service Harbor's chart renders (what the engine's policy pack sees once the chart is expanded)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "harbor", "namespace": namespace},
        "spec": {"type": service_type, "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]},
    }


@pytest.mark.parametrize("stack", harbor_stacks())
def test_managed_harbor_is_reachable_through_a_load_balancer_by_default(stack: str) -> None:
    recording, spec = rendered(stack)
    assert spec.registry is not None and spec.registry.harbor is not None
    registry_ns = spec.namespaces.registry.name
    harbor = charts(recording)["harbor"]
    assert harbor["namespace"] == registry_ns
    assert harbor["values"]["expose"]["type"] == "loadBalancer"
    assert harbor["values"]["expose"]["loadBalancer"]["name"] == "harbor"
    assert harbor["values"]["externalURL"] == f"https://{spec.registry.host}"
    hard = quota_of(recording, registry_ns)
    assert (hard["services.loadbalancers"], hard["services.nodeports"]) == ("1", "2")
    # The policies (preview, offline) and the admission guardrails accept Harbor's Service there, and only there.
    config = stack_policy_config(spec)
    assert registry_ns in config["gatewayNamespaces"]
    guardrails = guardrails_args(spec)
    assert guardrails is not None and list(guardrails.gateway_namespaces) == config["gatewayNamespaces"]
    assert exposure(SERVICE, harbor_service(registry_ns, "LoadBalancer"), config) == []
    assert exposure(SERVICE, harbor_service(spec.namespaces.monitoring.name, "LoadBalancer"), config) != []


def test_harbor_on_a_node_port_serves_https_on_the_port_of_registry_host() -> None:
    def change(platform: dict[str, Any]) -> None:
        platform["registry"]["host"] = "harbor.bank.internal:30443"
        platform["registry"]["harbor"]["expose"] = {"service_type": "NodePort"}

    recording, spec = variant("finance-prod", change)
    harbor = charts(recording)["harbor"]["values"]
    assert harbor["expose"]["type"] == "nodePort"
    assert harbor["expose"]["nodePort"]["ports"]["https"] == {"port": 443, "nodePort": 30443}
    assert harbor["externalURL"] == "https://harbor.bank.internal:30443"
    hard = quota_of(recording, spec.namespaces.registry.name)
    assert (hard["services.loadbalancers"], hard["services.nodeports"]) == ("0", "2")
    assert spec.namespaces.registry.name in stack_policy_config(spec)["gatewayNamespaces"]
    # The certificate names the host, not host:port.
    [cert] = [c for c in recording.of_kind("Certificate") if c.object_name == "harbor-tls"]
    assert cert.inputs["spec"]["commonName"] == "harbor.bank.internal"
    assert "harbor.bank.internal" in cert.inputs["spec"]["dnsNames"]


def test_harbor_behind_the_sites_own_load_balancer_stays_cluster_internal() -> None:
    def change(platform: dict[str, Any]) -> None:
        platform["registry"]["harbor"]["expose"] = {"service_type": "ClusterIP"}

    recording, spec = variant("finance-prod", change)
    assert charts(recording)["harbor"]["values"]["expose"]["type"] == "clusterIP"
    hard = quota_of(recording, spec.namespaces.registry.name)
    assert (hard["services.loadbalancers"], hard["services.nodeports"]) == ("0", "0")
    assert stack_policy_config(spec)["gatewayNamespaces"] == [spec.namespaces.gateway.name]


def test_harbor_load_balancer_takes_source_ranges_and_annotations() -> None:
    internal = {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}

    def change(platform: dict[str, Any]) -> None:
        platform["registry"]["harbor"]["expose"] = {"source_ranges": ["10.20.0.0/16"], "annotations": internal}

    recording, _ = variant("finance-prod", change)
    balancer = charts(recording)["harbor"]["values"]["expose"]["loadBalancer"]
    assert balancer == {"name": "harbor", "sourceRanges": ["10.20.0.0/16"], "annotations": internal}


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        (
            {
                "host": "harbor.example.internal",
                "harbor": {"bootstrap_registry": "b.internal", "expose": {"service_type": "NodePort"}},
            },
            "harbor.expose.service_type NodePort needs the node port in host (host='harbor.example.internal')",
        ),
        (
            {
                "host": "harbor.example.internal:8443",
                "harbor": {"bootstrap_registry": "b.internal", "expose": {"service_type": "NodePort"}},
            },
            "e.g. host: harbor.example.internal:30443 (30000-32767)",
        ),
        (
            {
                "host": "harbor.example.internal",
                "harbor": {
                    "bootstrap_registry": "b.internal",
                    "expose": {"service_type": "ClusterIP", "source_ranges": ["10.0.0.0/8"]},
                },
            },
            "registry.harbor.expose: source_ranges applies to service_type LoadBalancer only, not ClusterIP",
        ),
        (
            {
                "host": "harbor.example.internal",
                "harbor": {"bootstrap_registry": "b.internal", "expose": {"service_type": "Ingress"}},
            },
            "registry.harbor.expose.service_type='Ingress' is not allowed",
        ),
    ],
)
def test_harbor_exposure_mistakes_fail_in_the_schema(registry: dict[str, Any], message: str) -> None:
    with pytest.raises(StackConfigError) as info:
        parse_platform({"registry": registry}, "test")
    assert any(message in p for p in info.value.problems), info.value.problems


# --------------------------------------------------------------------------------------------------------------
# 3. Network allows on both sides
# --------------------------------------------------------------------------------------------------------------

Flow = tuple[str, str, int | None]
"""(source namespace, target namespace, TCP port; None: every port)."""


def _peer_namespaces(peers: Any) -> list[str]:
    """Namespaces named by namespaceSelector peers (ipBlock peers and same-namespace pod selectors are left out)."""
    names = []
    for peer in peers or []:
        name = get_path(peer, ("namespaceSelector", "matchLabels", NAME_LABEL))
        if isinstance(name, str):
            names.append(name)
    return names


def _ports(rule: Mapping[str, Any]) -> list[int | None]:
    ports = rule.get("ports") or []
    return [int(p["port"]) for p in ports if p.get("protocol", "TCP") == "TCP"] if ports else [None]


def network_allows(recording: Recording) -> tuple[set[Flow], set[Flow], dict[str, set[int | None]]]:
    """Every NetworkPolicy allow between the stack's own namespaces: (egress allows, ingress allows, ports each
    namespace admits from anywhere). Allows to or from CIDRs and to namespaces the stack does not render (the
    cluster's DNS) are left out."""
    ours = {n.object_name for n in recording.of_kind("Namespace")}
    egress: set[Flow] = set()
    ingress: set[Flow] = set()
    anywhere: dict[str, set[int | None]] = defaultdict(set)
    for policy in recording.of_kind("NetworkPolicy"):
        ns = str(policy.namespace)
        spec = policy.inputs["spec"]
        for rule in spec.get("egress") or []:
            for target in _peer_namespaces(rule.get("to")):
                if target in ours and target != ns:
                    egress |= {(ns, target, port) for port in _ports(rule)}
        for rule in spec.get("ingress") or []:
            if not rule.get("from"):
                anywhere[ns].update(_ports(rule))
            for source in _peer_namespaces(rule.get("from")):
                if source in ours and source != ns:
                    ingress |= {(source, ns, port) for port in _ports(rule)}
    return egress, ingress, anywhere


@pytest.mark.parametrize("stack", STACKS)
def test_every_network_allow_has_its_counterpart(stack: str) -> None:
    """Under default-deny a connection needs the sender's egress allow and the receiver's ingress allow: one without
    the other is a scrape (or call) that never arrives, or an opening nothing uses."""
    recording, _ = rendered(stack)
    egress, ingress, anywhere = network_allows(recording)
    assert egress and ingress
    unanswered = sorted(
        f"{source} may send to {target}:{port}, but {target} does not admit it"
        for source, target, port in egress
        if (source, target, port) not in ingress and port not in anywhere[target] and None not in anywhere[target]
    )
    unused = sorted(
        f"{target} admits {source} on {port}, but {source} may not send there"
        for source, target, port in ingress
        if (source, target, port) not in egress
    )
    assert unanswered + unused == [], "\n".join(unanswered + unused)


@pytest.mark.parametrize("stack", STACKS)
def test_prometheus_reaches_every_metrics_endpoint_of_the_stack(stack: str) -> None:
    recording, spec = rendered(stack)
    egress, ingress, _ = network_allows(recording)
    monitoring = spec.namespaces.monitoring.name
    expected = {(monitoring, spec.namespaces.pki.name, 9402)}
    if spec.registry is not None and spec.registry.harbor is not None:
        expected.add((monitoring, spec.namespaces.registry.name, 8001))
    if spec.logging.enabled:
        expected.add((monitoring, LOG_SHIPPER_NAMESPACE, 2020))
    assert expected <= egress & ingress
    if spec.logging.enabled:
        assert charts(recording)["fluent-bit"]["values"]["serviceMonitor"] == {"enabled": True}


def test_models_admit_no_gateway_where_the_stack_has_none() -> None:
    recording, spec = rendered("gov-airgap")
    assert spec.gateway is None
    for policy in recording.of_kind("NetworkPolicy"):
        if policy.object_name.endswith("-serving"):
            [rule] = policy.inputs["spec"]["ingress"]
            assert _peer_namespaces(rule["from"]) == [spec.namespaces.monitoring.name]


def test_models_admit_nobody_without_gateway_and_monitoring() -> None:
    def change(platform: dict[str, Any]) -> None:
        platform["observability"] = {"enabled": False}

    recording, _ = variant("gov-airgap", change)
    serving = [p for p in recording.of_kind("NetworkPolicy") if p.object_name.endswith("-serving")]
    assert serving
    for policy in serving:
        # No ingress rule at all: a rule without `from` would admit every source.
        assert policy.inputs["spec"]["policyTypes"] == ["Ingress"]
        assert not policy.inputs["spec"].get("ingress")
    egress, ingress, _ = network_allows(recording)
    assert {f for f in egress | ingress if "llm-monitoring" in f[:2]} == set()


# --------------------------------------------------------------------------------------------------------------
# 4. Pull secrets
# --------------------------------------------------------------------------------------------------------------

ECK_TEMPLATES: dict[str, tuple[tuple[str, ...], ...]] = {
    "Elasticsearch": (("spec", "nodeSets", "*", "podTemplate"),),
    "Kibana": (("spec", "podTemplate"),),
}


def _at(obj: Any, path: tuple[str, ...]) -> Iterator[Any]:
    if not path:
        yield obj
        return
    head, rest = path[0], path[1:]
    if head == "*":
        for item in obj if isinstance(obj, list) else []:
            yield from _at(item, rest)
    elif isinstance(obj, Mapping) and head in obj:
        yield from _at(obj[head], rest)


def workloads(recording: Recording) -> Iterator[tuple[str, str, list[str], list[str]]]:
    """(object, namespace, images, imagePullSecrets names) of every pod template the stack renders."""
    for o in recording.kubernetes_objects():
        specs: list[Mapping[str, Any]] = [t.spec for t in pod_templates(o.type, o.inputs)]
        images: list[str] = []
        for path in ECK_TEMPLATES.get(o.kind, ()):
            images.append(str(o.inputs["spec"]["image"]))
            specs += [t.get("spec") or {} for t in _at(o.inputs, path)]
        if not specs:
            continue
        for spec in specs:
            images += [str(c.get("image")) for _, c in containers(spec)]
        pulls = [str(p["name"]) for spec in specs for p in spec.get("imagePullSecrets") or []]
        yield o.display(), str(o.namespace), images, pulls


def _values_pull_secrets(values: Any) -> Iterator[str]:
    """Names under every `imagePullSecrets` / `pullSecrets` key of chart values (references or plain names)."""
    if isinstance(values, Mapping):
        for key, value in values.items():
            if key in ("imagePullSecrets", "pullSecrets") and isinstance(value, list):
                yield from (str(v["name"]) if isinstance(v, Mapping) else str(v) for v in value)
            else:
                yield from _values_pull_secrets(value)
    elif isinstance(values, list):
        for item in values:
            yield from _values_pull_secrets(item)


def _values_strings(values: Any) -> Iterator[str]:
    if isinstance(values, Mapping):
        for value in values.values():
            yield from _values_strings(value)
    elif isinstance(values, list):
        for item in values:
            yield from _values_strings(item)
    elif isinstance(values, str):
        yield values


def private_registry(spec: PlatformSpec) -> bool:
    """Pulls from registry.host need credentials: Harbor's projects are private; another registry when the stack
    names its pull secret."""
    registry = spec.registry
    return registry is not None and (registry.harbor is not None or registry.pull_secret_name is not None)


def pull_secrets_present(recording: Recording, spec: PlatformSpec) -> dict[str, set[str]]:
    """Namespace → dockerconfigjson Secrets there: rendered by the stack, or (a registry the platform does not
    manage) the stack's `registry.pull_secret_name`, a documented prerequisite in every namespace."""
    present: dict[str, set[str]] = defaultdict(set)
    for secret in recording.of_kind("Secret"):
        if secret.inputs.get("type") == "kubernetes.io/dockerconfigjson":
            present[str(secret.namespace)].add(secret.object_name)
    if spec.registry is not None and spec.registry.harbor is None and spec.registry.pull_secret_name:
        for ns in recording.of_kind("Namespace"):
            present[ns.object_name].add(spec.registry.pull_secret_name)
    return present


@pytest.mark.parametrize("stack", STACKS)
def test_every_pod_pulling_from_the_private_registry_has_a_pull_secret_that_exists(stack: str) -> None:
    recording, spec = rendered(stack)
    assert spec.registry is not None
    present = pull_secrets_present(recording, spec)
    private = private_registry(spec)
    seen = 0
    for what, namespace, images, pulls in workloads(recording):
        missing = sorted(set(pulls) - present[namespace])
        assert missing == [], f"{what} names pull secrets {missing} that do not exist in {namespace}"
        if private and any(image.startswith(f"{spec.registry.host}/") for image in images):
            seen += 1
            assert pulls, f"{what} pulls from {spec.registry.host} without a pull secret"
    assert seen > 0 or not private


@pytest.mark.parametrize("stack", STACKS)
def test_every_chart_pulling_from_the_private_registry_has_a_pull_secret_that_exists(stack: str) -> None:
    recording, spec = rendered(stack)
    assert spec.registry is not None
    present = pull_secrets_present(recording, spec)
    private = private_registry(spec)
    gateways = {str(g.namespace) for g in recording.of_kind("Gateway")}
    for release, doc in charts(recording).items():
        values, namespace = doc["values"], str(doc["namespace"])
        pulls = set(_values_pull_secrets(values))
        # Envoy Gateway's global pull secrets also go to the proxies it runs in each Gateway's namespace.
        where = {namespace} | (gateways if release == "envoy-gateway" else set())
        for ns in sorted(where):
            assert pulls <= present[ns], f"chart {release}: pull secrets {sorted(pulls - present[ns])} not in {ns}"
        if private and any(s.startswith(f"{spec.registry.host}/") for s in _values_strings(values)):
            assert pulls, f"chart {release} pulls from {spec.registry.host} without a pull secret"


@pytest.mark.parametrize("stack", harbor_stacks())
def test_harbor_gives_every_pulling_namespace_a_robot(stack: str) -> None:
    recording, spec = rendered(stack)
    robots = {r.inputs["name"] for r in recording.resources if r.type == "harbor:index/robotAccount:RobotAccount"}
    for ns in (spec.namespaces.monitoring.name, spec.namespaces.logging.name, LOG_SHIPPER_NAMESPACE):
        assert f"pull-{ns}" in robots
    # Each namespace exists before Harbor puts its pull secret there.
    index = recording.by_urn()
    [harbor] = [r for r in recording.resources if r.type == "privatellm:registry:Harbor"]
    waits_for = {
        index[u].object_name for u in harbor.options.get("dependsOn", []) if u in index and index[u].kind == "Namespace"
    }
    assert {LOG_SHIPPER_NAMESPACE, spec.namespaces.monitoring.name, spec.namespaces.logging.name} <= waits_for


# --------------------------------------------------------------------------------------------------------------
# 5. Charts before Harbor exists
# --------------------------------------------------------------------------------------------------------------

PRE_HARBOR = ("cert-manager", "trust-manager", "harbor")


@pytest.mark.parametrize("stack", [s for s in harbor_stacks() if rendered(s)[1].registry.air_gapped])  # type: ignore[union-attr]
def test_air_gapped_first_deploy_takes_pre_harbor_charts_from_the_bootstrap_registry(stack: str) -> None:
    recording, spec = rendered(stack)
    assert spec.registry is not None and spec.registry.harbor is not None
    bootstrap = f"oci://{spec.registry.harbor.bootstrap_registry}/{spec.registry.charts_project}"
    for release, doc in charts(recording).items():
        chart_name = str(doc["chart"]).rsplit("/", 1)[-1]
        if release in PRE_HARBOR:
            assert doc["chart"] == f"{bootstrap}/{chart_name}", release
        else:
            assert str(doc["chart"]).startswith(f"oci://{spec.registry.host}/"), release
        assert doc["repositoryOpts"] is None, release


def test_bootstrap_charts_location_from_the_stack() -> None:
    def change(platform: dict[str, Any]) -> None:
        platform["registry"]["harbor"]["bootstrap_charts"] = "oci://bootstrap.bank.internal:5000/helm"

    recording, _ = variant("finance-prod", change)
    documents = charts(recording)
    for release in PRE_HARBOR:
        assert documents[release]["chart"] == f"oci://bootstrap.bank.internal:5000/helm/{release}"


def test_connected_site_takes_pre_harbor_charts_upstream() -> None:
    def change(platform: dict[str, Any]) -> None:
        platform["registry"]["air_gapped"] = False

    recording, _ = variant("finance-prod", change)
    documents = charts(recording)
    assert documents["harbor"]["chart"] == "harbor"
    assert documents["harbor"]["repositoryOpts"] == {"repo": "https://helm.goharbor.io"}
    assert documents["cert-manager"]["chart"] == "oci://quay.io/jetstack/charts/cert-manager"


def test_bootstrap_charts_must_be_an_oci_location() -> None:
    raw = {
        "registry": {
            "host": "harbor.example.internal",
            "harbor": {"bootstrap_registry": "b.internal", "bootstrap_charts": "https://charts.example.internal"},
        }
    }
    with pytest.raises(StackConfigError) as info:
        parse_platform(raw, "test")
    [problem] = info.value.problems
    assert problem.startswith(
        "privatellm:platform.registry.harbor.bootstrap_charts='https://charts.example.internal' must be an OCI location"
    )


# --------------------------------------------------------------------------------------------------------------
# 6. Stacks that cannot be built fail before anything is registered
# --------------------------------------------------------------------------------------------------------------


def dev_platform(**drop: bool) -> dict[str, Any]:
    config = load_stack_config(ROOT, "dev")
    platform: dict[str, Any] = json.loads(config.values[FULL_PLATFORM_KEY])
    return {k: v for k, v in platform.items() if not drop.get(k)}


def test_gpu_pools_without_registry_fail_naming_the_field_before_anything_is_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def registered(*_: Any, **__: Any) -> Any:
        raise AssertionError("a resource was registered before the stack was validated")

    monkeypatch.setattr(infra.platform, "cluster_provider", registered)
    with pytest.raises(OfflineError) as info:
        run(platform=dev_platform(registry=True, models=True, gateway=True), stack="noreg")
    message = str(info.value)
    assert "AssertionError" not in message
    assert isinstance(info.value.__cause__, StackConfigError)
    [problem] = info.value.__cause__.problems
    assert problem.startswith("privatellm:platform.registry is not set, but node_pools with gpu_operator.enabled")
    assert "add registry: {host: harbor.example.internal}, or set gpu_operator.enabled: false" in problem


def test_gpu_pools_without_operator_need_no_registry() -> None:
    platform = dev_platform(registry=True, models=True, gateway=True)
    platform["gpu_operator"] = {"enabled": False}
    recording = run(platform=platform, stack="pools-only")
    assert [r for r in recording.resources if r.type == "privatellm:gpu:GpuNodePool"]
    assert not recording.charts()


# ---------------------------------------------------------------------------------------------------------------
# PriorityClasses: a model's priority_class must exist; declared ones are created before the model servers
# ---------------------------------------------------------------------------------------------------------------


def finance_raw() -> dict[str, Any]:
    import yaml

    raw: dict[str, Any] = yaml.safe_load((ROOT / "stacks" / "Pulumi.finance-prod.yaml").read_text())["config"][
        FULL_PLATFORM_KEY
    ]
    return raw


def test_priority_class_of_a_model_must_be_declared_or_existing() -> None:
    raw = finance_raw()
    raw["inference"] = {}
    with pytest.raises(StackConfigError) as info:
        parse_platform(raw, "test")
    assert any(
        "models[0].priority_class='llm-serving' names no PriorityClass" in p and "inference.priority_classes" in p
        for p in info.value.problems
    )
    raw["inference"] = {"existing_priority_classes": ["llm-serving"]}
    assert parse_platform(raw, "test").inference.existing_priority_classes == ["llm-serving"]
    raw["inference"] = {"priority_classes": {"llm-serving": {"value": 2_000_000_000}}}
    with pytest.raises(StackConfigError):
        parse_platform(raw, "test")  # above the user-defined maximum (1e9)


def test_declared_priority_classes_are_created_before_the_models() -> None:
    recording, _ = rendered("finance-prod")
    [pc] = [r for r in recording.kubernetes_objects() if r.kind == "PriorityClass"]
    assert pc.object_name == "llm-serving" and pc.inputs["value"] == 100000 and pc.inputs["globalDefault"] is False
    deployments = [
        r for r in recording.kubernetes_objects() if r.kind == "Deployment" and r.namespace == "llm-inference"
    ]
    assert deployments
    for d in deployments:
        assert d.inputs["spec"]["template"]["spec"]["priorityClassName"] == "llm-serving"
    # every model server component waits for the class
    servers = [r for r in recording.resources if r.type == "privatellm:inference:VllmService"]
    assert servers and all(pc.urn in r.options.get("dependsOn", []) for r in servers)
