"""Harbor: the customer's own registry, deployed from its official chart and configured as code.

`HarborRegistry` creates
- the Secrets the chart reads through its `existingSecret*` values (admin password and encryption key generated with
  pulumi_random; S3, database and Redis credentials from secure config) — never a plaintext chart value;
- PVCs for registry, job logs, database, Redis and Trivy, retained on delete and handed to the chart as existing
  claims (so that deleting the stack never deletes images);
- the Harbor chart (`helm.v4.Chart`, objects visible to the policy pack);
- with the Harbor provider built from the URL and the generated admin password: projects (platform images, model
  images, charts, and proxy caches on connected sites) with vulnerability prevention at the profile's severity, scan
  on push, cosign signatures required, tag immutability and a retention policy; one pull-only robot account per
  consumer namespace whose credentials become a `kubernetes.io/dockerconfigjson` Secret in that namespace;
  replication of every project to a disaster-recovery Harbor; LDAP or OIDC authentication.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import pulumiverse_harbor as harbor

from components.base import check_dns_label
from components.labels import RETAINED, standard_labels

SEVERITIES = ("critical", "high", "medium", "low", "none")
ADMIN_SECRET_KEY = "HARBOR_ADMIN_PASSWORD"
PULL_SECRET = "registry-pull"


@dataclass(frozen=True)
class HarborProject:
    name: str
    severity: str
    proxy_endpoint: str | None = None
    proxy_provider: str = "docker-registry"
    immutable: bool = True

    def __post_init__(self) -> None:
        check_dns_label("project name", self.name)
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity={self.severity!r} must be one of {', '.join(SEVERITIES)}")


@dataclass(frozen=True)
class HarborReplication:
    endpoint: str
    username: str
    password: pulumi.Input[str]
    schedule: str


@dataclass(frozen=True)
class HarborArgs:
    namespace: str
    instance: str
    host: str
    chart: str
    chart_version: str
    chart_repository: str | None
    values: Mapping[str, Any]
    """Chart values (`harbor_values`, infra/builders/registry.py): they name the Secrets and claims below; no secret."""
    projects: Sequence[HarborProject]
    pull_namespaces: Sequence[str] = ()
    pull_projects: Sequence[str] = ()
    claims: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    """claim name → (size, storage class)."""
    s3_credentials: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None
    database_password: pulumi.Input[str] | None = None
    redis_password: pulumi.Input[str] | None = None
    retention_keep_most_recent: int = 10
    retention_schedule: str = "Daily"
    replication: HarborReplication | None = None
    auth: Mapping[str, Any] | None = None
    auth_mode: Literal["ldap_auth", "oidc_auth"] | None = None

    def __post_init__(self) -> None:
        check_dns_label("namespace", self.namespace)
        if not self.projects:
            raise ValueError("projects is empty: Harbor needs at least the platform project")
        names = [p.name for p in self.projects]
        if len(set(names)) != len(names):
            raise ValueError(f"project names repeat: {names}")
        unknown = set(self.pull_projects) - set(names)
        if unknown:
            raise ValueError(f"pull_projects {sorted(unknown)} are not projects of this Harbor")
        if self.auth is not None and self.auth_mode is None:
            raise ValueError("auth needs auth_mode (ldap_auth or oidc_auth)")
        if self.retention_keep_most_recent < 1:
            raise ValueError("retention_keep_most_recent must be at least 1")


def secret_names(release: str = "harbor") -> dict[str, str]:
    """The Secret names the chart values refer to (so that values can be built without outputs)."""
    return {
        "admin": f"{release}-admin",
        "secret_key": f"{release}-secret-key",
        "s3": f"{release}-s3",
        "database": f"{release}-database",
        "redis": f"{release}-redis",
    }


class HarborRegistry(pulumi.ComponentResource):
    def __init__(self, name: str, args: HarborArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("privatellm:registry:Harbor", name, None, opts)
        a = self.args = args
        child = pulumi.ResourceOptions(parent=self)
        names = secret_names()

        def meta(object_name: str, component: str, namespace: str | None = None) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=object_name,
                namespace=namespace or a.namespace,
                labels=standard_labels(name="harbor", instance=a.instance, component=component),
            )

        secret_opts = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"])
        )
        self.admin_password = random.RandomPassword(
            f"{name}-admin-password", length=32, special=False, min_lower=2, min_upper=2, min_numeric=2, opts=child
        )
        self.encryption_key = random.RandomPassword(f"{name}-secret-key", length=16, special=False, opts=child)
        secrets: list[pulumi.Resource] = [
            k8s.core.v1.Secret(
                f"{name}-admin",
                metadata=meta(names["admin"], "credentials"),
                string_data={ADMIN_SECRET_KEY: self.admin_password.result},
                opts=secret_opts,
            ),
            k8s.core.v1.Secret(
                f"{name}-secret-key",
                metadata=meta(names["secret_key"], "credentials"),
                string_data={"secretKey": self.encryption_key.result},
                opts=secret_opts,
            ),
        ]
        if a.s3_credentials is not None:
            access, secret = a.s3_credentials
            secrets.append(
                k8s.core.v1.Secret(
                    f"{name}-s3",
                    metadata=meta(names["s3"], "credentials"),
                    string_data={
                        "REGISTRY_STORAGE_S3_ACCESSKEY": pulumi.Output.secret(access),
                        "REGISTRY_STORAGE_S3_SECRETKEY": pulumi.Output.secret(secret),
                    },
                    opts=secret_opts,
                )
            )
        if a.database_password is not None:
            secrets.append(
                k8s.core.v1.Secret(
                    f"{name}-database",
                    metadata=meta(names["database"], "credentials"),
                    string_data={"password": pulumi.Output.secret(a.database_password)},
                    opts=secret_opts,
                )
            )
        if a.redis_password is not None:
            secrets.append(
                k8s.core.v1.Secret(
                    f"{name}-redis",
                    metadata=meta(names["redis"], "credentials"),
                    string_data={"REDIS_PASSWORD": pulumi.Output.secret(a.redis_password)},
                    opts=secret_opts,
                )
            )
        self.claims = [
            k8s.core.v1.PersistentVolumeClaim(
                f"{name}-{claim}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=claim,
                    namespace=a.namespace,
                    labels=standard_labels(name="harbor", instance=a.instance, component="storage"),
                    annotations=RETAINED,
                ),
                spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                    access_modes=["ReadWriteOnce"],
                    storage_class_name=storage_class,
                    resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": size}),
                ),
                # Images, scan data and the database are data: deleting the stack never deletes them.
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=True)),
            )
            for claim, (size, storage_class) in sorted(a.claims.items())
        ]
        self.chart = k8s.helm.v4.Chart(
            f"{name}-chart",
            name="harbor",
            chart=a.chart,
            version=a.chart_version,
            namespace=a.namespace,
            repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=a.chart_repository) if a.chart_repository else None,
            values=dict(a.values),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[*secrets, *self.claims])),
        )
        self._configure(name)
        self.register_outputs({"url": f"https://{a.host}"})

    # ---------------------------------------------------------------------------------------------- as code

    def _configure(self, name: str) -> None:
        a = self.args
        self.provider = harbor.Provider(
            f"{name}-provider",
            url=f"https://{a.host}",
            username="admin",
            password=self.admin_password.result,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.chart]),
        )
        on_harbor = pulumi.ResourceOptions(parent=self, provider=self.provider)
        self.projects: dict[str, harbor.Project] = {}
        for project in a.projects:
            registry_id: pulumi.Input[int] | None = None
            if project.proxy_endpoint:
                upstream = harbor.Registry(
                    f"{name}-upstream-{project.name}",
                    name=f"upstream-{project.name}",
                    endpoint_url=project.proxy_endpoint,
                    provider_name=project.proxy_provider,
                    opts=on_harbor,
                )
                registry_id = upstream.registry_id
            self.projects[project.name] = harbor.Project(
                f"{name}-project-{project.name}",
                name=project.name,
                public=False,
                vulnerability_scanning=True,
                deployment_security=project.severity,
                enable_content_trust_cosign=project.proxy_endpoint is None,
                auto_sbom_generation=True,
                registry_id=registry_id,
                force_destroy=False,
                opts=pulumi.ResourceOptions.merge(on_harbor, pulumi.ResourceOptions(protect=False)),
            )
            if project.immutable and not project.proxy_endpoint:
                harbor.ImmutableTagRule(
                    f"{name}-immutable-{project.name}",
                    project_id=self.projects[project.name].id,
                    repo_matching="**",
                    tag_matching="**",
                    opts=on_harbor,
                )
            harbor.RetentionPolicy(
                f"{name}-retention-{project.name}",
                scope=self.projects[project.name].id,
                schedule=a.retention_schedule,
                rules=[
                    harbor.RetentionPolicyRuleArgs(
                        most_recently_pushed=a.retention_keep_most_recent, repo_matching="**", tag_matching="**"
                    )
                ],
                opts=on_harbor,
            )
        self.pull_secrets = [self._pull_access(name, ns, on_harbor) for ns in a.pull_namespaces]
        if a.replication is not None:
            self._replication(name, a.replication, on_harbor)
        if a.auth is not None and a.auth_mode is not None:
            harbor.ConfigAuth(f"{name}-auth", auth_mode=a.auth_mode, primary_auth_mode=True, **a.auth, opts=on_harbor)

    def _pull_access(self, name: str, namespace: str, on_harbor: pulumi.ResourceOptions) -> k8s.core.v1.Secret:
        a = self.args
        robot = harbor.RobotAccount(
            f"{name}-robot-{namespace}",
            name=f"pull-{namespace}",
            description=f"pull-only access for namespace {namespace}",
            level="system",
            permissions=[
                harbor.RobotAccountPermissionArgs(
                    kind="project",
                    namespace=project,
                    accesses=[harbor.RobotAccountPermissionAccessArgs(action="pull", resource="repository")],
                )
                for project in a.pull_projects
            ],
            opts=pulumi.ResourceOptions.merge(
                on_harbor,
                pulumi.ResourceOptions(
                    additional_secret_outputs=["secret"],
                    depends_on=[self.projects[p] for p in a.pull_projects],
                ),
            ),
        )
        login: pulumi.Output[str] = pulumi.Output.all(robot.full_name, robot.secret).apply(
            lambda v: dockerconfigjson(a.host, str(v[0]), str(v[1]))
        )
        config: pulumi.Output[str] = pulumi.Output.secret(login)
        return k8s.core.v1.Secret(
            f"{name}-pull-{namespace}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=PULL_SECRET,
                namespace=namespace,
                labels=standard_labels(name="harbor", instance=a.instance, component="pull-secret"),
            ),
            type="kubernetes.io/dockerconfigjson",
            string_data={".dockerconfigjson": config},
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["data", "stringData"]),
        )

    def _replication(self, name: str, r: HarborReplication, on_harbor: pulumi.ResourceOptions) -> None:
        target = harbor.Registry(
            f"{name}-dr",
            name="disaster-recovery",
            endpoint_url=r.endpoint,
            provider_name="harbor",
            access_id=r.username,
            access_secret=pulumi.Output.secret(r.password),
            opts=on_harbor,
        )
        for project in self.args.projects:
            if project.proxy_endpoint:
                continue
            harbor.Replication(
                f"{name}-replicate-{project.name}",
                name=f"dr-{project.name}",
                action="push",
                registry_id=target.registry_id,
                schedule=r.schedule,
                override=True,
                deletion=False,
                filters=[harbor.ReplicationFilterArgs(name=f"{project.name}/**")],
                opts=on_harbor,
            )


def dockerconfigjson(host: str, username: str, password: str) -> str:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"username": username, "password": password, "auth": auth}}})
