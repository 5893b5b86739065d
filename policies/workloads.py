"""Workload controls beyond the Pod Security Standards: CIS section 5, the NSA/CISA hardening guidance and OWASP LLM
items that can be decided from a rendered pod template.

Sources: CIS Kubernetes Benchmark v1.12 section 5 (5.1.6 service account tokens, 5.4.1 secrets as files, 5.6.4 the
default namespace), NSA/CISA Kubernetes Hardening Guidance v1.2 (immutable root filesystems, non-root users and
groups, no shared process namespace, resource limits), OWASP Top 10 for LLM Applications 2025 (LLM02 sensitive
information disclosure, LLM10 unbounded consumption).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pulumi_policy import Severity

from policies.base import (
    LEADER_WORKER_SET,
    POD_TYPES,
    Rule,
    cis,
    containers,
    get_path,
    namespace_of,
    nsa,
    owasp,
    pod_templates,
    where_prefix,
)

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
MIN_UID = 10000

# Names of environment variables that carry credentials; `*_FILE`, `*_PATH` and `*_DIR` name a mounted file instead.
_SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH)", re.IGNORECASE
)
_FILE_REFERENCE = re.compile(r"_(FILE|PATH|DIR|FILES|URL|ENDPOINT|HEADER|TYPE|NAME)$", re.IGNORECASE)
# Values that are credentials whatever the variable is called.
_SECRET_VALUE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bAKIA[0-9A-Z]{16}\b|\bsk-[A-Za-z0-9_-]{20,}|\bhf_[A-Za-z0-9]{30,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{36}\b|\bxox[baprs]-[A-Za-z0-9-]{10,}"
)


def secret_env_values(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for template in pod_templates(resource_type, props):
        for label, c in containers(template.spec):
            for env in c.get("env") or []:
                if not isinstance(env, Mapping) or "value" not in env:
                    continue
                name, value = str(env.get("name", "")), env.get("value")
                if not isinstance(value, str) or not value:
                    continue
                if _SECRET_VALUE.search(value):
                    out.append(f"{where_prefix(template)}{label} env {name} holds a literal credential")
                elif _SECRET_NAME.search(name) and not _FILE_REFERENCE.search(name) and not value.startswith("/"):
                    out.append(
                        f"{where_prefix(template)}{label} env {name} is set as a plain value; "
                        "a credential comes from a Secret (valueFrom.secretKeyRef or a mounted file)"
                    )
    return out


def service_account_token(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for template in pod_templates(resource_type, props):
        if template.spec.get("automountServiceAccountToken") is not False:
            out.append(
                f"{where_prefix(template) or 'pod '}automountServiceAccountToken is "
                f"{template.spec.get('automountServiceAccountToken')!r}; it must be false"
            )
    return out


# Namespaced kinds checked for placement in `default` or `kube-system` (cluster-scoped kinds have no namespace).
NAMESPACED_TYPES = frozenset(
    {
        *POD_TYPES,
        "kubernetes:core/v1:Service",
        "kubernetes:core/v1:ConfigMap",
        "kubernetes:core/v1:Secret",
        "kubernetes:core/v1:ServiceAccount",
        "kubernetes:core/v1:PersistentVolumeClaim",
        "kubernetes:rbac.authorization.k8s.io/v1:Role",
        "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        "kubernetes:policy/v1:PodDisruptionBudget",
    }
)
FORBIDDEN_NAMESPACES = ("default", "kube-system", "kube-public")


def system_namespaces(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    namespace = namespace_of(props)
    if namespace is None:
        return ["no metadata.namespace: the object would land in the provider's default namespace; name one"]
    if namespace in FORBIDDEN_NAMESPACES:
        return [f"namespace {namespace!r} is reserved; put the object in a platform or tenant namespace"]
    return []


def _quantity_missing(resources: Mapping[str, Any], section: str, key: str) -> bool:
    values = resources.get(section)
    return not isinstance(values, Mapping) or values.get(key) in (None, "")


def container_resources(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for template in pod_templates(resource_type, props):
        for label, c in containers(template.spec):
            if label.startswith("ephemeral"):
                continue  # ephemeral containers cannot declare resources
            resources = c.get("resources") if isinstance(c.get("resources"), Mapping) else {}
            assert isinstance(resources, Mapping)
            missing = [
                f"{section}.{key}"
                for section, key in (
                    ("requests", "cpu"),
                    ("requests", "memory"),
                    ("limits", "cpu"),
                    ("limits", "memory"),
                )
                if _quantity_missing(resources, section, key)
            ]
            if missing:
                out.append(f"{where_prefix(template)}{label} has no {', '.join(missing)}")
            for gpu in GPU_RESOURCES:
                requested = get_path(resources, ("requests", gpu))
                limited = get_path(resources, ("limits", gpu))
                if requested is not None and limited is None:
                    out.append(f"{where_prefix(template)}{label} requests {gpu} without a limit")
    return out


def read_only_root(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for template in pod_templates(resource_type, props):
        for label, c in containers(template.spec):
            if get_path(c, ("securityContext", "readOnlyRootFilesystem")) is not True:
                out.append(
                    f"{where_prefix(template)}{label} has a writable root filesystem; set "
                    "securityContext.readOnlyRootFilesystem: true and mount an emptyDir where it writes"
                )
    return out


def _effective(pod: Mapping[str, Any], container: Mapping[str, Any], field: str) -> Any:
    value = get_path(container, ("securityContext", field))
    return value if value is not None else get_path(pod, ("securityContext", field))


def high_uid(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for template in pod_templates(resource_type, props):
        for label, c in containers(template.spec):
            uid = _effective(template.spec, c, "runAsUser")
            # a number: offline an int, under the engine a protobuf double (10001.0)
            if not isinstance(uid, int | float) or isinstance(uid, bool):
                out.append(
                    f"{where_prefix(template)}{label} has no runAsUser: the image's user is not an explicit choice"
                )
            elif uid < MIN_UID:
                out.append(
                    f"{where_prefix(template)}{label} runs as UID {uid:g}; use {MIN_UID} or above so that no container "
                    "user overlaps a host account"
                )
    return out


def root_group(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for template in pod_templates(resource_type, props):
        pod = template.spec
        if get_path(pod, ("securityContext", "fsGroup")) == 0:
            out.append(f"{where_prefix(template)}pod fsGroup is 0 (root group)")
        if 0 in (get_path(pod, ("securityContext", "supplementalGroups")) or []):
            out.append(f"{where_prefix(template)}pod supplementalGroups include 0 (root group)")
        for label, c in containers(pod):
            gid = _effective(pod, c, "runAsGroup")
            if gid is None:
                out.append(
                    f"{where_prefix(template)}{label} has no runAsGroup: without it the image's group (often root) "
                    "applies"
                )
            elif gid == 0:
                out.append(f"{where_prefix(template)}{label} runs with group 0 (root)")
    return out


def shared_process_namespace(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    return [
        f"{where_prefix(template) or 'pod '}shareProcessNamespace is true: containers can read each other's "
        "processes and environment"
        for template in pod_templates(resource_type, props)
        if template.spec.get("shareProcessNamespace") is True
    ]


# Long-running kinds: a server must say when it is ready and when it is stuck.
SERVER_TYPES = frozenset(
    {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:apps/v1:StatefulSet",
        "kubernetes:apps/v1:DaemonSet",
        "kubernetes:apps/v1:ReplicaSet",
        LEADER_WORKER_SET,
    }
)


def server_probes(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    out = []
    for template in pod_templates(resource_type, props):
        for c in template.spec.get("containers") or []:
            if not isinstance(c, Mapping):
                continue
            missing = [p for p in ("readinessProbe", "livenessProbe") if not isinstance(c.get(p), Mapping)]
            if missing:
                out.append(f"{where_prefix(template)}container {c.get('name', '?')!r} has no {' or '.join(missing)}")
    return out


WORKLOAD_RULES: list[Rule] = [
    Rule(
        name="no-secret-env-values",
        description=(
            "A credential never sits in a pod spec as a plain env value: it would be readable by anyone who can read "
            "the workload and it would be stored in Pulumi state in clear."
        ),
        check=secret_env_values,
        resource_types=POD_TYPES,
        standards=(cis("5.4.1"), owasp("LLM02: Sensitive Information Disclosure"), nsa("Secrets")),
        remediation=(
            "Keep the credential in a Kubernetes Secret and reference it with env[].valueFrom.secretKeyRef or mount it "
            "as a file; generate it with pulumi_random or read it with config.require_secret."
        ),
        severity=Severity.CRITICAL,
    ),
    Rule(
        name="service-account-token-off",
        description=(
            "Pods do not get a Kubernetes API token they do not use: a compromised model server or a prompt-injected "
            "tool cannot call the API server."
        ),
        check=service_account_token,
        resource_types=POD_TYPES,
        standards=(cis("5.1.6"), nsa("Pod security: service account tokens"), owasp("LLM01: Prompt Injection")),
        remediation=(
            "Set automountServiceAccountToken: false on the pod spec; a workload that must call the API lives in a "
            "namespace listed in exemptNamespaces with the reason."
        ),
        severity=Severity.MEDIUM,
    ),
    Rule(
        name="no-system-namespaces",
        description=(
            "Nothing of the platform runs in default, kube-system or kube-public: those namespaces carry no "
            "default-deny policy, no quota and the cluster's own components."
        ),
        check=system_namespaces,
        resource_types=NAMESPACED_TYPES,
        standards=(cis("5.6.4"), nsa("Namespaces")),
        remediation="Give every object an explicit metadata.namespace of a platform or tenant namespace.",
        severity=Severity.MEDIUM,
    ),
    Rule(
        name="container-resources",
        description=(
            "Every container declares CPU and memory requests and limits, and a GPU workload limits its GPUs: one "
            "tenant's load cannot starve the node (unbounded consumption)."
        ),
        check=container_resources,
        resource_types=POD_TYPES,
        standards=(owasp("LLM10: Unbounded Consumption"), nsa("Resource policies")),
        remediation="Set resources.requests.{cpu,memory} and resources.limits.{cpu,memory} (and the GPU in limits).",
        severity=Severity.MEDIUM,
    ),
    Rule(
        name="read-only-root-filesystem",
        description=(
            "Containers run with an immutable root filesystem: an attacker cannot drop tools or alter binaries; "
            "writable paths are explicit emptyDir volumes."
        ),
        check=read_only_root,
        resource_types=POD_TYPES,
        standards=(nsa("Pod security: immutable container file systems"),),
        remediation="Set securityContext.readOnlyRootFilesystem: true; mount emptyDir volumes where it writes.",
        severity=Severity.MEDIUM,
    ),
    Rule(
        name="run-as-high-uid",
        description=(
            f"Containers run as an explicit UID of at least {MIN_UID}, which no host account uses: a container escape "
            "does not land as a real host user."
        ),
        check=high_uid,
        resource_types=POD_TYPES,
        standards=(nsa("Pod security: non-root containers"),),
        remediation=f"Set securityContext.runAsUser to {MIN_UID} or above (the platform uses 10001).",
        severity=Severity.LOW,
    ),
    Rule(
        name="no-root-group",
        description=(
            "Containers run with an explicit non-root group, and no pod adds the root group: files owned by group 0 "
            "in the image or on volumes stay out of reach (stricter than the Pod Security Standards)."
        ),
        check=root_group,
        resource_types=POD_TYPES,
        standards=(nsa("Pod security: non-root containers"),),
        remediation="Set securityContext.runAsGroup (and fsGroup) to a non-zero GID; never add GID 0 to groups.",
        severity=Severity.LOW,
    ),
    Rule(
        name="no-shared-process-namespace",
        description=(
            "Containers of a pod do not share one process namespace: a sidecar cannot read the model server's "
            "memory, environment or files through /proc."
        ),
        check=shared_process_namespace,
        resource_types=POD_TYPES,
        standards=(nsa("Pod security: process isolation"),),
        remediation="Remove shareProcessNamespace (or set it to false).",
        severity=Severity.MEDIUM,
    ),
    Rule(
        name="server-probes",
        description=(
            "Long-running servers declare readiness and liveness probes: traffic reaches only ready replicas and a "
            "stuck server is restarted."
        ),
        check=server_probes,
        resource_types=SERVER_TYPES,
        standards=(owasp("LLM10: Unbounded Consumption"),),
        remediation="Add readinessProbe and livenessProbe to every container (a startupProbe for slow model loads).",
        severity=Severity.LOW,
    ),
]
