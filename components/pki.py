"""Internal PKI: cert-manager and trust-manager, a platform CA issuer, a trust bundle, and one certificate helper.

Root-of-trust modes:
- `self-signed` (default): cert-manager bootstraps a root CA inside the cluster; its key never leaves the cluster.
- `enterprise`: an intermediate CA of the customer's PKI signs everything; its key comes from secure config (turned
  into a Secret here) or from an existing Secret the PKI team created.
- `vault`: HashiCorp Vault's PKI engine signs, cert-manager authenticating with its Kubernetes service account.

Every platform namespace receives the CA in a ConfigMap (trust-manager Bundle). `Pki.certificate()` issues server
and client certificates with the profile's lifetime, renewal window and private-key rotation on every renewal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from components.base import check_dns_label
from components.labels import standard_labels

TRUST_BUNDLE_KEY = "ca.crt"
CERT_MANAGER_GROUP = "cert-manager.io"


@dataclass(frozen=True)
class ChartSpec:
    chart: str
    version: str
    repository: str | None
    values: Mapping[str, Any]


@dataclass(frozen=True)
class VaultIssuer:
    server: str
    path: str
    role: str
    auth_mount_path: str
    ca_pem: str


@dataclass(frozen=True)
class PkiArgs:
    namespace: str
    instance: str
    mode: Literal["self-signed", "enterprise", "vault"]
    duration_hours: int
    key_algorithm: Literal["ECDSA", "RSA"]
    cert_manager: ChartSpec
    trust_manager: ChartSpec
    trust_namespace_labels: Mapping[str, str]
    ca_certificate_pem: str | None = None
    ca_key: pulumi.Input[str] | None = None
    existing_ca_secret: str | None = None
    vault: VaultIssuer | None = None

    def __post_init__(self) -> None:
        check_dns_label("namespace", self.namespace)
        if self.duration_hours < 24:
            raise ValueError(f"duration_hours={self.duration_hours}: certificates live at least a day")
        if self.mode == "enterprise":
            if not self.ca_certificate_pem:
                raise ValueError("mode enterprise needs ca_certificate_pem")
            if (self.ca_key is None) == (self.existing_ca_secret is None):
                raise ValueError("mode enterprise needs ca_key or existing_ca_secret, exactly one")
        if self.mode == "vault" and self.vault is None:
            raise ValueError("mode vault needs vault")
        if not self.trust_namespace_labels:
            raise ValueError("trust_namespace_labels is empty: the bundle must select the platform namespaces")

    @property
    def renew_before_hours(self) -> int:
        return max(1, self.duration_hours // 3)


class Pki(pulumi.ComponentResource):
    def __init__(self, name: str, args: PkiArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("privatellm:pki:Pki", name, None, opts)
        self.args = a = args
        child = pulumi.ResourceOptions(parent=self)
        self.issuer_name = f"{a.instance}-platform-ca"
        self.ca_configmap = f"{a.instance}-platform-ca"
        """The trust bundle: a ConfigMap of that name (key `ca.crt`) in every namespace with the trust labels."""
        self.cert_manager = self._chart(f"{name}-cert-manager", "cert-manager", a.cert_manager, [])
        self.trust_manager = self._chart(f"{name}-trust-manager", "trust-manager", a.trust_manager, [self.cert_manager])
        after_charts = pulumi.ResourceOptions(parent=self, depends_on=[self.cert_manager, self.trust_manager])
        self.ca_secret_name = self._root_of_trust(name, after_charts, child)
        self.issuer = self._issuer(name, after_charts)
        self.bundle = k8s.apiextensions.CustomResource(
            f"{name}-bundle",
            api_version="trust.cert-manager.io/v1alpha1",
            kind="Bundle",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=self.ca_configmap,
                labels=standard_labels(name="platform-ca", instance=a.instance, component="pki"),
            ),
            spec={
                "sources": [self._bundle_source()],
                "target": {
                    "configMap": {"key": TRUST_BUNDLE_KEY},
                    "namespaceSelector": {"matchLabels": dict(a.trust_namespace_labels)},
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.issuer]),
        )
        self.register_outputs({"issuer": self.issuer_name, "bundle": self.ca_configmap})

    def _chart(self, name: str, release: str, spec: ChartSpec, after: list[pulumi.Resource]) -> k8s.helm.v4.Chart:
        return k8s.helm.v4.Chart(
            name,
            name=release,
            chart=spec.chart,
            version=spec.version,
            namespace=self.args.namespace,
            repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=spec.repository) if spec.repository else None,
            values=dict(spec.values),
            opts=pulumi.ResourceOptions(parent=self, depends_on=after),
        )

    def _meta(self, object_name: str, component: str) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(
            name=object_name,
            namespace=self.args.namespace,
            labels=standard_labels(name=object_name, instance=self.args.instance, component=component),
        )

    def _root_of_trust(self, name: str, after_charts: pulumi.ResourceOptions, child: pulumi.ResourceOptions) -> str:
        a = self.args
        if a.mode == "self-signed":
            bootstrap = k8s.apiextensions.CustomResource(
                f"{name}-bootstrap-issuer",
                api_version="cert-manager.io/v1",
                kind="ClusterIssuer",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=f"{a.instance}-bootstrap",
                    labels=standard_labels(name="bootstrap", instance=a.instance, component="pki"),
                ),
                spec={"selfSigned": {}},
                opts=after_charts,
            )
            secret = f"{a.instance}-root-ca"
            self.root = k8s.apiextensions.CustomResource(
                f"{name}-root-ca",
                api_version="cert-manager.io/v1",
                kind="Certificate",
                metadata=self._meta(secret, "pki"),
                spec={
                    "isCA": True,
                    "commonName": f"{a.instance} platform root CA",
                    "secretName": secret,
                    # The root lives ten years; leaf certificates follow the profile's lifetime.
                    "duration": "87600h",
                    "renewBefore": "8760h",
                    "privateKey": {"algorithm": "ECDSA", "size": 384, "rotationPolicy": "Always"},
                    "issuerRef": {
                        "name": f"{a.instance}-bootstrap",
                        "kind": "ClusterIssuer",
                        "group": CERT_MANAGER_GROUP,
                    },
                },
                opts=pulumi.ResourceOptions(parent=self, depends_on=[bootstrap]),
            )
            return secret
        if a.mode == "enterprise":
            if a.existing_ca_secret:
                return a.existing_ca_secret
            secret = f"{a.instance}-enterprise-ca"
            k8s.core.v1.Secret(
                f"{name}-enterprise-ca",
                metadata=self._meta(secret, "pki"),
                type="kubernetes.io/tls",
                string_data={
                    "tls.crt": a.ca_certificate_pem or "",
                    "tls.key": pulumi.Output.secret(a.ca_key or ""),
                    "ca.crt": a.ca_certificate_pem or "",
                },
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"])
                ),
            )
            return secret
        # vault: the CA is public; it is published for the bundle, the key stays in Vault.
        secret = f"{a.instance}-vault-ca"
        k8s.core.v1.ConfigMap(
            f"{name}-vault-ca",
            metadata=self._meta(secret, "pki"),
            data={TRUST_BUNDLE_KEY: a.vault.ca_pem if a.vault else ""},
            opts=child,
        )
        return secret

    def _issuer(self, name: str, after_charts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
        a = self.args
        spec: dict[str, Any]
        if a.mode == "vault" and a.vault is not None:
            import base64

            spec = {
                "vault": {
                    "server": a.vault.server,
                    "path": a.vault.path,
                    "caBundle": base64.b64encode(a.vault.ca_pem.encode()).decode(),
                    "auth": {
                        "kubernetes": {
                            "role": a.vault.role,
                            "mountPath": a.vault.auth_mount_path,
                            "serviceAccountRef": {"name": "cert-manager"},
                        }
                    },
                }
            }
        else:
            spec = {"ca": {"secretName": self.ca_secret_name}}
        depends = [self.root] if a.mode == "self-signed" else []
        return k8s.apiextensions.CustomResource(
            f"{name}-issuer",
            api_version="cert-manager.io/v1",
            kind="ClusterIssuer",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=self.issuer_name,
                labels=standard_labels(name="platform-ca", instance=a.instance, component="pki"),
            ),
            spec=spec,
            opts=pulumi.ResourceOptions.merge(after_charts, pulumi.ResourceOptions(depends_on=depends)),
        )

    def _bundle_source(self) -> dict[str, Any]:
        a = self.args
        if a.mode == "vault":
            return {"configMap": {"name": self.ca_secret_name, "key": TRUST_BUNDLE_KEY}}
        key = "tls.crt" if a.mode == "enterprise" else TRUST_BUNDLE_KEY
        return {"secret": {"name": self.ca_secret_name, "key": key}}

    def certificate(
        self,
        resource_name: str,
        namespace: str,
        secret_name: str,
        common_name: str,
        dns_names: Sequence[str] = (),
        usage: Literal["server", "client", "both"] = "server",
        opts: pulumi.ResourceOptions | None = None,
    ) -> k8s.apiextensions.CustomResource:
        """A certificate from the platform CA with the profile's lifetime; the private key is rotated on renewal."""
        a = self.args
        usages = {"server": ["server auth"], "client": ["client auth"], "both": ["server auth", "client auth"]}[usage]
        private_key: dict[str, Any] = {"rotationPolicy": "Always", "algorithm": a.key_algorithm}
        private_key["size"] = 256 if a.key_algorithm == "ECDSA" else 3072
        spec: dict[str, Any] = {
            "secretName": secret_name,
            "commonName": common_name,
            "duration": f"{a.duration_hours}h",
            "renewBefore": f"{a.renew_before_hours}h",
            "usages": ["digital signature", "key encipherment", *usages],
            "privateKey": private_key,
            "issuerRef": {"name": self.issuer_name, "kind": "ClusterIssuer", "group": CERT_MANAGER_GROUP},
            "secretTemplate": {"labels": {"app.kubernetes.io/managed-by": "cert-manager"}},
        }
        if dns_names:
            spec["dnsNames"] = list(dns_names)
        return k8s.apiextensions.CustomResource(
            resource_name,
            api_version="cert-manager.io/v1",
            kind="Certificate",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=secret_name,
                namespace=namespace,
                labels=standard_labels(name=secret_name, instance=a.instance, component="certificate"),
            ),
            spec=spec,
            opts=pulumi.ResourceOptions.merge(
                pulumi.ResourceOptions(parent=self, depends_on=[self.issuer]), opts or pulumi.ResourceOptions()
            ),
        )


def service_dns_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]
