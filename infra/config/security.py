"""`pki` and `gateway`: the internal PKI (self-signed, enterprise or Vault root) and the OpenAI-compatible gateway."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    model_validator,
)

from infra.config.types import Cidr, DnsLabel, Quantity, SecretRef, StrictModel


def _pem_certificate(value: str) -> str:
    if "-----BEGIN CERTIFICATE-----" not in value:
        raise ValueError("must be a PEM certificate (-----BEGIN CERTIFICATE-----)")
    return value


def _pem_ca(value: str) -> str:
    """A PEM CA certificate (the first of a chain) that can sign and is valid now: checked offline, at preview."""
    import datetime

    from cryptography import x509

    _pem_certificate(value)
    try:
        certificate = x509.load_pem_x509_certificates(value.encode())[0]
    except ValueError as exc:
        raise ValueError(f"is not a readable PEM certificate ({exc})") from None
    subject = certificate.subject.rfc4514_string()
    try:
        is_ca = bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError(
            f"is not a CA certificate ({subject} has no basicConstraints CA:TRUE); give the CA, not a leaf"
        )
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_cert_sign:
            raise ValueError(f"cannot sign certificates ({subject} lacks the keyCertSign key usage)")
    except x509.ExtensionNotFound:
        pass
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc <= now:
        raise ValueError(f"has expired ({subject} was valid until {certificate.not_valid_after_utc:%Y-%m-%d})")
    if certificate.not_valid_before_utc > now:
        raise ValueError(f"is not valid yet ({subject} starts {certificate.not_valid_before_utc:%Y-%m-%d})")
    return value


class EnterpriseCaSpec(StrictModel):
    """An intermediate CA of the customer's PKI: its certificate in the stack (public), its key in secure config or
    in an existing Secret the PKI team created."""

    certificate_pem: Annotated[str, AfterValidator(_pem_ca)]
    key_secret: SecretRef | None = None
    existing_secret_name: DnsLabel | None = None

    @model_validator(mode="after")
    def _one_key(self) -> EnterpriseCaSpec:
        if bool(self.key_secret) == bool(self.existing_secret_name):
            raise ValueError(
                "give key_secret (a secure config key holding the CA's PEM key) or existing_secret_name (a "
                "kubernetes.io/tls Secret in the cert-manager namespace), exactly one"
            )
        return self


class VaultIssuerSpec(StrictModel):
    server: Annotated[str, Field(pattern=r"^https://")]
    path: str
    role: str
    auth_mount_path: str = "/v1/auth/kubernetes"
    server_cidr: Cidr | None = None
    """Where Vault answers (egress from the PKI namespace is denied otherwise)."""
    ca_pem: Annotated[str, AfterValidator(_pem_ca)]
    """The CA that signs what Vault issues (distributed to every namespace) — and Vault's own server certificate."""


class PkiSpec(StrictModel):
    """Root of trust; cert-manager and trust-manager run in the platform's `pki` namespace."""

    mode: Literal["self-signed", "enterprise", "vault"] = "self-signed"
    enterprise: EnterpriseCaSpec | None = None
    vault: VaultIssuerSpec | None = None
    certificate_days: Annotated[int, Field(ge=1)] | None = None
    """Leaf certificate lifetime; default the profile's maximum. Renewal starts when a third is left."""
    key_algorithm: Literal["ECDSA", "RSA"] = "ECDSA"

    @model_validator(mode="after")
    def _mode(self) -> PkiSpec:
        if self.mode == "enterprise" and self.enterprise is None:
            raise ValueError("mode enterprise needs an enterprise section (certificate_pem and key_secret)")
        if self.mode == "vault" and self.vault is None:
            raise ValueError("mode vault needs a vault section (server, path, role, ca_pem)")
        if self.mode != "enterprise" and self.enterprise is not None:
            raise ValueError("an enterprise section needs mode: enterprise")
        if self.mode != "vault" and self.vault is not None:
            raise ValueError("a vault section needs mode: vault")
        return self


class GatewaySpec(StrictModel):
    """The one OpenAI-compatible HTTPS entry (Envoy Gateway with Envoy AI Gateway)."""

    hostname: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = "LoadBalancer"
    source_ranges: list[Cidr] = Field(default_factory=list)
    max_request_body: Quantity = "1Mi"
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    """Most tokens one request may generate, enforced by every model server behind the gateway (vLLM
    `--override-generation-config {"max_new_tokens": N}`: a larger `max_tokens` in a request is lowered to N)."""
    key_rotation_days: Annotated[int, Field(ge=2)] = 30
    key_epoch: AwareDatetime = datetime(2026, 1, 1, tzinfo=UTC)
    """Rotation windows are counted from here (every key_rotation_days / 2 a new key); move it to rotate every key at
    the next `pulumi up` (e.g. after a suspected leak)."""
    """Lifetime of each tenant API key. A new key is issued every half period; the previous one keeps working for
    the other half (the overlap window)."""
    redis_url: Annotated[str, Field(pattern=r"^[a-z0-9.-]+:[0-9]+$")] | None = None
    """Redis (host:port) holding the global per-tenant request and token counters; without it limits are per proxy."""
    redis_cidrs: list[Cidr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _redis(self) -> GatewaySpec:
        if self.redis_url and not self.redis_cidrs:
            raise ValueError("redis_url needs redis_cidrs: egress is denied except to the declared Redis")
        return self
