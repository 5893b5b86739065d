"""Logs: Elasticsearch and Kibana (managed by ECK), least-privilege users, index lifecycle, an exporter.

`LoggingStack` creates in the logging namespace
- an Elasticsearch cluster serving a PKI certificate, its data volumes kept when the cluster is deleted
  (`volumeClaimDeletePolicy: DeleteOnScaledownOnly`), restricted pods (`node.store.allow_mmap: false`, so no
  privileged sysctl init container);
- Kibana serving a PKI certificate;
- three file-realm users with generated passwords: a log writer (create documents in `privatellm-*` only) whose
  credentials are also copied into the log shipper's namespace, a monitoring user for the exporter, and an audit
  reader (read `privatellm-audit-*` only) copied into the monitoring namespace for Grafana's audit-log data source;
- a Job applying the ILM policies and index templates (idempotent; re-run when they change);
- the Elasticsearch exporter (Deployment, Service, ServiceMonitor) for cluster health and disk watermarks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import assets
from components.base import RESTRICTED_CONTAINER, check_dns_label, pull_secret_refs
from components.labels import scanner_skips, standard_labels

WRITER_USER = "privatellm-log-writer"
MONITOR_USER = "privatellm-monitor"
WRITER_SECRET = "elasticsearch-log-writer"
READER_USER = "privatellm-audit-reader"
READER_SECRET = "elasticsearch-audit-reader"
ROLES_YAML = """privatellm_log_writer:
  cluster: ["monitor"]
  indices:
    - names: ["privatellm-*"]
      privileges: ["create_index", "create_doc", "auto_configure"]
privatellm_monitor:
  cluster: ["monitor"]
  indices:
    - names: ["*"]
      privileges: ["monitor"]
privatellm_audit_reader:
  indices:
    - names: ["privatellm-audit-*"]
      privileges: ["read", "view_index_metadata"]
"""
# The Elasticsearch container leaves readOnlyRootFilesystem to ECK's default for the stack version (the pack's
# read-only-root-filesystem rule judges pod templates, not the Elasticsearch resource's podTemplate).
WRITABLE_ROOT_CONTAINER = {k: v for k, v in RESTRICTED_CONTAINER.items() if k != "readOnlyRootFilesystem"}


# elasticsearch_exporter v1.9.0 reads credentials only from ES_USERNAME/ES_PASSWORD or the URI (no file option).
EXPORTER_SECRET_ENV_REASON = (
    "elasticsearch_exporter reads its password only from the ES_PASSWORD environment variable; it comes from a "
    "secretKeyRef to the read-only monitor user"
)


@dataclass(frozen=True)
class LoggingArgs:
    namespace: str
    instance: str
    version: str
    elasticsearch_image: str
    kibana_image: str
    exporter_image: str
    nodes: int
    storage_size: str
    storage_class: str | None
    elasticsearch_tls_secret: str
    kibana_tls_secret: str
    ca_configmap: str
    lifecycle_documents: Mapping[str, str]
    shipper_namespace: str
    image_pull_secrets: tuple[str, ...] = ()
    reader_namespace: str | None = None
    """Where Grafana runs: receives a copy of the audit reader's credentials (`READER_SECRET`)."""
    image_scanner_skips: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Documented checkov exceptions per image reference ({image: {check id: reason}}), put on the workloads that
    run that image."""

    def __post_init__(self) -> None:
        for what, value in (
            ("namespace", self.namespace),
            ("instance", self.instance),
            ("shipper_namespace", self.shipper_namespace),
            ("reader_namespace", self.reader_namespace or "unset"),
        ):
            check_dns_label(what, value)
        for skips in self.image_scanner_skips.values():
            scanner_skips(skips)
        if self.nodes < 1:
            raise ValueError("nodes must be at least 1")
        if self.nodes == 2:
            raise ValueError("nodes=2 cannot keep a quorum of master-eligible nodes; use 1 or at least 3")
        if not self.lifecycle_documents:
            raise ValueError("lifecycle_documents is empty: indices need retention policies")

    @property
    def cluster(self) -> str:
        return f"{self.instance}-logs"

    @property
    def url(self) -> str:
        return f"https://{self.cluster}-es-http.{self.namespace}.svc:9200"


class LoggingStack(pulumi.ComponentResource):
    def __init__(self, name: str, args: LoggingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("privatellm:logging:LoggingStack", name, None, opts)
        a = self.args = args
        child = pulumi.ResourceOptions(parent=self)
        secret_opts = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"])
        )

        def meta(
            object_name: str,
            component: str,
            namespace: str | None = None,
            annotations: Mapping[str, str] | None = None,
        ) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=object_name,
                namespace=namespace or a.namespace,
                labels=standard_labels(name=object_name, instance=a.instance, component=component),
                annotations=dict(annotations) if annotations else None,
            )

        self.meta = meta
        pulls = [{"name": n} for n in a.image_pull_secrets]
        # Users and roles (file realm): every secret generated, never a chart or CR value.
        roles = k8s.core.v1.Secret(
            f"{name}-roles",
            metadata=meta(f"{a.cluster}-roles", "elasticsearch"),
            string_data={"roles.yml": ROLES_YAML},
            opts=child,
        )
        self.writer_password = random.RandomPassword(f"{name}-writer-password", length=32, special=False, opts=child)
        self.monitor_password = random.RandomPassword(f"{name}-monitor-password", length=32, special=False, opts=child)
        self.reader_password = random.RandomPassword(f"{name}-reader-password", length=32, special=False, opts=child)
        users = [
            k8s.core.v1.Secret(
                f"{name}-user-{user}",
                metadata=meta(f"{a.cluster}-user-{user}", "elasticsearch"),
                type="kubernetes.io/basic-auth",
                string_data={"username": user, "password": password.result, "roles": role},
                opts=secret_opts,
            )
            for user, password, role in (
                (WRITER_USER, self.writer_password, "privatellm_log_writer"),
                (MONITOR_USER, self.monitor_password, "privatellm_monitor"),
                (READER_USER, self.reader_password, "privatellm_audit_reader"),
            )
        ]
        # The shipper runs in its own namespace: it gets a copy of the writer's credentials only.
        self.writer_secret = k8s.core.v1.Secret(
            f"{name}-writer-for-shipper",
            metadata=meta(WRITER_SECRET, "log-shipper", a.shipper_namespace),
            type="kubernetes.io/basic-auth",
            string_data={"username": WRITER_USER, "password": self.writer_password.result},
            opts=secret_opts,
        )
        self.reader_secret = (
            k8s.core.v1.Secret(
                f"{name}-reader-for-grafana",
                metadata=meta(READER_SECRET, "grafana", a.reader_namespace),
                type="kubernetes.io/basic-auth",
                string_data={"username": READER_USER, "password": self.reader_password.result},
                opts=secret_opts,
            )
            if a.reader_namespace
            else None
        )
        pod_security = {"runAsNonRoot": True, "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
        volume: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": a.storage_size}},
        }
        if a.storage_class:
            volume["storageClassName"] = a.storage_class
        self.elasticsearch = k8s.apiextensions.CustomResource(
            f"{name}-elasticsearch",
            api_version="elasticsearch.k8s.elastic.co/v1",
            kind="Elasticsearch",
            metadata=meta(a.cluster, "elasticsearch"),
            spec={
                "version": a.version,
                "image": a.elasticsearch_image,
                "http": {"tls": {"certificate": {"secretName": a.elasticsearch_tls_secret}}},
                "auth": {
                    "roles": [{"secretName": f"{a.cluster}-roles"}],
                    "fileRealm": [
                        {"secretName": f"{a.cluster}-user-{u}"} for u in (WRITER_USER, MONITOR_USER, READER_USER)
                    ],
                },
                # Log data is evidence: deleting the cluster keeps its volumes.
                "volumeClaimDeletePolicy": "DeleteOnScaledownOnly",
                "nodeSets": [
                    {
                        "name": "default",
                        "count": a.nodes,
                        "config": {"node.roles": ["master", "data", "ingest"], "node.store.allow_mmap": False},
                        "podTemplate": {
                            "spec": {
                                "automountServiceAccountToken": False,
                                "imagePullSecrets": pulls,
                                "securityContext": pod_security,
                                "containers": [
                                    {
                                        "name": "elasticsearch",
                                        "securityContext": WRITABLE_ROOT_CONTAINER,
                                        "resources": {
                                            "requests": {"cpu": "1", "memory": "4Gi"},
                                            "limits": {"cpu": "4", "memory": "4Gi"},
                                        },
                                    }
                                ],
                            }
                        },
                        "volumeClaimTemplates": [{"metadata": {"name": "elasticsearch-data"}, "spec": volume}],
                    }
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[roles, *users]),
        )
        self.kibana = k8s.apiextensions.CustomResource(
            f"{name}-kibana",
            api_version="kibana.k8s.elastic.co/v1",
            kind="Kibana",
            metadata=meta(a.cluster, "kibana"),
            spec={
                "version": a.version,
                "image": a.kibana_image,
                "count": 1,
                "elasticsearchRef": {"name": a.cluster},
                "http": {"tls": {"certificate": {"secretName": a.kibana_tls_secret}}},
                "config": {"telemetry.optIn": False, "telemetry.allowChangingOptInStatus": False},
                "podTemplate": {
                    "spec": {
                        "automountServiceAccountToken": False,
                        "imagePullSecrets": pulls,
                        "securityContext": pod_security,
                        "containers": [
                            {
                                "name": "kibana",
                                "securityContext": RESTRICTED_CONTAINER,
                                "resources": {
                                    "requests": {"cpu": "500m", "memory": "1Gi"},
                                    "limits": {"cpu": "2", "memory": "2Gi"},
                                },
                            }
                        ],
                    }
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.elasticsearch]),
        )
        self.lifecycle_job = self._lifecycle(name, meta)
        self._exporter(name, meta)
        self.register_outputs({"elasticsearch": a.url, "writerSecret": WRITER_SECRET})

    def _lifecycle(self, name: str, meta: Any) -> k8s.batch.v1.Job:
        a = self.args
        digest = hashlib.sha256("".join(f"{k}{v}" for k, v in sorted(a.lifecycle_documents.items())).encode())
        suffix = digest.hexdigest()[:8]
        documents = k8s.core.v1.ConfigMap(
            f"{name}-lifecycle",
            metadata=meta(f"{a.cluster}-lifecycle", "index-lifecycle"),
            data={**a.lifecycle_documents, "apply_ilm.sh": assets.read("apply_ilm.sh")},
            opts=pulumi.ResourceOptions(parent=self),
        )
        # The Job's name carries the documents' digest: a change of retention runs it again.
        return k8s.batch.v1.Job(
            f"{name}-lifecycle-job",
            metadata=meta(
                f"{a.cluster}-lifecycle-{suffix}",
                "index-lifecycle",
                annotations=scanner_skips(a.image_scanner_skips.get(a.elasticsearch_image, {})),
            ),
            spec=k8s.batch.v1.JobSpecArgs(
                backoff_limit=20,
                ttl_seconds_after_finished=7 * 24 * 3600,
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        labels=standard_labels(
                            name=f"{a.cluster}-lifecycle", instance=a.instance, component="index-lifecycle"
                        )
                    ),
                    spec=k8s.core.v1.PodSpecArgs(
                        restart_policy="OnFailure",
                        automount_service_account_token=False,
                        image_pull_secrets=pull_secret_refs(a.image_pull_secrets) or None,
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            run_as_non_root=True,
                            run_as_user=10001,
                            run_as_group=10001,
                            fs_group=10001,
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="apply",
                                image=a.elasticsearch_image,
                                command=["sh", "/ilm/apply_ilm.sh"],
                                env=[
                                    k8s.core.v1.EnvVarArgs(name="ES_URL", value=a.url),
                                    k8s.core.v1.EnvVarArgs(name="ES_USER", value="elastic"),
                                    k8s.core.v1.EnvVarArgs(name="ES_PASSWORD_FILE", value="/secrets/es/elastic"),
                                    k8s.core.v1.EnvVarArgs(name="ES_CA", value="/ca/ca.crt"),
                                    k8s.core.v1.EnvVarArgs(name="POLICY_DIR", value="/ilm"),
                                ],
                                security_context=k8s.core.v1.SecurityContextArgs(
                                    allow_privilege_escalation=False,
                                    capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                                    read_only_root_filesystem=True,
                                    run_as_non_root=True,
                                    run_as_user=10001,
                                ),
                                resources=k8s.core.v1.ResourceRequirementsArgs(
                                    requests={"cpu": "100m", "memory": "128Mi"},
                                    limits={"cpu": "500m", "memory": "256Mi"},
                                ),
                                volume_mounts=[
                                    k8s.core.v1.VolumeMountArgs(name="ilm", mount_path="/ilm", read_only=True),
                                    k8s.core.v1.VolumeMountArgs(name="ca", mount_path="/ca", read_only=True),
                                    k8s.core.v1.VolumeMountArgs(
                                        name="password", mount_path="/secrets/es", read_only=True
                                    ),
                                    k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
                                ],
                            )
                        ],
                        volumes=[
                            # The elastic user's password as a file (mode 0440, group 10001): never in the
                            # environment, where a crash dump or /proc/<pid>/environ would show it.
                            k8s.core.v1.VolumeArgs(
                                name="password",
                                secret=k8s.core.v1.SecretVolumeSourceArgs(
                                    secret_name=f"{a.cluster}-es-elastic-user",
                                    items=[k8s.core.v1.KeyToPathArgs(key="elastic", path="elastic")],
                                    default_mode=0o440,
                                ),
                            ),
                            k8s.core.v1.VolumeArgs(
                                name="ilm",
                                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=f"{a.cluster}-lifecycle"),
                            ),
                            k8s.core.v1.VolumeArgs(
                                name="ca", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=a.ca_configmap)
                            ),
                            k8s.core.v1.VolumeArgs(name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
                        ],
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[documents, self.elasticsearch]),
        )

    def _exporter(self, name: str, meta: Any) -> None:
        a = self.args
        labels = standard_labels(name=f"{a.cluster}-exporter", instance=a.instance, component="metrics")
        selector = {"app.kubernetes.io/name": f"{a.cluster}-exporter", "app.kubernetes.io/instance": a.instance}
        skips = {
            **a.image_scanner_skips.get(a.exporter_image, {}),
            "CKV_K8S_35": EXPORTER_SECRET_ENV_REASON,
        }
        k8s.apps.v1.Deployment(
            f"{name}-exporter",
            metadata=meta(f"{a.cluster}-exporter", "metrics", annotations=scanner_skips(skips)),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        automount_service_account_token=False,
                        image_pull_secrets=pull_secret_refs(a.image_pull_secrets) or None,
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            run_as_non_root=True,
                            run_as_user=65534,
                            run_as_group=65534,
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="exporter",
                                image=a.exporter_image,
                                args=[
                                    f"--es.uri={a.url}",
                                    "--es.ca=/ca/ca.crt",
                                    "--es.all",
                                    "--es.indices",
                                    "--web.listen-address=:9114",
                                ],
                                env=[
                                    k8s.core.v1.EnvVarArgs(name="ES_USERNAME", value=MONITOR_USER),
                                    k8s.core.v1.EnvVarArgs(
                                        name="ES_PASSWORD",
                                        value_from=k8s.core.v1.EnvVarSourceArgs(
                                            secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(
                                                name=f"{a.cluster}-user-{MONITOR_USER}", key="password"
                                            )
                                        ),
                                    ),
                                ],
                                ports=[k8s.core.v1.ContainerPortArgs(name="metrics", container_port=9114)],
                                security_context=k8s.core.v1.SecurityContextArgs(
                                    allow_privilege_escalation=False,
                                    capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                                    read_only_root_filesystem=True,
                                ),
                                resources=k8s.core.v1.ResourceRequirementsArgs(
                                    requests={"cpu": "50m", "memory": "64Mi"}, limits={"cpu": "500m", "memory": "256Mi"}
                                ),
                                liveness_probe=k8s.core.v1.ProbeArgs(
                                    http_get=k8s.core.v1.HTTPGetActionArgs(path="/healthz", port="metrics")
                                ),
                                readiness_probe=k8s.core.v1.ProbeArgs(
                                    http_get=k8s.core.v1.HTTPGetActionArgs(path="/healthz", port="metrics")
                                ),
                                volume_mounts=[
                                    k8s.core.v1.VolumeMountArgs(name="ca", mount_path="/ca", read_only=True)
                                ],
                            )
                        ],
                        volumes=[
                            k8s.core.v1.VolumeArgs(
                                name="ca", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=a.ca_configmap)
                            )
                        ],
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.elasticsearch]),
        )
        k8s.core.v1.Service(
            f"{name}-exporter-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{a.cluster}-exporter", namespace=a.namespace, labels=labels),
            spec=k8s.core.v1.ServiceSpecArgs(
                selector=selector, ports=[k8s.core.v1.ServicePortArgs(name="metrics", port=9114, target_port="metrics")]
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        k8s.apiextensions.CustomResource(
            f"{name}-exporter-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=meta(f"{a.cluster}-exporter", "metrics"),
            spec={"selector": {"matchLabels": selector}, "endpoints": [{"port": "metrics", "interval": "30s"}]},
            opts=pulumi.ResourceOptions(parent=self),
        )
