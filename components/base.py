"""What every component shares: DNS-label validation, the restricted security contexts, pull-secret references.

Only the Pulumi SDKs are imported here (components/ knows nothing of stack files or policies).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pulumi_kubernetes as k8s

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_dns_label(what: str, value: Any, max_length: int = 63) -> None:
    """Refuse `value` unless it is a DNS-1123 label (what Kubernetes requires of namespace and object names) of at
    most `max_length` characters; the error names the argument."""
    if not isinstance(value, str) or len(value) > max_length or not DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{what}={value!r} is not a DNS-1123 label (lower-case letters, digits, '-', at most {max_length})"
        )


# Pod Security Standards "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/), plus a
# read-only root filesystem (CIS 5.7.x / NSA): what every container and pod the platform configures starts from.
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_POD: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pull_secret_refs(names: Iterable[str]) -> list[k8s.core.v1.LocalObjectReferenceArgs]:
    """`imagePullSecrets` of a pod spec: one reference per Secret name."""
    return [k8s.core.v1.LocalObjectReferenceArgs(name=n) for n in names]
