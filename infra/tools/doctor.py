"""`doctor`: a read-only pre-flight of a stack against the real environment (the cluster, and AWS for EKS pools).

The offline engine (`render`, `check`) says whether a stack file is well formed and compliant; the doctor says
whether the environment it names is ready for it: the API server answers, each GPU pool's nodes exist, are Ready,
advertise the GPUs the pool declares, carry the right GPU product and a driver the pinned vLLM image can use, the
storage classes exist, and for EKS pools the instance types are offered where the subnets are and the model bucket
is encrypted and versioned. Nothing is changed; every call is a get or a list.

Node facts come from labels NVIDIA GPU Feature Discovery (part of the GPU Operator and of the k8s-device-plugin)
writes, as set in NVIDIA/k8s-device-plugin `internal/lm/resource.go` and `internal/lm/nvml.go`:

- `nvidia.com/gpu.product`: the NVML device name with spaces replaced by dashes; `-MIG-<profile>` is appended for a
  MIG device (strategy single) and `-SHARED` for a time-sliced GPU whose resource is not renamed.
- `nvidia.com/cuda.driver-version.full` (e.g. `580.95.05`); older GFD releases only set the deprecated
  `nvidia.com/cuda.driver.major` / `.minor` / `.rev`, which are read when the new label is absent.

Every failure carries a `fix` that says what to do. Errors of the network, of credentials or of permissions become
failed checks, never tracebacks, and no credential is ever read into a message.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from decimal import InvalidOperation
from typing import Any
from urllib.parse import urlparse

from kubernetes.utils.quantity import parse_quantity

from infra.capacity.gpus import CapacityError, gpu_type
from infra.config import MAX_KUBERNETES_MINOR, MIN_KUBERNETES_MINOR, GpuPoolSpec, PlatformSpec
from infra.gpu_stack import driver_problem, required_driver_branch

PRODUCT_LABEL = "nvidia.com/gpu.product"
DRIVER_LABEL = "nvidia.com/cuda.driver-version.full"
# Deprecated GFD labels, still written next to the new ones; the only ones older GFD releases set.
LEGACY_DRIVER_LABELS = ("nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.minor", "nvidia.com/cuda.driver.rev")
DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)

# Seconds each Kubernetes call may take (connect, read): a doctor must answer, not hang on a firewall.
KUBE_TIMEOUT = (5.0, 20.0)


@dataclass(frozen=True)
class DoctorCheck:
    check: str
    """Stable id: kubernetes-api, kubernetes-version, pool-nodes, pool-node-ready, pool-gpus, pool-gpu-product,
    pool-driver, storage-class, aws-api, eks-subnets, eks-instance-offered, model-bucket, model-bucket-encryption,
    model-bucket-versioning."""
    target: str
    passed: bool
    message: str
    fix: str = ""


def format_results(checks: Iterable[DoctorCheck]) -> dict[str, Any]:
    """JSON-ready form: every check, and how many passed and failed."""
    rows = [asdict(c) for c in checks]
    failed = sum(1 for r in rows if not r["passed"])
    return {
        "checks": rows,
        "summary": {"passed": len(rows) - failed, "failed": failed, "ok": failed == 0},
    }


def run_doctor(
    spec: PlatformSpec,
    core_api: Any = None,
    storage_api: Any = None,
    aws_session: Any = None,
) -> list[DoctorCheck]:
    """Check the stack's cluster (and AWS, for EKS pools). `core_api`/`storage_api` are kubernetes
    `CoreV1Api`/`StorageV1Api`; by default they are built from the stack's cluster section. `aws_session` is a
    boto3 Session; by default one per EKS pool in the pool's region, with the usual credential chain."""
    checks = _kubernetes_checks(spec, core_api, storage_api)
    checks += _aws_checks(spec, aws_session)
    return checks


# --------------------------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------------------------


def _kube_clients(spec: PlatformSpec, core_api: Any, storage_api: Any) -> tuple[Any, Any, str, DoctorCheck | None]:
    """(core, storage, where, failure): clients from the stack's kubeconfig unless given, and a sentence saying
    which credentials were used."""
    from kubernetes import client, config

    cluster = spec.cluster
    if core_api is not None and storage_api is not None:
        return core_api, storage_api, "the given API client", None
    context = f", context {cluster.context}" if cluster.context else ""
    if cluster.kubeconfig_path:
        path = os.path.expanduser(cluster.kubeconfig_path)
        where = f"kubeconfig {path}{context}"
    else:
        # Read KUBECONFIG now: the kubernetes client reads it once, when it is imported. A list (a:b) is merged.
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        where = f"kubeconfig {path}{context}"
        if cluster.kubeconfig_secret:
            where += (
                f" (the stack reads its kubeconfig from secret config key {cluster.kubeconfig_secret!r}, which the "
                "doctor cannot decrypt offline; it used KUBECONFIG or ~/.kube/config instead)"
            )
    try:
        api = config.new_client_from_config(config_file=path, context=cluster.context, persist_config=False)
    except Exception as exc:
        return (
            None,
            None,
            where,
            DoctorCheck(
                "kubernetes-api",
                "cluster",
                False,
                f"cannot load {where}: {_short_error(exc)}",
                "point cluster.kubeconfig_path at a readable kubeconfig for this cluster (or set KUBECONFIG when the "
                "stack uses kubeconfig_secret), and cluster.context at one of its contexts",
            ),
        )
    return (
        core_api if core_api is not None else client.CoreV1Api(api),
        storage_api if storage_api is not None else client.StorageV1Api(api),
        where,
        None,
    )


def _kube_error(exc: Exception) -> tuple[str, str]:
    """(what happened, what to do) for a failed Kubernetes call; never the response body or headers."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = exc.status
        what = f"HTTP {status} {exc.reason or ''}".strip()
        if status == 401:
            return what, "the credentials of the kubeconfig were rejected: renew the token or client certificate"
        if status == 403:
            return what, (
                "the deploy identity may not read this: grant it get/list on nodes and storageclasses "
                "(a ClusterRole bound to the identity of the kubeconfig)"
            )
        return what, "check the API server's health (`kubectl get --raw /readyz?verbose`)"
    return _short_error(exc), (
        "check that the deploy host reaches the API server of the kubeconfig (address, VPN, firewall, proxy, "
        "certificate authority) and that the server is up"
    )


def _short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 240:
        text = text[:237] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _kubernetes_checks(spec: PlatformSpec, core_api: Any, storage_api: Any) -> list[DoctorCheck]:
    core, storage, where, failure = _kube_clients(spec, core_api, storage_api)
    if failure is not None:
        return [failure]
    from kubernetes.client import VersionApi

    host = getattr(getattr(getattr(core, "api_client", None), "configuration", None), "host", None) or "?"
    try:
        version = VersionApi(core.api_client).get_code(_request_timeout=KUBE_TIMEOUT)
    except Exception as exc:
        what, fix = _kube_error(exc)
        return [
            DoctorCheck(
                "kubernetes-api",
                f"cluster {host}",
                False,
                f"the API server at {host} ({where}) did not answer GET /version: {what}; no other Kubernetes "
                "check was run",
                fix,
            )
        ]
    checks = [
        DoctorCheck(
            "kubernetes-api",
            f"cluster {host}",
            True,
            f"API server at {host} answers: Kubernetes {version.git_version} ({where})",
        ),
        _version_check(spec, version, host),
    ]
    for pool in spec.node_pools:
        checks += _pool_checks(spec, pool, core)
    checks += _storage_checks(spec, storage)
    return checks


def _version_check(spec: PlatformSpec, version: Any, host: str) -> DoctorCheck:
    target = f"cluster {host}"
    digits = "".join(ch for ch in str(version.minor or "") if ch.isdigit())
    if str(version.major) != "1" or not digits:
        return DoctorCheck(
            "kubernetes-version",
            target,
            False,
            f"cannot read the server's version (major={version.major!r}, minor={version.minor!r})",
            "run `kubectl version` against the cluster and set cluster.kubernetes_version to its 1.N version",
        )
    minor = int(digits)
    wanted = spec.cluster.minor
    if minor < MIN_KUBERNETES_MINOR:
        return DoctorCheck(
            "kubernetes-version",
            target,
            False,
            f"the cluster runs Kubernetes 1.{minor}; the platform needs 1.{MIN_KUBERNETES_MINOR} or newer",
            f"upgrade the cluster to 1.{MIN_KUBERNETES_MINOR} or newer",
        )
    if minor < wanted:
        return DoctorCheck(
            "kubernetes-version",
            target,
            False,
            f"the cluster runs Kubernetes 1.{minor}, older than the version the stack renders for "
            f"(cluster.kubernetes_version={spec.cluster.kubernetes_version})",
            f'set cluster.kubernetes_version: "1.{minor}" or upgrade the cluster to {spec.cluster.kubernetes_version}',
        )
    note = ""
    if minor > wanted:
        newest = min(minor, MAX_KUBERNETES_MINOR)
        note = f"; the stack renders for {spec.cluster.kubernetes_version}, you may raise it to 1.{newest}"
    return DoctorCheck(
        "kubernetes-version",
        target,
        True,
        f"the cluster runs Kubernetes 1.{minor} (stack targets {spec.cluster.kubernetes_version}){note}",
    )


def _selector_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _pool_checks(spec: PlatformSpec, pool: GpuPoolSpec, core: Any) -> list[DoctorCheck]:
    """Find the pool's nodes, then check each one."""
    checks: list[DoctorCheck] = []
    nodes: list[Any] = []
    where = f"pool {pool.name}"
    if pool.onprem is not None and pool.onprem.node_names:
        for name in pool.onprem.node_names:
            target = f"{where} / node {name}"
            try:
                nodes.append(core.read_node(name, _request_timeout=KUBE_TIMEOUT))
            except Exception as exc:
                if getattr(exc, "status", None) == 404:
                    checks.append(
                        DoctorCheck(
                            "pool-nodes",
                            target,
                            False,
                            f"node {name} does not exist in the cluster (pool {pool.name} lists it in "
                            f"onprem.node_names)",
                            f"join node {name} to the cluster, or correct onprem.node_names of pool {pool.name} "
                            "(`kubectl get nodes` lists the names)",
                        )
                    )
                else:
                    what, fix = _kube_error(exc)
                    checks.append(DoctorCheck("pool-nodes", target, False, f"cannot read node {name}: {what}", fix))
                continue
            checks.append(DoctorCheck("pool-nodes", target, True, f"node {name} exists"))
    else:
        if pool.backend == "eks":
            labels = pool.labels
        elif pool.onprem is not None and pool.onprem.node_labels:
            labels = dict(pool.onprem.node_labels)
        else:
            labels = pool.selector
        selector = _selector_text(labels)
        try:
            found = core.list_node(label_selector=selector, _request_timeout=KUBE_TIMEOUT).items or []
        except Exception as exc:
            what, fix = _kube_error(exc)
            return [DoctorCheck("pool-nodes", where, False, f"cannot list nodes with labels {selector}: {what}", fix)]
        nodes = sorted(found, key=lambda n: n.metadata.name)
        names = ", ".join(n.metadata.name for n in nodes) or "none"
        message = f"{len(nodes)} node(s) carry {selector} ({names}); the pool declares nodes={pool.nodes}"
        if len(nodes) == pool.nodes:
            checks.append(DoctorCheck("pool-nodes", where, True, message))
        else:
            checks.append(DoctorCheck("pool-nodes", where, False, message, _count_fix(pool, selector, len(nodes))))
    for node in nodes:
        checks += _node_checks(spec, pool, node)
    return checks


def _count_fix(pool: GpuPoolSpec, selector: str, found: int) -> str:
    if pool.backend == "eks" and pool.eks is not None:
        return (
            f"the EKS node group of pool {pool.name} (cluster {pool.eks.cluster_name}) labels its nodes {selector}: "
            f"if `pulumi up` has not run yet, run it; otherwise check the node group's health and scaling "
            f"(`aws eks describe-nodegroup --cluster-name {pool.eks.cluster_name} --region {pool.eks.region} "
            f"--nodegroup-name <name>`) until {pool.nodes} node(s) join"
        )
    if found < pool.nodes:
        fix = (
            f"label {pool.nodes - found} more GPU node(s) with `kubectl label node <name> {selector.replace(',', ' ')}`"
        )
        return fix + (f", or set nodes: {found} on pool {pool.name}" if found else "")
    return (
        f"set nodes: {found} on pool {pool.name}, or remove the labels from the {found - pool.nodes} node(s) that are "
        "not in the pool"
    )


def _node_checks(spec: PlatformSpec, pool: GpuPoolSpec, node: Any) -> list[DoctorCheck]:
    name = node.metadata.name
    target = f"pool {pool.name} / node {name}"
    labels: dict[str, str] = dict(node.metadata.labels or {})
    return [
        _ready_check(target, node),
        _gpu_count_check(target, pool, node),
        _product_check(spec, target, pool, name, labels),
        _driver_check(spec, target, name, labels),
    ]


def _ready_check(target: str, node: Any) -> DoctorCheck:
    name = node.metadata.name
    conditions = (node.status.conditions if node.status else None) or []
    ready = next((c for c in conditions if c.type == "Ready"), None)
    cordoned = bool(node.spec and node.spec.unschedulable)
    if ready is None:
        return DoctorCheck(
            "pool-node-ready",
            target,
            False,
            f"node {name} reports no Ready condition (its kubelet has never reported)",
            f"check the kubelet on {name} (`journalctl -u kubelet`) and `kubectl describe node {name}`",
        )
    if ready.status != "True":
        detail = "; ".join(p for p in (ready.reason, ready.message) if p)
        return DoctorCheck(
            "pool-node-ready",
            target,
            False,
            f"node {name} is not Ready (Ready={ready.status}{': ' + detail if detail else ''})",
            f"fix the node before deploying: `kubectl describe node {name}` shows why (kubelet, container runtime, "
            "network plugin, disk or memory pressure)",
        )
    if cordoned:
        return DoctorCheck(
            "pool-node-ready",
            target,
            False,
            f"node {name} is Ready but cordoned (spec.unschedulable=true): no model pod can start on it",
            f"`kubectl uncordon {name}` once its maintenance is over",
        )
    return DoctorCheck("pool-node-ready", target, True, f"node {name} is Ready and schedulable")


def _gpu_count_check(target: str, pool: GpuPoolSpec, node: Any) -> DoctorCheck:
    name = node.metadata.name
    resource = pool.gpu_resource
    allocatable: dict[str, str] = dict((node.status.allocatable if node.status else None) or {})
    raw = allocatable.get(resource)
    try:
        count = int(parse_quantity(raw)) if raw is not None else 0
    except (ValueError, InvalidOperation):
        count = 0
    wanted = pool.gpus_per_node
    found = f"node {name} has allocatable {resource}={count}"
    if pool.partitioned:
        how = f"MIG {pool.mig.strategy}" if pool.mig.strategy != "none" else "time-slicing"
        ok = count >= wanted
        message = f"{found}; the pool is partitioned ({how}) and needs at least gpus_per_node={wanted}"
    else:
        ok = count == wanted
        message = f"{found}; the pool declares gpus_per_node={wanted}"
    if ok:
        return DoctorCheck("pool-gpus", target, True, message)
    if count == 0:
        fix = (
            f"nothing advertises {resource} on {name}: make sure the NVIDIA device plugin runs there (the GPU "
            "Operator's nvidia-device-plugin-daemonset; with gpu_operator.enabled the stack installs it, run doctor "
            "again after `pulumi up`) and that the driver loads (`nvidia-smi` on the node)"
        )
    elif count < wanted:
        fix = (
            f"{wanted - count} GPU(s) are missing on {name}: check `nvidia-smi` on the node (a GPU fallen off the bus, "
            f"an Xid error) and the device plugin's log, or set gpus_per_node: {count} on pool {pool.name}"
        )
    else:
        fix = (
            f"{name} advertises {count} {resource}: set gpus_per_node: {count} on pool {pool.name}, or declare the "
            "pool's mig or time_slicing if the GPUs are partitioned"
        )
    return DoctorCheck("pool-gpus", target, False, message, fix)


def _base_product(label: str) -> str:
    """The GPU model of a product label: GFD appends -MIG-<profile> (MIG) or -SHARED (time-slicing)."""
    base = label.split("-MIG-", 1)[0]
    return base.removesuffix("-SHARED")


def _gfd_fix(spec: PlatformSpec, node: str, label: str, example: str) -> str:
    fix = (
        "install the GPU Operator (GPU Feature Discovery) or label the node: "
        f"`kubectl label node {node} {label}={example}`"
    )
    if spec.gpu_operator.enabled:
        fix += (
            f"; this stack installs the GPU Operator in namespace {spec.gpu_operator.namespace}: if `pulumi up` has "
            f"not run yet, run doctor again after it, otherwise check its gpu-feature-discovery pod on {node}"
        )
    return fix


def _product_check(
    spec: PlatformSpec, target: str, pool: GpuPoolSpec, node: str, labels: dict[str, str]
) -> DoctorCheck:
    try:
        gpu = gpu_type(pool.gpu)
    except CapacityError as exc:
        return DoctorCheck("pool-gpu-product", target, False, str(exc), f"set pool {pool.name}'s gpu to a known type")
    expected = ", ".join(gpu.product_labels)
    product = labels.get(PRODUCT_LABEL)
    if not product:
        return DoctorCheck(
            "pool-gpu-product",
            target,
            False,
            f"node {node} has no {PRODUCT_LABEL} label; pool {pool.name} expects {gpu.name} ({expected})",
            _gfd_fix(spec, node, PRODUCT_LABEL, gpu.product_labels[0]),
        )
    base = _base_product(product)
    if base.lower() in (p.lower() for p in gpu.product_labels):
        return DoctorCheck("pool-gpu-product", target, True, f"node {node} has {PRODUCT_LABEL}={product}, a {gpu.name}")
    try:
        actual: str | None = gpu_type(base).name
    except CapacityError:
        actual = None
    found = f"a {actual}" if actual else "a GPU the catalog does not know"
    return DoctorCheck(
        "pool-gpu-product",
        target,
        False,
        f"node {node} has {PRODUCT_LABEL}={product} ({found}); pool {pool.name} declares gpu={pool.gpu} ({expected})",
        (f"set gpu: {actual} on pool {pool.name}" if actual else f"correct gpu on pool {pool.name}")
        + f", or take {node} out of the pool",
    )


def _driver_version(labels: dict[str, str]) -> tuple[str | None, str]:
    """(driver version, where it was read) from GFD labels, new label first."""
    full = labels.get(DRIVER_LABEL)
    if full:
        return full, DRIVER_LABEL
    major, minor, rev = (labels.get(k) for k in LEGACY_DRIVER_LABELS)
    if major:
        version = ".".join(p for p in (major, minor, rev) if p)
        return version, "nvidia.com/cuda.driver.major/.minor/.rev"
    return None, ""


def _driver_check(spec: PlatformSpec, target: str, node: str, labels: dict[str, str]) -> DoctorCheck:
    version, source = _driver_version(labels)
    needed = required_driver_branch()
    if version is None:
        return DoctorCheck(
            "pool-driver",
            target,
            False,
            f"node {node} has no {DRIVER_LABEL} label (nor the older nvidia.com/cuda.driver.major): the NVIDIA "
            f"driver version is unknown; the pinned vLLM image needs branch {needed} or newer",
            _gfd_fix(spec, node, DRIVER_LABEL, f"{needed}.95.05"),
        )
    problem = driver_problem(version)
    if problem is None:
        return DoctorCheck(
            "pool-driver", target, True, f"node {node} runs driver {version} ({source}); branch {needed}+ is needed"
        )
    if spec.gpu_operator.enabled and spec.gpu_operator.driver == "operator":
        fix = (
            f"set gpu_operator.driver_version to a {needed}+ driver (for example {needed}.95.05) and run "
            f"`pulumi up`; the GPU Operator replaces the driver on {node}"
        )
    else:
        fix = (
            f"upgrade the NVIDIA driver on {node} to branch {needed} or newer (for example {needed}.95.05) and reboot "
            f"it; then set gpu_operator.driver_version to the installed version"
        )
    return DoctorCheck("pool-driver", target, False, f"node {node}: {problem}", fix)


def _storage_checks(spec: PlatformSpec, storage: Any) -> list[DoctorCheck]:
    named: dict[str, list[str]] = {}
    default_users: list[str] = []
    for model in spec.models:
        st = model.storage
        if st.type != "pvc" or st.existing_claim:
            continue
        if st.storage_class:
            named.setdefault(st.storage_class, []).append(model.name)
        else:
            default_users.append(model.name)
    if not named and not default_users:
        return []
    try:
        classes = storage.list_storage_class(_request_timeout=KUBE_TIMEOUT).items or []
    except Exception as exc:
        what, fix = _kube_error(exc)
        return [DoctorCheck("storage-class", "storage classes", False, f"cannot list storage classes: {what}", fix)]
    existing = {c.metadata.name: c for c in classes}
    listing = ", ".join(sorted(existing)) or "none"
    checks: list[DoctorCheck] = []
    for name, models in sorted(named.items()):
        users = ", ".join(models)
        target = f"storage class {name}"
        if name in existing:
            provisioner = existing[name].provisioner
            checks.append(
                DoctorCheck(
                    "storage-class", target, True, f"{name} exists (provisioner {provisioner}); used by {users}"
                )
            )
        else:
            checks.append(
                DoctorCheck(
                    "storage-class",
                    target,
                    False,
                    f"storage class {name} (used by models {users}) does not exist; the cluster has: {listing}",
                    f"create storage class {name}, or set storage.storage_class of {users} to one of: {listing}",
                )
            )
    if default_users:
        users = ", ".join(default_users)
        defaults = sorted(
            n
            for n, c in existing.items()
            if any((c.metadata.annotations or {}).get(a) == "true" for a in DEFAULT_CLASS_ANNOTATIONS)
        )
        if defaults:
            checks.append(
                DoctorCheck(
                    "storage-class",
                    "default storage class",
                    True,
                    f"default storage class {', '.join(defaults)} serves models {users} (no storage_class set)",
                )
            )
        else:
            checks.append(
                DoctorCheck(
                    "storage-class",
                    "default storage class",
                    False,
                    f"models {users} set no storage.storage_class and the cluster has no default storage class "
                    f"(classes: {listing}); their claims would stay Pending",
                    f"set storage.storage_class of {users} to one of: {listing}, or mark one default with "
                    "`kubectl annotate storageclass <name> storageclass.kubernetes.io/is-default-class=true`",
                )
            )
    return checks


# --------------------------------------------------------------------------------------------------------------
# AWS (EKS pools only)
# --------------------------------------------------------------------------------------------------------------


def _aws_error(exc: Exception, action: str, region: str) -> tuple[str, str]:
    """(what happened, what to do) for a failed AWS call; error codes and messages, never credentials."""
    kind = type(exc).__name__
    if kind in ("NoCredentialsError", "PartialCredentialsError", "NoRegionError"):
        return f"{action}: no usable AWS credentials ({kind})", (
            "give the doctor read access to the account: set AWS_PROFILE (or run it where an instance/SSO role "
            f"applies) with permissions ec2:DescribeSubnets, ec2:DescribeInstanceTypeOfferings, s3:ListBucket, "
            f"s3:GetEncryptionConfiguration, s3:GetBucketVersioning in {region}"
        )
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        code = str(response["Error"].get("Code", "?"))
        message = str(response["Error"].get("Message", ""))
        what = f"{action}: {code} {message}".strip()
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403"):
            return what, f"allow the doctor's AWS identity {action} in {region}"
        if code in ("AuthFailure", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException"):
            return what, "the AWS credentials are invalid or expired: renew them (`aws sso login`, new keys)"
        return what, f"see the AWS error above; retry `{action}` with the AWS CLI in {region}"
    return f"{action}: {_short_error(exc)}", (
        f"check that the deploy host reaches the AWS API endpoints of {region} (proxy, VPC endpoints, firewall)"
    )


def _boto_config() -> Any:
    from botocore.config import Config

    return Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2, "mode": "standard"})


def _is_aws_endpoint(endpoint: str | None) -> bool:
    if not endpoint:
        return True
    host = (urlparse(endpoint).hostname or "").lower()
    return host == "amazonaws.com" or host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def _aws_checks(spec: PlatformSpec, aws_session: Any) -> list[DoctorCheck]:
    eks_pools = [p for p in spec.node_pools if p.backend == "eks" and p.eks is not None]
    if not eks_pools:
        return []
    try:
        import boto3
    except ImportError:
        return [
            DoctorCheck(
                "aws-api",
                "aws",
                False,
                "boto3 is not installed; the EKS checks were not run",
                "install boto3 in the environment of the private-llm command (`pip install boto3`)",
            )
        ]

    def session_for(region: str) -> Any:
        return aws_session if aws_session is not None else boto3.Session(region_name=region)

    checks: list[DoctorCheck] = []
    # bucket -> (region, KMS key to suggest, who uses it)
    buckets: dict[str, tuple[str, str | None, list[str]]] = {}
    for pool in eks_pools:
        assert pool.eks is not None
        checks += _eks_pool_checks(pool, session_for(pool.eks.region))
        if pool.eks.model_bucket:
            buckets.setdefault(pool.eks.model_bucket, (pool.eks.region, pool.eks.kms_key_arn, []))[2].append(
                f"pool {pool.name} (eks.model_bucket)"
            )
    eks_names = {p.name for p in eks_pools}
    for model in spec.models:
        st = model.storage
        if model.pool in eks_names and st.type == "s3" and st.bucket and _is_aws_endpoint(st.endpoint):
            model_eks = spec.pool(model.pool).eks
            kms = model_eks.kms_key_arn if model_eks is not None else None
            buckets.setdefault(st.bucket, (st.region, kms, []))[2].append(f"model {model.name}")
    for bucket, (region, kms, users) in sorted(buckets.items()):
        checks += _bucket_checks(bucket, region, kms, users, session_for(region))
    return checks


def _eks_pool_checks(pool: GpuPoolSpec, session: Any) -> list[DoctorCheck]:
    assert pool.eks is not None
    eks = pool.eks
    region = eks.region
    where = f"pool {pool.name}"
    try:
        ec2 = session.client("ec2", region_name=region, config=_boto_config())
        # A filter, not SubnetIds=: an unknown id in SubnetIds fails the whole call; a filter returns those found.
        paginator = ec2.get_paginator("describe_subnets")
        found: dict[str, str] = {}
        for page in paginator.paginate(Filters=[{"Name": "subnet-id", "Values": list(eks.subnet_ids)}]):
            for subnet in page.get("Subnets", []):
                found[subnet["SubnetId"]] = subnet["AvailabilityZone"]
    except Exception as exc:
        what, fix = _aws_error(exc, "ec2:DescribeSubnets", region)
        return [DoctorCheck("eks-subnets", where, False, what + "; the EKS checks of this pool were not run", fix)]
    checks: list[DoctorCheck] = []
    missing = [s for s in eks.subnet_ids if s not in found]
    described = ", ".join(f"{s} ({found[s]})" for s in eks.subnet_ids if s in found) or "none"
    if missing:
        checks.append(
            DoctorCheck(
                "eks-subnets",
                where,
                False,
                f"{len(missing)} of {len(eks.subnet_ids)} subnet(s) of eks.subnet_ids do not exist in {region} for "
                f"the current AWS account: {', '.join(missing)}; found: {described}",
                f"correct eks.subnet_ids of pool {pool.name} (`aws ec2 describe-subnets --region {region}`), or check "
                f"that eks.region={region} and the AWS account are the cluster's",
            )
        )
    else:
        checks.append(
            DoctorCheck(
                "eks-subnets", where, True, f"all {len(eks.subnet_ids)} subnet(s) exist in {region}: {described}"
            )
        )
    zones = sorted(set(found.values()))
    for instance_type in eks.instance_types:
        target = f"{where} / {instance_type}"
        if not zones:
            checks.append(
                DoctorCheck(
                    "eks-instance-offered",
                    target,
                    False,
                    f"cannot tell where {instance_type} is offered: none of the pool's subnets exist",
                    "fix the eks-subnets failure of this pool first",
                )
            )
            continue
        try:
            offered: set[str] = set()
            pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
                LocationType="availability-zone",
                Filters=[{"Name": "instance-type", "Values": [instance_type]}],
            )
            for page in pages:
                offered.update(o["Location"] for o in page.get("InstanceTypeOfferings", []))
        except Exception as exc:
            what, fix = _aws_error(exc, "ec2:DescribeInstanceTypeOfferings", region)
            checks.append(DoctorCheck("eks-instance-offered", target, False, what, fix))
            continue
        absent = [z for z in zones if z not in offered]
        offered_text = ", ".join(sorted(offered)) or "no zone"
        if not absent:
            checks.append(
                DoctorCheck(
                    "eks-instance-offered",
                    target,
                    True,
                    f"{instance_type} is offered in all {len(zones)} zone(s) of the subnets: {', '.join(zones)}",
                )
            )
            continue
        bad_subnets = ", ".join(s for s in eks.subnet_ids if found.get(s) in absent)
        if offered:
            fix = (
                f"use subnets in zones where {instance_type} is offered ({offered_text}) instead of {bad_subnets}, "
                f"or pick another instance type"
            )
        else:
            fix = f"{instance_type} is not offered anywhere in {region}: pick another instance type or region"
        checks.append(
            DoctorCheck(
                "eks-instance-offered",
                target,
                False,
                f"{instance_type} is not offered in {len(absent)} of {len(zones)} zone(s) of the subnets: "
                f"{', '.join(absent)} (offered in {region}: {offered_text})",
                fix,
            )
        )
    return checks


def _client_error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code"))
    return None


def _bucket_checks(bucket: str, region: str, kms: str | None, users: list[str], session: Any) -> list[DoctorCheck]:
    target = f"bucket {bucket}"
    who = ", ".join(users)
    try:
        s3 = session.client("s3", region_name=region, config=_boto_config())
        s3.head_bucket(Bucket=bucket)
    except Exception as exc:
        code = _client_error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return [
                DoctorCheck(
                    "model-bucket",
                    target,
                    False,
                    f"bucket {bucket} (used by {who}) does not exist",
                    f"create it encrypted and versioned (`aws s3api create-bucket --bucket {bucket} --region {region}"
                    f"{'' if region == 'us-east-1' else f' --create-bucket-configuration LocationConstraint={region}'}"
                    "`), or correct the bucket name in the stack",
                )
            ]
        what, fix = _aws_error(exc, "s3:ListBucket (HeadBucket)", region)
        if code in ("403", "AccessDenied"):
            fix = (
                f"bucket {bucket} exists but the doctor's AWS identity may not read it: allow s3:ListBucket, "
                f"s3:GetEncryptionConfiguration and s3:GetBucketVersioning on arn:aws:s3:::{bucket}, or correct the "
                "bucket name (bucket names are global: another account may own it)"
            )
        return [DoctorCheck("model-bucket", target, False, f"{what} (used by {who})", fix)]
    checks = [DoctorCheck("model-bucket", target, True, f"bucket {bucket} exists (used by {who})")]
    checks.append(_encryption_check(s3, bucket, region, kms, target))
    checks.append(_versioning_check(s3, bucket, region, target))
    return checks


def _encryption_check(s3: Any, bucket: str, region: str, kms: str | None, target: str) -> DoctorCheck:
    key = kms or "<kms key arn>"
    fix = (
        f"`aws s3api put-bucket-encryption --bucket {bucket} --region {region} --server-side-encryption-configuration "
        f'\'{{"Rules":[{{"ApplyServerSideEncryptionByDefault":{{"SSEAlgorithm":"aws:kms","KMSMasterKeyID":"{key}"}},'
        '"BucketKeyEnabled":true}]}\'`'
    )
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"].get("Rules", [])
    except Exception as exc:
        if _client_error_code(exc) == "ServerSideEncryptionConfigurationNotFoundError":
            return DoctorCheck(
                "model-bucket-encryption", target, False, f"bucket {bucket} has no default encryption", fix
            )
        what, err_fix = _aws_error(exc, "s3:GetEncryptionConfiguration", region)
        return DoctorCheck("model-bucket-encryption", target, False, what, err_fix)
    algorithms = sorted({r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm", "") for r in rules} - {""})
    if not algorithms:
        return DoctorCheck(
            "model-bucket-encryption",
            target,
            False,
            f"bucket {bucket} has an encryption rule without an algorithm",
            fix,
        )
    return DoctorCheck(
        "model-bucket-encryption", target, True, f"bucket {bucket} encrypts by default with {', '.join(algorithms)}"
    )


def _versioning_check(s3: Any, bucket: str, region: str, target: str) -> DoctorCheck:
    try:
        status = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    except Exception as exc:
        what, fix = _aws_error(exc, "s3:GetBucketVersioning", region)
        return DoctorCheck("model-bucket-versioning", target, False, what, fix)
    if status == "Enabled":
        return DoctorCheck("model-bucket-versioning", target, True, f"bucket {bucket} has versioning Enabled")
    state = status or "never enabled"
    return DoctorCheck(
        "model-bucket-versioning",
        target,
        False,
        f"bucket {bucket} versioning is {state}: an overwritten or deleted weight file cannot be recovered",
        f"`aws s3api put-bucket-versioning --bucket {bucket} --region {region} "
        "--versioning-configuration Status=Enabled`",
    )


__all__ = ["DoctorCheck", "format_results", "run_doctor"]
