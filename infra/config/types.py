"""Field types every section of the stack file shares, the strict base model, and the one error a bad stack
file raises."""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Annotated

import pulumi
from kubernetes.utils.quantity import parse_quantity
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

from components.base import DNS_LABEL

CONFIG_NAMESPACE = "privatellm"


PLATFORM_KEY = "platform"


FULL_PLATFORM_KEY = f"{CONFIG_NAMESPACE}:{PLATFORM_KEY}"


# Kubernetes minor versions we render for. 1.31 is the floor of DESIGN.md; 1.37 is the newest release whose
# schemas kubernetes-validate ships, so every rendered object can be strictly validated.
MIN_KUBERNETES_MINOR = 31


MAX_KUBERNETES_MINOR = 37


DEFAULT_KUBERNETES_VERSION = "1.31"


RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


_SECRET_REF = re.compile(r"^([a-zA-Z][a-zA-Z0-9_-]*:)?[a-zA-Z][a-zA-Z0-9_.-]*$")


_GROUP_NAME = re.compile(r"^[^\s,]{1,253}$")


class StackConfigError(pulumi.RunError):
    """A stack file that cannot be built. `problems` holds one line per problem; the message lists them all."""

    def __init__(self, problems: list[str], stack: str | None = None) -> None:
        self.problems = problems
        where = f"stack {stack!r}: " if stack else ""
        head = f"{where}{FULL_PLATFORM_KEY} has {len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


def _dns_label(value: str) -> str:
    if len(value) > 63 or not DNS_LABEL.fullmatch(value):
        raise ValueError(
            "must be a DNS-1123 label: at most 63 characters of lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _namespace_name(value: str) -> str:
    _dns_label(value)
    if value in RESERVED_NAMESPACES or value.startswith("kube-"):
        raise ValueError(
            "is reserved for the cluster itself; platform workloads never run there (CIS 5.6.4); choose another name"
        )
    return value


def _quantity(value: str | int | float) -> str:
    text = str(value)
    try:
        parse_quantity(text)
    except ValueError:
        raise ValueError(
            "is not a Kubernetes quantity; use a number with an optional suffix such as 500m, 2, 64Gi or 1Ti"
        ) from None
    return text


def _kubernetes_version(value: str) -> str:
    match = re.fullmatch(r"1\.(\d+)", value)
    if not match or not MIN_KUBERNETES_MINOR <= int(match.group(1)) <= MAX_KUBERNETES_MINOR:
        raise ValueError(
            f"must be a supported Kubernetes minor version written as '1.N', from 1.{MIN_KUBERNETES_MINOR} "
            f"to 1.{MAX_KUBERNETES_MINOR}"
        )
    return value


def _secret_ref(value: str) -> str:
    if not _SECRET_REF.fullmatch(value):
        raise ValueError(
            "must name a secure config key of this stack (for example 'kubeconfig', set with "
            "`pulumi config set --secret privatellm:kubeconfig ...`)"
        )
    return value


_DN_FRAGMENT = re.compile(r"^(CN|OU|DC|O|L|ST|C|UID)=", re.IGNORECASE)


def _group_name(value: str) -> str:
    if _DN_FRAGMENT.match(value):
        raise ValueError(
            "looks like a piece of a distinguished name: a YAML flow list splits `[CN=a,OU=b,DC=c]` at its commas "
            "into separate groups (each would be bound). Write the group name your identity provider puts in the "
            "token's groups claim, e.g. llm-retail-admins"
        )
    if not _GROUP_NAME.fullmatch(value):
        raise ValueError("must be an LDAP/OIDC group name without spaces or commas (at most 253 characters)")
    return value


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("is not an IP network in CIDR notation, e.g. 10.20.0.0/24") from None
    return value


Cidr = Annotated[str, AfterValidator(_cidr)]

DnsLabel = Annotated[str, AfterValidator(_dns_label)]


NamespaceName = Annotated[str, AfterValidator(_namespace_name)]


Quantity = Annotated[str, AfterValidator(_quantity)]


KubernetesVersion = Annotated[str, AfterValidator(_kubernetes_version)]


SecretRef = Annotated[str, AfterValidator(_secret_ref)]


GroupName = Annotated[str, AfterValidator(_group_name)]


NonNegativeInt = Annotated[int, Field(ge=0)]


class StrictModel(BaseModel):
    """Every level of the stack file forbids unknown keys and is immutable once parsed."""

    # NaN and infinity are refused: no limit of the schema can judge them (every comparison with NaN is false).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


def quantity(value: str) -> Decimal:
    return Decimal(parse_quantity(value))
