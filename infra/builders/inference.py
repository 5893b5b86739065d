"""The model servers: vLLM arguments per placed model, the LeaderWorkerSet and KEDA charts, priority classes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.base import RESTRICTED_CONTAINER, RESTRICTED_POD
from components.gpu_pools import SchedulingContract
from components.labels import standard_labels
from components.pki import Pki
from components.vllm import (
    Autoscaling,
    Benchmark,
    GpuScheduling,
    ModelStore,
    Revision,
    ServingTls,
    VllmService,
    VllmServiceArgs,
)
from infra.builders.base import Site, registry_repo_tag
from infra.builders.gpu import GpuStack
from infra.builders.namespaces import (
    namespace_flows,
)
from infra.builders.pki import METRICS_CLIENT_SECRET, serving_tls
from infra.catalog import (
    IMAGES,
    Image,
)
from infra.config import (
    PlatformSpec,
    RegistrySpec,
    config_secret,
)
from infra.errors import building
from infra.pack_config import image_scanner_skips
from infra.placement import DEFAULT_BANDWIDTH_GBPS, PlacedModel, free_gpus


def lws_values(registry: RegistrySpec, images: Mapping[str, Image] = IMAGES) -> dict[str, Any]:
    """Values of the LeaderWorkerSet controller chart (kubernetes-sigs/lws, charts/lws/values.yaml)."""
    image = images["lws"]
    return {
        "image": {
            "manager": {"repository": image.full_name(registry), "tag": image.pinned_tag, "pullPolicy": "IfNotPresent"}
        },
        "podSecurityContext": RESTRICTED_POD,
        "securityContext": RESTRICTED_CONTAINER,
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "enablePrometheus": False,
    }


def keda_values(registry: RegistrySpec, images: Mapping[str, Image] = IMAGES) -> dict[str, Any]:
    """Values of the KEDA chart (kedacore/charts, keda/values.yaml): images through the registry, restricted pods."""
    rendered: dict[str, Any] = {}
    for key, name in (
        ("keda", "keda"),
        ("metricsApiServer", "keda-metrics-apiserver"),
        ("webhooks", "keda-admission-webhooks"),
    ):
        rendered[key] = registry_repo_tag(images[name], registry)
    rendered["pullPolicy"] = "IfNotPresent"
    components = ("operator", "metricServer", "webhooks")
    return {
        "image": rendered,
        "securityContext": {c: RESTRICTED_CONTAINER for c in components},
        "podSecurityContext": {c: RESTRICTED_POD for c in components},
        "resources": {
            c: {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1000Mi"}}
            for c in components
        },
        "service": {"minTlsVersion": "TLS13"},
        "prometheus": {"operator": {"enabled": True}, "metricServer": {"enabled": True}},
    }


def vllm_service_args(
    spec: PlatformSpec,
    model: PlacedModel,
    placed: list[PlacedModel],
    tls: ServingTls | None = None,
    prometheus_url: str | None = None,
    contract: SchedulingContract | None = None,
    pull_secret: str | None = None,
    images: Mapping[str, Image] = IMAGES,
    gateway_namespace: str | None = None,
    monitoring_namespace: str | None = None,
) -> VllmServiceArgs:
    """The component's arguments for one placed model. `gateway_namespace` and `monitoring_namespace`: the client
    namespaces its serving policy admits (those whose egress allows reach the model; `build_inference`)."""
    m, p, pool = model.spec, model.plan, model.pool
    assert spec.registry is not None
    storage = m.storage
    bandwidth = storage.bandwidth_gbps or DEFAULT_BANDWIDTH_GBPS[storage.type]
    weight_gib = model.weight_bytes / 2**30
    if storage.type == "s3":
        store = ModelStore(
            kind="s3",
            path=f"s3://{storage.bucket}/{(storage.prefix or m.name).strip('/')}",
            s3_endpoint=storage.endpoint,
            s3_region=storage.region,
            s3_access_key_id=config_secret(str(storage.access_key_id_secret)),
            s3_secret_access_key=config_secret(str(storage.secret_access_key_secret)),
            s3_egress_cidrs=list(storage.egress_cidrs),
            bandwidth_gbps=bandwidth,
        )
    else:
        store = ModelStore(
            kind="pvc",
            path=storage.path or m.name,
            claim_name=storage.existing_claim or f"{m.name}-weights",
            create_claim=storage.existing_claim is None,
            size=storage.size or f"{math.ceil(weight_gib * 1.25) + 10}Gi",
            storage_class=storage.storage_class,
            access_mode=storage.access_mode,
            bandwidth_gbps=bandwidth,
        )
    autoscaling = None
    if m.autoscaling.enabled:
        autoscaling = Autoscaling(
            min_replicas=m.autoscaling.min_replicas if m.autoscaling.min_replicas is not None else model.replicas,
            max_replicas=int(m.autoscaling.max_replicas or model.replicas),
            waiting_threshold=m.autoscaling.waiting_threshold,
            prometheus_url=prometheus_url or f"http://prometheus-operated.{spec.namespaces.monitoring.name}.svc:9090",
        )
    bench = spec.inference.benchmark
    return VllmServiceArgs(
        name=m.name,
        namespace=spec.namespaces.inference.name,
        instance=spec.name,
        image=images["vllm"].render(spec.registry),
        scanner_skips=image_scanner_skips(spec, images["vllm"].render(spec.registry)),
        served_model_name=m.served_name,
        tensor_parallel_size=p.tensor_parallel_size,
        pipeline_parallel_size=p.pipeline_parallel_size,
        replicas=model.replicas,
        max_model_len=p.max_model_len,
        gpu_memory_utilization=p.gpu_memory_utilization,
        max_num_seqs=m.max_num_seqs or p.max_num_seqs,
        quantization=m.quantization,
        kv_cache_dtype=m.kv_cache_dtype,
        prefix_caching=m.prefix_caching,
        scheduling=GpuScheduling(
            node_selector=dict(contract.node_selector) if contract else pool.selector,
            tolerations=[dict(t) for t in contract.tolerations]
            if contract
            else [t.model_dump(exclude_none=True) for t in pool.pool_tolerations],
            gpu_resource=contract.gpu_resource if contract else pool.gpu_resource,
            gpus_per_node=contract.gpus_per_node if contract else pool.gpus_per_node,
            priority_class=m.priority_class,
        ),
        store=store,
        weight_bytes=model.weight_bytes,
        gateway_namespace=gateway_namespace,
        monitoring_namespace=monitoring_namespace,
        integrity_manifest=model.integrity_manifest,
        integrity_configmap=m.integrity.configmap if m.integrity else None,
        tls=tls,
        extra_args=list(m.extra_args),
        trust_remote_code=m.trust_remote_code,
        autoscaling=autoscaling,
        benchmark=Benchmark(bench.concurrency, bench.num_prompts, bench.input_len, bench.output_len)
        if bench.enabled
        else None,
        surge_allowed=free_gpus(placed, pool) >= model.gpus_per_replica,
        max_output_tokens=spec.gateway.max_tokens if spec.gateway is not None else None,
        image_pull_secrets=[pull_secret] if pull_secret else [],
        revision=Revision(model.revision.label, model.revision.weight, model.revision.approved_by)
        if model.revision is not None
        else None,
    )


def controller_charts(models: list[PlacedModel]) -> list[str]:
    """Catalog keys of the controllers the model servers need: LeaderWorkerSet for models across nodes, KEDA for
    autoscaled ones."""
    charts: list[str] = []
    if any(m.plan.pipeline_parallel_size > 1 for m in models):
        charts.append("lws")
    if any(m.spec.autoscaling.enabled for m in models):
        charts.append("keda")
    return charts


def build_inference(
    site: Site, models: list[PlacedModel], gpu: GpuStack, pki: Pki | None, pulls: list[pulumi.Resource]
) -> dict[str, VllmService]:
    """One `VllmService` per placed model (by name), after its controllers (LeaderWorkerSet for multi-node models, KEDA
    for autoscaled ones), the GPU stack, the pull secrets and the priority classes the platform creates."""
    if not models:
        return {}
    spec = site.spec
    operators_ns = spec.namespaces.operators.name
    wanted = controller_charts(models)
    controllers = [
        site.install_chart(name, operators_ns, values(site.registry, site.images), site.namespaces[operators_ns])
        for name, values in (("lws", lws_values), ("keda", keda_values))
        if name in wanted
    ]
    priority_classes = [
        k8s.scheduling.v1.PriorityClass(
            f"priority-{name}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=name, labels=standard_labels(name=name, instance=spec.name, component="scheduling")
            ),
            value=pc.value,
            preemption_policy=pc.preemption_policy,
            global_default=False,
            description=pc.description,
            opts=site.opts,
        )
        for name, pc in sorted(spec.inference.priority_classes.items())
    ]
    model_opts = site.after(
        site.namespaces[spec.namespaces.inference.name], controllers, gpu.resources, pulls, priority_classes
    )
    if pki is not None:
        # Prometheus scrapes every model over mTLS with this client certificate (ServiceMonitors read it here).
        pki.certificate(
            "cert-metrics-client", spec.namespaces.inference.name, METRICS_CLIENT_SECRET, "prometheus", usage="client"
        )
    # The namespaces whose egress allows reach the models: each model's serving policy admits exactly those.
    clients = {
        f.source: f.source
        for f in namespace_flows(spec)
        if f.target == spec.namespaces.inference.name and f.admitted_by_workload
    }
    services: dict[str, VllmService] = {}
    for model in models:
        with building(model.spec.name, "privatellm:inference:VllmService"):
            args = vllm_service_args(
                spec,
                model,
                models,
                contract=gpu.pools[model.pool.name].contract,
                pull_secret=site.pull_secret,
                images=site.images,
                tls=serving_tls(spec, pki, model),
                gateway_namespace=clients.get(spec.namespaces.gateway.name),
                monitoring_namespace=clients.get(spec.namespaces.monitoring.name),
            )
            services[model.spec.name] = VllmService(model.spec.name, args, opts=model_opts)
    return services
