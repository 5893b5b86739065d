"""`registry`: the site's registry every image comes from, and Harbor when the platform manages it."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from infra.config.types import Cidr, DnsLabel, Quantity, SecretRef, StrictModel

_HOST = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?$")


def _registry_host(value: str) -> str:
    if not _HOST.fullmatch(value) or value in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        raise ValueError("must be your own registry's host name (and optional port), e.g. harbor.bank.internal")
    return value


Severity = Literal["critical", "high", "medium", "low", "none"]


class HarborStorageSpec(StrictModel):
    """Where Harbor keeps image layers: PVCs retained on delete (default) or S3-compatible object storage."""

    type: Literal["pvc", "s3"] = "pvc"
    storage_class: str | None = None
    registry_size: Quantity = "500Gi"
    bucket: str | None = None
    region: str = "us-east-1"
    endpoint: str | None = None
    access_key_id_secret: SecretRef | None = None
    secret_access_key_secret: SecretRef | None = None

    @model_validator(mode="after")
    def _s3(self) -> HarborStorageSpec:
        if self.type == "s3":
            missing = [
                f for f in ("bucket", "access_key_id_secret", "secret_access_key_secret") if not getattr(self, f)
            ]
            if missing:
                raise ValueError(f"type: s3 needs {', '.join(missing)}")
            if self.endpoint and not self.endpoint.startswith("https://"):
                raise ValueError(f"endpoint={self.endpoint!r} must be an https:// URL")
        return self


class ExternalDatabaseSpec(StrictModel):
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 5432
    username: str = "harbor"
    database: str = "registry"
    password_secret: SecretRef
    sslmode: Literal["require", "verify-ca", "verify-full"] = "verify-full"


class ExternalRedisSpec(StrictModel):
    addr: str
    password_secret: SecretRef | None = None
    sentinel_master_set: str | None = None


class ProxyCacheSpec(StrictModel):
    """A Harbor proxy-cache project for an upstream registry (only on sites connected to it)."""

    name: DnsLabel
    endpoint: Annotated[str, Field(pattern=r"^https://")]
    provider: Literal["docker-hub", "docker-registry", "github-ghcr", "quay", "harbor"] = "docker-registry"


class ReplicationSpec(StrictModel):
    """Push-replication of every project to a disaster-recovery Harbor."""

    endpoint: Annotated[str, Field(pattern=r"^https://")]
    username: str
    password_secret: SecretRef
    schedule: str = "0 0 * * * *"


class HarborAuthSpec(StrictModel):
    mode: Literal["ldap", "oidc"]
    ldap_url: Annotated[str, Field(pattern=r"^ldaps://")] | None = None
    ldap_base_dn: str | None = None
    ldap_search_dn: str | None = None
    ldap_search_password_secret: SecretRef | None = None
    ldap_uid: str = "uid"
    ldap_group_base_dn: str | None = None
    ldap_group_admin_dn: str | None = None
    oidc_endpoint: Annotated[str, Field(pattern=r"^https://")] | None = None
    oidc_client_id: str | None = None
    oidc_client_secret_secret: SecretRef | None = None
    oidc_groups_claim: str = "groups"
    oidc_admin_group: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> HarborAuthSpec:
        needed = (
            ("ldap_url", "ldap_base_dn", "ldap_search_dn", "ldap_search_password_secret")
            if self.mode == "ldap"
            else ("oidc_endpoint", "oidc_client_id", "oidc_client_secret_secret")
        )
        missing = [f for f in needed if not getattr(self, f)]
        if missing:
            raise ValueError(f"mode {self.mode} needs {', '.join(missing)}")
        return self


_OCI_LOCATION = re.compile(r"^oci://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([-a-z0-9._]*[a-z0-9])?)*$")


def _oci_location(value: str) -> str:
    if not _OCI_LOCATION.fullmatch(value):
        raise ValueError(
            "must be an OCI location holding charts, oci://<registry host>[:port][/<path>], "
            "e.g. oci://bootstrap-registry.example.internal/charts"
        )
    return value


class HarborExposeSpec(StrictModel):
    """How Harbor is reached from outside the cluster: the deploy host (Harbor provider) and every node's container
    runtime connect to https://<registry.host>, which must lead to this Service.

    LoadBalancer (default): the cluster's load balancer gives Harbor an address; point registry.host's DNS record at
    it. NodePort: registry.host must carry the node port (`harbor.example.internal:30443`, 30000-32767) and resolve to
    the nodes. ClusterIP: only where the site fronts Harbor with its own load balancer or ingress (nothing in the
    cluster is reachable from outside then)."""

    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = "LoadBalancer"
    source_ranges: list[Cidr] = Field(default_factory=list)
    """LoadBalancer only: the client networks allowed (the nodes and the deploy host); empty allows any."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the Service, e.g. the cloud's internal-load-balancer annotation."""

    @model_validator(mode="after")
    def _ranges(self) -> HarborExposeSpec:
        if self.source_ranges and self.service_type != "LoadBalancer":
            raise ValueError(f"source_ranges applies to service_type LoadBalancer only, not {self.service_type}")
        return self


class HarborSpec(StrictModel):
    """Harbor deployed and configured by the platform, reachable at https://<registry.host>."""

    bootstrap_registry: Annotated[str, AfterValidator(_registry_host)]
    """Where Harbor's own images are pulled from before Harbor exists (a bootstrap registry or pre-loaded mirror)."""
    tls_secret_name: DnsLabel | None = None
    storage: HarborStorageSpec = Field(default_factory=HarborStorageSpec)
    database: ExternalDatabaseSpec | None = None
    redis: ExternalRedisSpec | None = None
    vulnerability_severity: Severity | None = None
    retention_keep_most_recent: Annotated[int, Field(ge=1)] = 10
    retention_schedule: str = "Daily"
    proxy_caches: list[ProxyCacheSpec] = Field(default_factory=list)
    replication: ReplicationSpec | None = None
    auth: HarborAuthSpec | None = None
    egress_cidrs: list[Cidr] = Field(default_factory=list)
    """Where Harbor may connect on 443 and its database ports (object storage, database, LDAP, DR Harbor, upstreams)."""
    expose: HarborExposeSpec = Field(default_factory=HarborExposeSpec)
    """Harbor's entry point from outside the cluster (default: a LoadBalancer Service)."""
    bootstrap_charts: Annotated[str, AfterValidator(_oci_location)] | None = None
    """Where the charts needed before Harbor answers (cert-manager, trust-manager and Harbor's own) are pulled from:
    an OCI location such as oci://bootstrap-registry.example.internal/charts. Default where the registry serves the
    charts (air_gapped or charts_from_registry): oci://<bootstrap_registry>/<registry.charts_project>; otherwise the
    charts' upstream repositories."""


class RegistrySpec(StrictModel):
    host: Annotated[str, AfterValidator(_registry_host)]
    platform_project: DnsLabel = "platform"
    models_project: DnsLabel = "models"
    charts_project: DnsLabel = "charts"
    air_gapped: bool = False
    """Nothing is pulled from the internet: charts come from oci://<host>/<charts_project> and no proxy cache."""
    charts_from_registry: bool = False
    """On a connected site too, every chart is pulled from oci://<host>/<charts_project> (and the charts needed
    before a managed Harbor answers from its bootstrap registry): what policy charts-from-internal-registry
    requires in the regulated profiles. Implied by air_gapped."""
    harbor: HarborSpec | None = None
    immutable_projects: list[DnsLabel] = Field(default_factory=list)
    """For a registry the platform does not manage: projects whose tags cannot be overwritten."""
    pull_secret_name: DnsLabel | None = None
    """For a registry the platform does not manage: the dockerconfigjson Secret (same name in every namespace)."""

    @property
    def serves_charts(self) -> bool:
        """Charts come from the site's registry (oci://<host>/<charts_project>), not from their upstreams."""
        return self.air_gapped or self.charts_from_registry

    @model_validator(mode="after")
    def _air_gap(self) -> RegistrySpec:
        if self.air_gapped and self.harbor and self.harbor.proxy_caches:
            raise ValueError("air_gapped: true forbids harbor.proxy_caches (an air-gapped site reaches no upstream)")
        return self

    @model_validator(mode="after")
    def _harbor_node_port(self) -> RegistrySpec:
        if self.harbor is None or self.harbor.expose.service_type != "NodePort":
            return self
        _, _, port = self.host.partition(":")
        if not port or not 30000 <= int(port) <= 32767:
            raise ValueError(
                f"harbor.expose.service_type NodePort needs the node port in host (host={self.host!r}): nodes and the "
                "deploy host reach Harbor at https://<host>, e.g. host: harbor.example.internal:30443 (30000-32767)"
            )
        return self

    @property
    def hostname(self) -> str:
        """registry.host without its port: the name Harbor's certificate is issued for."""
        return self.host.partition(":")[0]

    @property
    def harbor_node_port(self) -> int | None:
        """The node port of Harbor's HTTPS entry (NodePort exposure), from registry.host."""
        if self.harbor is None or self.harbor.expose.service_type != "NodePort":
            return None
        return int(self.host.rpartition(":")[2])

    def bootstrap(self) -> RegistrySpec | None:
        """With a managed Harbor, the registry what runs before Harbor exists is pulled from (the bootstrap
        registry, same platform project); None when the platform does not manage the registry."""
        if self.harbor is None:
            return None
        return RegistrySpec(host=self.harbor.bootstrap_registry, platform_project=self.platform_project)
