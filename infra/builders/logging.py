"""Logging: the ECK operator and Fluent Bit values, Elasticsearch and Kibana certificates, the logging stack."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from components.base import RESTRICTED_CONTAINER, RESTRICTED_POD
from components.logging import WRITER_SECRET, LoggingArgs, LoggingStack
from components.observability import MonitoringStack
from components.pki import Pki, service_dns_names
from infra.builders.base import Site
from infra.catalog import (
    IMAGES,
    Image,
)
from infra.config import (
    LOG_SHIPPER_NAMESPACE,
    RegistrySpec,
)
from infra.errors import build
from infra.features import observability_features, runs_logging
from infra.observability.fluentbit import fluent_bit_values_fragment
from infra.observability.ilm import lifecycle_documents
from infra.pack_config import image_scanner_skips
from infra.profiles import PROFILE_SETTINGS

ELASTICSEARCH_TLS_SECRET = "elasticsearch-tls"


KIBANA_TLS_SECRET = "kibana-tls"


def eck_operator_values(
    registry: RegistrySpec, managed_namespaces: list[str], images: Mapping[str, Image] = IMAGES
) -> dict[str, Any]:
    """ECK operator 3.5.0: manages only the logging namespace; restricted pod; the stack images are set on each
    Elasticsearch/Kibana object from the catalog."""
    image = images["eck-operator"]
    return {
        "installCRDs": True,
        "image": {"repository": image.full_name(registry), "tag": image.pinned_tag},
        "managedNamespaces": list(managed_namespaces),
        "podSecurityContext": RESTRICTED_POD,
        "securityContext": RESTRICTED_CONTAINER,
        "config": {"containerRegistry": registry.host},
    }


def fluent_bit_values(
    registry: RegistrySpec,
    elasticsearch_host: str,
    writer_secret: str,
    ca_configmap: str,
    gateway_namespace: str | None,
    extra_patterns: list[str],
    images: Mapping[str, Image] = IMAGES,
    service_monitor: bool = False,
) -> dict[str, Any]:
    """Fluent Bit chart 0.58.1: container logs and the gateway's audit log to Elasticsearch over verified TLS as a
    least-privilege user, every record through the PII redaction filter before it leaves the node. The node's log
    folder is mounted read-only; the pod is otherwise as locked down as reading root-owned logs allows. With
    `service_monitor` (the monitoring stack's CRDs present) Prometheus scrapes its metrics on port 2020."""
    image = images["fluent-bit"]
    fragment = fluent_bit_values_fragment(list(extra_patterns))
    audit_path = f"/var/log/containers/*_{gateway_namespace}_envoy-*.log" if gateway_namespace else None
    inputs = [
        "[INPUT]\n    Name tail\n    Path /var/log/containers/*.log\n"
        + (f"    Exclude_Path {audit_path}\n" if audit_path else "")
        + "    multiline.parser docker, cri\n    Tag kube.*\n    Mem_Buf_Limit 5MB\n    Skip_Long_Lines On\n"
    ]
    if audit_path:
        inputs.append(
            f"[INPUT]\n    Name tail\n    Path {audit_path}\n    multiline.parser docker, cri\n    Tag audit.*\n"
            "    Mem_Buf_Limit 5MB\n    Skip_Long_Lines On\n"
        )
    audit_parser = (
        "[FILTER]\n    Name parser\n    Match audit.*\n    Key_Name log\n    Parser json\n    Reserve_Data On\n"
        if audit_path
        else ""
    )

    def output(match: str, prefix: str) -> str:
        return (
            f"[OUTPUT]\n    Name es\n    Match {match}\n    Host {elasticsearch_host}\n    Port 9200\n"
            f"    Logstash_Format On\n    Logstash_Prefix {prefix}\n    Suppress_Type_Name On\n    Replace_Dots On\n"
            "    tls On\n    tls.verify On\n    tls.ca_file /etc/platform-ca/ca.crt\n"
            "    HTTP_User ${ES_USER}\n    HTTP_Passwd ${ES_PASSWORD}\n    Retry_Limit False\n"
        )

    outputs = [output("kube.*", "privatellm-app")]
    if audit_path:
        outputs.append(output("audit.*", "privatellm-audit"))
    secret_env = [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": writer_secret, "key": key}}}
        for env, key in (("ES_USER", "username"), ("ES_PASSWORD", "password"))
    ]
    return {
        "image": {"repository": image.full_name(registry), "tag": image.pinned_tag, "pullPolicy": "IfNotPresent"},
        "testFramework": {"enabled": False},
        "serviceMonitor": {"enabled": service_monitor},
        "podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        # Root to read the root-owned container logs; nothing else: no capabilities, read-only root filesystem.
        "securityContext": {
            "runAsUser": 0,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "env": secret_env,
        "daemonSetVolumes": [
            {"name": "varlog", "hostPath": {"path": "/var/log"}},
            {"name": "etcmachineid", "hostPath": {"path": "/etc/machine-id", "type": "File"}},
        ],
        "daemonSetVolumeMounts": [
            {"name": "varlog", "mountPath": "/var/log", "readOnly": True},
            {"name": "etcmachineid", "mountPath": "/etc/machine-id", "readOnly": True},
        ],
        "extraVolumes": [{"name": "platform-ca", "configMap": {"name": ca_configmap}}],
        "extraVolumeMounts": [{"name": "platform-ca", "mountPath": "/etc/platform-ca", "readOnly": True}],
        "luaScripts": fragment["luaScripts"],
        "config": {
            "inputs": "".join(inputs),
            "filters": audit_parser + fragment["config"]["filters"],
            "outputs": "".join(outputs),
        },
    }


def build_logging(
    site: Site, pki: Pki | None, monitoring: MonitoringStack | None, pulls: list[pulumi.Resource]
) -> LoggingStack | None:
    """ECK operator, Elasticsearch, Kibana, index lifecycle, and Fluent Bit with PII redaction on every node (its
    metrics scraped when `monitoring` runs)."""
    spec = site.spec
    registry = spec.registry
    if not runs_logging(spec) or registry is None or pki is None:
        return None
    ns = spec.namespaces.logging.name
    operators_ns = spec.namespaces.operators.name
    nodes = spec.logging.elasticsearch_nodes or PROFILE_SETTINGS[spec.profile].elasticsearch_nodes
    cluster = f"{spec.name}-logs"
    pki.certificate(
        "cert-elasticsearch",
        ns,
        ELASTICSEARCH_TLS_SECRET,
        f"{cluster}-es-http",
        service_dns_names(f"{cluster}-es-http", ns),
    )
    pki.certificate(
        "cert-kibana", ns, KIBANA_TLS_SECRET, f"{cluster}-kb-http", service_dns_names(f"{cluster}-kb-http", ns)
    )
    operator = site.install_chart(
        "eck-operator",
        operators_ns,
        eck_operator_values(registry, [ns], site.images),
        site.namespaces[operators_ns],
        pulls,
    )
    images = site.images
    pull = site.pull_secret
    args = LoggingArgs(
        namespace=ns,
        instance=spec.name,
        version=images["elasticsearch"].tag,
        elasticsearch_image=images["elasticsearch"].render(registry),
        kibana_image=images["kibana"].render(registry),
        exporter_image=images["elasticsearch-exporter"].render(registry),
        image_scanner_skips={
            image: image_scanner_skips(spec, image)
            for image in (images["elasticsearch"].render(registry), images["elasticsearch-exporter"].render(registry))
        },
        nodes=nodes,
        storage_size=spec.logging.storage_size,
        storage_class=spec.logging.storage_class,
        elasticsearch_tls_secret=ELASTICSEARCH_TLS_SECRET,
        kibana_tls_secret=KIBANA_TLS_SECRET,
        ca_configmap=pki.ca_configmap,
        lifecycle_documents=lifecycle_documents(
            spec.audit_retention_days, spec.app_retention_days, nodes, revisions=any(m.revisions for m in spec.models)
        ),
        shipper_namespace=LOG_SHIPPER_NAMESPACE,
        reader_namespace=spec.namespaces.monitoring.name if "audit-log" in observability_features(spec) else None,
        image_pull_secrets=(pull,) if pull else (),
    )
    depends = site.after(site.namespaces[ns], site.namespaces[LOG_SHIPPER_NAMESPACE], operator, pki, pulls)
    logging = build("logging", "privatellm:logging:LoggingStack", lambda: LoggingStack("logging", args, opts=depends))
    values = fluent_bit_values(
        registry,
        elasticsearch_host=f"{cluster}-es-http.{ns}.svc",
        writer_secret=WRITER_SECRET,
        ca_configmap=pki.ca_configmap,
        gateway_namespace=spec.namespaces.gateway.name if spec.gateway is not None else None,
        extra_patterns=list(spec.logging.redaction_patterns),
        images=images,
        service_monitor=monitoring is not None,
    )
    # With monitoring, the ServiceMonitor CRD comes from its chart.
    site.install_chart("fluent-bit", LOG_SHIPPER_NAMESPACE, values, logging, pulls, [monitoring] if monitoring else [])
    return logging
