"""Cluster in a box: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK on loopback.

The binaries come from `e2e/toolchain/build.sh` (or `--bin-dir`). Everything listens on 127.0.0.1 only, and nothing is
configured to dial anything else: fake nodes report InternalIP 127.0.0.1 (their "kubelet" is KWOK's loopback server),
the apiserver has no webhook admission plugins, reconciles no endpoints and refuses APIServices that point at a
Service; pod and Service CIDRs are data that nothing dials.

    python e2e/box.py start [--state-dir DIR] [--bin-dir DIR]
    python e2e/box.py nodes SPECS.yaml      # list of {name, labels, taints, capacity}; waits until Ready
    python e2e/box.py status
    python e2e/box.py stop

State (PKI, kubeconfigs, logs, PID files, etcd data, KWOK stages) lives in the state dir, by default build/e2e-box
(git-ignored). Importable: `start_box`, `stop_box`, `box_status`, `create_fake_nodes`, `Box`, `NodeSpec`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO / "build" / "e2e-box"
BUILD_SH = REPO / "e2e" / "toolchain" / "build.sh"
LOOPBACK = "127.0.0.1"
# Data only: KWOK hands out pod IPs from POD_CIDR and the apiserver allocates ClusterIPs from SERVICE_CIDR; no process
# in the box routes to or dials either range.
POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
STORAGE_CLASS = "box-volume"
VOLUME_PROVISIONER = "box.e2e.private-llm/volume"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class BoxError(RuntimeError):
    """The box could not be started, stopped or used; the message names the component and what to do."""


# --------------------------------------------------------------------------------------------------------------- PKI


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    subject: x509.Name,
    *,
    server: bool,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )  # digitalSignature
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def generate_pki(pki: Path) -> None:
    """CA, apiserver serving cert (127.0.0.1/localhost), client certs and the service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("private-llm-e2e-box-ca"))
        .issuer_name(_name("private-llm-e2e-box-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki / "ca.key", ca_key)
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    first_service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    leaf: dict[str, tuple[x509.Name, bool, Sequence[str], Sequence[str]]] = {
        "apiserver": (
            _name("kube-apiserver"),
            True,
            [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            [LOOPBACK, first_service_ip],
        ),
        "admin": (_name("kubernetes-admin", "system:masters"), False, [], []),
        "kube-controller-manager": (_name("system:kube-controller-manager"), False, [], []),
        "kube-scheduler": (_name("system:kube-scheduler"), False, [], []),
    }
    for stem, (subject, server, dns, ips) in leaf.items():
        key, cert = _issue(ca_key, ca_cert, subject, server=server, dns=dns, ips=ips)
        _write_key(pki / f"{stem}.key", key)
        (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "box", "cluster": {"server": server, "certificate-authority-data": b64(pki / "ca.crt")}}],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki / f"{user}.crt"),
                    "client-key-data": b64(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "box", "context": {"cluster": "box", "user": user}}],
        "current-context": "box",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


# ------------------------------------------------------------------------------------------------------- KWOK stages
# Authored for this box from the KWOK Stage API (kwok.x-k8s.io/v1alpha1). Templates are Go templates over the object;
# KWOK adds Now, Quote, YAML, NodeIPsWith, PodIPsWith, NodeName, NodePort.

_NODE_CONDITIONS = """\
{{ $now := Now }}
conditions:
{{ range $type := list "Ready" "MemoryPressure" "DiskPressure" "PIDPressure" "NetworkUnavailable" }}
- type: {{ $type }}
  status: {{ if eq $type "Ready" }}"True"{{ else }}"False"{{ end }}
  reason: {{ if eq $type "Ready" }}KubeletReady{{ else }}KubeletHasNo{{ $type }}{{ end }}
  message: "managed by the e2e box (kwok)"
  lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ or $.metadata.creationTimestamp $now | Quote }}
{{ end }}
addresses:
- type: InternalIP
  address: "127.0.0.1"
- type: Hostname
  address: {{ .metadata.name | Quote }}
{{ with NodePort }}
daemonEndpoints:
  kubeletEndpoint:
    Port: {{ . }}
{{ end }}
"""

_STAGES: dict[str, dict[str, Any]] = {
    # A fake node that is not Ready yet: report it Ready with the capacity it was created with (else a roomy default).
    "node-initialize": {
        "resourceRef": {"apiGroup": "v1", "kind": "Node"},
        "selector": {
            "matchExpressions": [
                {
                    "key": '.status.conditions.[] | select( .type == "Ready" ) | .status',
                    "operator": "NotIn",
                    "values": ["True"],
                }
            ]
        },
        "next": {
            "statusTemplate": _NODE_CONDITIONS
            + """\
capacity:
{{ with .status.capacity }}{{ YAML . 1 }}{{ else }}  cpu: "64"
  memory: 512Gi
  pods: "110"
{{ end }}
allocatable:
{{ with .status.allocatable }}{{ YAML . 1 }}{{ else }}{{ with .status.capacity }}{{ YAML . 1 }}{{ else }}  cpu: "64"
  memory: 512Gi
  pods: "110"
{{ end }}{{ end }}
nodeInfo:
  architecture: amd64
  operatingSystem: linux
  kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
  kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
  containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
  kernelVersion: {{ printf "kwok-%s" Version | Quote }}
  osImage: "e2e-box"
  machineID: ""
  systemUUID: ""
  bootID: ""
phase: Running
"""
        },
    },
    # Ready nodes: refresh the conditions now and then. KWOK also renews the node Lease, which is what the node
    # lifecycle controller watches, so this can be slow.
    "node-heartbeat": {
        "resourceRef": {"apiGroup": "v1", "kind": "Node"},
        "selector": {
            "matchExpressions": [
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                {
                    "key": '.status.conditions.[] | select( .type == "Ready" ) | .status',
                    "operator": "In",
                    "values": ["True"],
                },
            ]
        },
        "delay": {"durationMilliseconds": 20000, "jitterDurationMilliseconds": 25000},
        "next": {"statusTemplate": _NODE_CONDITIONS},
    },
    # A scheduled pod that is not being deleted starts at once and is Ready (probes are not run).
    "pod-ready": {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {
            "matchExpressions": [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
            ]
        },
        "next": {
            "statusTemplate": """\
{{ $now := Now }}
phase: Running
startTime: {{ $now | Quote }}
conditions:
{{ range $type := list "PodScheduled" "Initialized" "ContainersReady" "Ready" }}
- type: {{ $type }}
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
{{ end }}
{{ range .spec.readinessGates }}
- type: {{ .conditionType | Quote }}
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
{{ end }}
initContainerStatuses:
{{ range .spec.initContainers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: true
  restartCount: 0
  {{ if eq .restartPolicy "Always" }}started: true
  state: {running: {startedAt: {{ $now | Quote }}}}
  {{ else }}state:
    terminated: {exitCode: 0, reason: Completed, startedAt: {{ $now | Quote }}, finishedAt: {{ $now | Quote }}}
  {{ end }}
{{ end }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: true
  started: true
  restartCount: 0
  state: {running: {startedAt: {{ $now | Quote }}}}
{{ end }}
{{ with NodeIPsWith .spec.nodeName }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}- ip: {{ . | Quote }}
{{ end }}{{ end }}
{{ with PodIPsWith .spec.nodeName (or .spec.hostNetwork false) (or .metadata.uid "")
     (or .metadata.name "") (or .metadata.namespace "") }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}- ip: {{ . | Quote }}
{{ end }}{{ end }}
"""
        },
    },
    # Running pods of a Job finish successfully, so Jobs reach Complete.
    "pod-complete": {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {
            "matchExpressions": [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]},
            ]
        },
        "next": {
            "statusTemplate": """\
{{ $now := Now }}
phase: Succeeded
conditions:
- type: Ready
  status: "False"
  reason: PodCompleted
  lastTransitionTime: {{ $now | Quote }}
- type: ContainersReady
  status: "False"
  reason: PodCompleted
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    terminated: {exitCode: 0, reason: Completed, startedAt: {{ $now | Quote }}, finishedAt: {{ $now | Quote }}}
{{ end }}
"""
        },
    },
    # A pod being deleted goes away at once (there is no kubelet to confirm it). Finalizers are left to their owners.
    "pod-delete": {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {"matchExpressions": [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}]},
        "next": {"delete": True},
    },
    # Dynamic provisioning for the box StorageClass: create a PV pre-bound to the claim; kube-controller-manager's PV
    # controller then binds both, as it would behind a CSI provisioner.
    "pvc-provision": {
        "resourceRef": {"apiGroup": "v1", "kind": "PersistentVolumeClaim"},
        "selector": {
            "matchExpressions": [
                {"cel": {"expression": f"self.spec.storageClassName == '{STORAGE_CLASS}'"}},
                {"cel": {"expression": "!has(self.metadata.deletionTimestamp)"}},
                {"cel": {"expression": "!has(self.spec.volumeName) || self.spec.volumeName == ''"}},
            ]
        },
        "steps": [
            {
                "apply": {
                    "template": f"""\
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pvc-{{{{ .metadata.uid }}}}
  annotations:
    pv.kubernetes.io/provisioned-by: {VOLUME_PROVISIONER}
spec:
  storageClassName: {STORAGE_CLASS}
  persistentVolumeReclaimPolicy: Delete
  volumeMode: {{{{ or .spec.volumeMode "Filesystem" | Quote }}}}
  accessModes:
{{{{ YAML .spec.accessModes 1 }}}}
  capacity:
    storage: {{{{ .spec.resources.requests.storage | Quote }}}}
  claimRef:
    apiVersion: v1
    kind: PersistentVolumeClaim
    namespace: {{{{ .metadata.namespace | Quote }}}}
    name: {{{{ .metadata.name | Quote }}}}
    uid: {{{{ .metadata.uid | Quote }}}}
  csi:
    driver: {VOLUME_PROVISIONER.replace("/", ".")}
    volumeHandle: pvc-{{{{ .metadata.uid }}}}
"""
                }
            }
        ],
    },
    # A released PV of the box StorageClass (its claim is gone, reclaim policy Delete) is deleted by its provisioner.
    "pv-delete": {
        "resourceRef": {"apiGroup": "v1", "kind": "PersistentVolume"},
        "selector": {
            "matchExpressions": [
                {"cel": {"expression": f"self.spec.storageClassName == '{STORAGE_CLASS}'"}},
                {"cel": {"expression": "!has(self.metadata.deletionTimestamp)"}},
                {"cel": {"expression": "self.status.phase in ['Released', 'Failed']"}},
            ]
        },
        "steps": [{"delete": True}],
    },
}

# Objects applied once the apiserver is up.
_BOOTSTRAP_OBJECTS: list[dict[str, Any]] = [
    {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": VOLUME_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True,
    },
    # The apiserver proxies to (and health-checks) the Service behind an APIService: that would dial a pod IP, which is
    # not loopback. Webhook admission plugins are off, so webhook configurations are stored but never called.
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "e2e-box-no-aggregated-apis"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apiregistration.k8s.io"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["apiservices"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "!has(object.spec.service) || object.spec.service == null",
                    "message": "the e2e box serves no aggregated APIs: an APIService backed by a Service would make "
                    "the apiserver dial a non-loopback address",
                }
            ],
        },
    },
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "e2e-box-no-aggregated-apis"},
        "spec": {"policyName": "e2e-box-no-aggregated-apis", "validationActions": ["Deny"]},
    },
]


def write_stages(stage_dir: Path) -> list[Path]:
    stage_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, spec in _STAGES.items():
        path = stage_dir / f"{name}.yaml"
        doc = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": spec}
        path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------------- processes


@dataclass
class Box:
    """Paths and ports of one box; everything derives from the state dir (ports are read back from ports.json)."""

    state_dir: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids(self) -> Path:
        return self.state_dir / "pids"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.ports['apiserver']}"

    def save_ports(self) -> None:
        (self.state_dir / "ports.json").write_text(json.dumps(self.ports, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> Box:
        path = state_dir / "ports.json"
        ports = json.loads(path.read_text()) if path.exists() else {}
        return cls(state_dir=state_dir, ports=ports)


def _proc_start_time(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot), to tell a recorded PID from a recycled one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is as good as gone
        return None
    return fields[19]


def _recorded(box: Box) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    for name in COMPONENTS:
        path = box.pids / f"{name}.pid"
        if path.exists():
            pid, start = path.read_text().split()
            found[name] = (int(pid), start)
    return found


def _alive(pid: int, start: str) -> bool:
    return _proc_start_time(pid) == start


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join(f"  | {line}" for line in text[-lines:])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            return port


PORT_NAMES = ("etcd-client", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")


def allocate_ports(requested: Mapping[str, int] | None = None) -> dict[str, int]:
    """Free loopback ports for every listener; a requested port that is in use is an error naming its component."""
    requested = dict(requested or {})
    ports: dict[str, int] = {}
    for name in PORT_NAMES:
        port = requested.get(name, 0)
        if port:
            if not _port_free(port):
                raise BoxError(
                    f"{name}: port {LOOPBACK}:{port} is already in use; stop whatever listens there "
                    f"(ss -tlnp 'sport = :{port}') or choose another port"
                )
        else:
            port = _free_port(set(ports.values()))
        ports[name] = port
    return ports


def find_bin_dir() -> Path:
    """The toolchain bin dir: $PRIVATE_LLM_E2E_BIN, else what e2e/toolchain/build.sh --print reports."""
    env = os.environ.get("PRIVATE_LLM_E2E_BIN")
    if env:
        return Path(env)
    proc = subprocess.run(["bash", str(BUILD_SH), "--print"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BoxError(
            f"toolchain not built: {proc.stderr.strip()}\nfix: run e2e/toolchain/build.sh (or pass --bin-dir)"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def _spawn(box: Box, name: str, argv: list[str]) -> None:
    log = (box.logs / f"{name}.log").open("ab")
    # Own session and process group: `stop` signals the whole group, and a closing terminal does not.
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=box.state_dir, start_new_session=True
    )
    log.close()
    start = None
    for _ in range(50):
        start = _proc_start_time(proc.pid)
        if start:
            break
        time.sleep(0.01)
    if start is None:
        raise BoxError(
            f"{name} exited at once (exit code {proc.poll()}); log {box.logs / (name + '.log')}:\n"
            f"{_log_tail(box.logs / (name + '.log'))}"
        )
    (box.pids / f"{name}.pid").write_text(f"{proc.pid} {start}\n")
    (box.state_dir / "cmdlines").mkdir(exist_ok=True)
    (box.state_dir / "cmdlines" / f"{name}.txt").write_text(" \\\n  ".join(argv) + "\n")


def _ssl_context(box: Box, client: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(box.pki / "ca.crt"))
    if client:
        ctx.load_cert_chain(str(box.pki / "admin.crt"), str(box.pki / "admin.key"))
    return ctx


def _insecure_context() -> ssl.SSLContext:
    # kube-controller-manager and kube-scheduler serve health on self-signed certs of their own (--cert-dir).
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _wait(box: Box, name: str, ready: Callable[[], bool], timeout: float) -> None:
    pid, start = _recorded(box)[name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid, start):
            raise BoxError(
                f"{name} exited while starting; log {box.logs / (name + '.log')}:\n"
                f"{_log_tail(box.logs / (name + '.log'))}"
            )
        if ready():
            return
        time.sleep(0.25)
    raise BoxError(
        f"{name} was not ready after {timeout:.0f}s; log {box.logs / (name + '.log')}:\n"
        f"{_log_tail(box.logs / (name + '.log'))}"
    )


def start_box(
    state_dir: Path = DEFAULT_STATE_DIR,
    bin_dir: Path | None = None,
    ports: Mapping[str, int] | None = None,
    timeout: float = 120.0,
) -> Box:
    """Start a fresh box in state_dir (wiped first). On failure everything started is stopped and BoxError raised."""
    state_dir = state_dir.resolve()
    existing = Box.load(state_dir)
    if any(_alive(pid, start) for pid, start in _recorded(existing).values()):
        raise BoxError(f"a box is already running in {state_dir}: run `python e2e/box.py stop --state-dir {state_dir}`")
    bin_dir = (bin_dir or find_bin_dir()).resolve()
    missing = [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if missing:
        raise BoxError(f"missing in {bin_dir}: {', '.join(missing)}; fix: run e2e/toolchain/build.sh")

    if state_dir.exists():
        shutil.rmtree(state_dir)
    box = Box(state_dir=state_dir, ports=allocate_ports(ports))
    for d in (box.pki, box.logs, box.pids, state_dir / "etcd", state_dir / "certs", state_dir / "flexvolume"):
        d.mkdir(parents=True, exist_ok=True)
    (state_dir / "etcd").chmod(0o700)
    box.save_ports()
    generate_pki(box.pki)
    write_kubeconfig(box.kubeconfig, box.server, box.pki, "admin")
    write_kubeconfig(state_dir / "controller-manager.kubeconfig", box.server, box.pki, "kube-controller-manager")
    write_kubeconfig(state_dir / "scheduler.kubeconfig", box.server, box.pki, "kube-scheduler")
    stages = write_stages(state_dir / "stages")
    p, pki, b = box.ports, box.pki, bin_dir

    try:
        etcd_url = f"http://{LOOPBACK}:{p['etcd-client']}"
        peer_url = f"http://{LOOPBACK}:{p['etcd-peer']}"
        _spawn(box, "etcd", [
            str(b / "etcd"), "--name=box", f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=box={peer_url}", "--initial-cluster-state=new",
            "--unsafe-no-fsync", "--log-level=warn",
        ])  # fmt: skip
        _wait(box, "etcd", lambda: _http_ok(f"{etcd_url}/health"), timeout)

        _spawn(box, "kube-apiserver", [
            str(b / "kube-apiserver"), f"--etcd-servers={etcd_url}",
            f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}", f"--secure-port={p['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            # PodSecurity, ValidatingAdmissionPolicy and ResourceQuota are on by default; named so that a change of
            # defaults cannot drop them. Webhooks are off: the apiserver would dial their (non-loopback) Services.
            "--enable-admission-plugins=NodeRestriction,PodSecurity,ValidatingAdmissionPolicy,ResourceQuota",
            "--disable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
            # No kube-proxy or kubelet in the box: don't publish apiserver endpoints behind the kubernetes Service.
            "--endpoint-reconciler-type=none",
            "--kubelet-preferred-address-types=InternalIP",
            f"--cert-dir={state_dir / 'certs'}", "--profiling=false", "--v=1",
        ])  # fmt: skip
        api_ctx = _ssl_context(box, client=True)
        _wait(box, "kube-apiserver", lambda: _http_ok(f"{box.server}/readyz", api_ctx), timeout)

        ca = pki / "ca.crt"
        _spawn(box, "kube-controller-manager", [
            str(b / "kube-controller-manager"),
            f"--kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={state_dir / 'controller-manager.kubeconfig'}",
            "--leader-elect=false", f"--bind-address={LOOPBACK}", f"--secure-port={p['controller-manager']}",
            f"--cert-dir={state_dir / 'certs'}", f"--client-ca-file={ca}",
            f"--root-ca-file={ca}", f"--service-account-private-key-file={pki / 'sa.key'}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={ca}", f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Node IPAM hands each node a podCIDR, from which KWOK gives its pods distinct (data-only) IPs.
            "--allocate-node-cidrs=true", f"--cluster-cidr={POD_CIDR}", "--node-cidr-mask-size=24",
            # Else it creates /usr/libexec/kubernetes/... on the host.
            f"--flex-volume-plugin-dir={state_dir / 'flexvolume'}",
            "--profiling=false", "--v=1",
        ])  # fmt: skip
        _spawn(box, "kube-scheduler", [
            str(b / "kube-scheduler"), f"--kubeconfig={state_dir / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={state_dir / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={state_dir / 'scheduler.kubeconfig'}",
            "--leader-elect=false", f"--bind-address={LOOPBACK}", f"--secure-port={p['scheduler']}",
            f"--cert-dir={state_dir / 'certs'}", f"--client-ca-file={ca}", "--profiling=false", "--v=1",
        ])  # fmt: skip
        insecure = _insecure_context()
        _wait(
            box,
            "kube-controller-manager",
            lambda: _http_ok(f"https://{LOOPBACK}:{p['controller-manager']}/healthz", insecure),
            timeout,
        )
        _wait(
            box, "kube-scheduler", lambda: _http_ok(f"https://{LOOPBACK}:{p['scheduler']}/healthz", insecure), timeout
        )

        _apply_bootstrap(box)

        _spawn(box, "kwok", [
            str(b / "kwok"), f"--kubeconfig={box.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={'='.join(FAKE_NODE_ANNOTATION)}",
            f"--node-ip={LOOPBACK}", f"--node-port={p['kwok']}", f"--server-address={LOOPBACK}:{p['kwok']}",
            f"--cidr={POD_CIDR}", "--node-lease-duration-seconds=40",
            *[f"--config={s}" for s in stages],
        ])  # fmt: skip
        _wait(box, "kwok", lambda: _http_ok(f"http://{LOOPBACK}:{p['kwok']}/healthz"), timeout)
    except BaseException:
        with contextlib.suppress(BoxError):
            stop_box(state_dir)
        raise
    return box


def _apply_bootstrap(box: Box) -> None:
    """The default StorageClass and the no-aggregated-APIs policy; retried while RBAC bootstrap settles."""
    from kubernetes import config, utils

    api = config.new_client_from_config(str(box.kubeconfig))
    deadline = time.monotonic() + 60
    for obj in _BOOTSTRAP_OBJECTS:
        while True:
            try:
                utils.create_from_dict(api, obj)
                break
            except utils.FailToCreateError as exc:
                if time.monotonic() > deadline:
                    kind, name = obj["kind"], obj["metadata"]["name"]
                    raise BoxError(f"kube-apiserver: cannot create {kind}/{name}: {exc}") from exc
                time.sleep(0.5)


def stop_box(state_dir: Path = DEFAULT_STATE_DIR, grace: float = 10.0) -> list[str]:
    """Stop every recorded component (its whole process group), newest first; raise if any process is left."""
    box = Box.load(state_dir.resolve())
    stopped = []
    recorded = _recorded(box)
    for name in reversed(COMPONENTS):
        if name not in recorded:
            continue
        pid, start = recorded[name]
        if _alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, 0)  # anything else in the group (children) must go too
            os.killpg(pid, signal.SIGKILL)
    time.sleep(0.2)
    left = [f"{name} (pid {pid})" for name, (pid, start) in recorded.items() if _alive(pid, start)]
    left += [f"{name} group {pid}" for name, (pid, _) in recorded.items() if _group_alive(pid)]
    if left:
        raise BoxError(f"still running after stop: {', '.join(left)}")
    for name in recorded:
        (box.pids / f"{name}.pid").unlink(missing_ok=True)
    return stopped


def _group_alive(pgid: int) -> bool:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def box_status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    box = Box.load(state_dir.resolve())
    recorded = _recorded(box)
    components = {
        name: ({"pid": recorded[name][0], "running": _alive(*recorded[name])} if name in recorded else None)
        for name in COMPONENTS
    }
    ready = False
    if box.ports and box.kubeconfig.exists():
        ready = _http_ok(f"{box.server}/readyz", _ssl_context(box, client=True))
    return {
        "state_dir": str(box.state_dir),
        "kubeconfig": str(box.kubeconfig),
        "ports": box.ports,
        "apiserver_ready": ready,
        "components": components,
    }


# ------------------------------------------------------------------------------------------------------ fake nodes


@dataclass
class NodeSpec:
    """A fake node. capacity e.g. {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"}."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)  # {"key", "value"?, "effect"}
    capacity: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NodeSpec:
        return cls(
            name=str(d["name"]),
            labels=dict(d.get("labels") or {}),
            taints=list(d.get("taints") or []),
            capacity={k: str(v) for k, v in (d.get("capacity") or {}).items()},
        )


# Taints the node lifecycle controller puts on a node until it is Ready; a Ready fake node must lose them.
_LIFECYCLE_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def _node_manifest(spec: NodeSpec) -> dict[str, Any]:
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "ephemeral-storage": "1Ti", **spec.capacity}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "annotations": {FAKE_NODE_ANNOTATION[0]: FAKE_NODE_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": spec.name,
                **spec.labels,
            },
        },
        "spec": {"taints": spec.taints} if spec.taints else {},
        # Nodes keep status on create: KWOK's node-initialize stage reports this capacity as the node's own.
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": LOOPBACK}, {"type": "Hostname", "address": spec.name}],
        },
    }


def create_fake_nodes(kubeconfig: Path, specs: Iterable[NodeSpec | Mapping[str, Any]], timeout: float = 90.0) -> None:
    """Create fake (KWOK) nodes; wait until each is Ready, has a podCIDR and no not-ready/unreachable taint."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    names = []
    for raw in specs:
        spec = raw if isinstance(raw, NodeSpec) else NodeSpec.from_dict(raw)
        api.create_node(cast(Any, _node_manifest(spec)))  # the client serialises a plain dict as it is
        names.append(spec.name)
    deadline = time.monotonic() + timeout
    waiting = set(names)
    last: dict[str, str] = {}
    while waiting and time.monotonic() < deadline:
        for name in sorted(waiting):
            node = api.read_node(name)
            status, node_spec = node.status or client.V1NodeStatus(), node.spec or client.V1NodeSpec()
            ready = any(c.type == "Ready" and c.status == "True" for c in (status.conditions or []))
            taints = [t.key for t in (node_spec.taints or []) if t.key in _LIFECYCLE_TAINTS]
            cidr = node_spec.pod_cidr
            last[name] = f"ready={ready} lifecycle-taints={taints} podCIDR={cidr}"
            if ready and not taints and cidr:
                waiting.discard(name)
        if waiting:
            time.sleep(0.5)
    if waiting:
        detail = "; ".join(f"{n}: {last.get(n)}" for n in sorted(waiting))
        raise BoxError(
            f"kwok: fake nodes not Ready/untainted after {timeout:.0f}s: {detail} (see logs/kwok.log and "
            "logs/kube-controller-manager.log in the state dir)"
        )


# --------------------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: build/e2e-box")
    sub = parser.add_subparsers(dest="cmd", required=True)
    start = sub.add_parser("start", help="start a fresh box (wipes the state dir)")
    start.add_argument("--bin-dir", type=Path, help="toolchain bin dir (default: e2e/toolchain/build.sh --print)")
    for name in PORT_NAMES:
        start.add_argument(f"--{name}-port", type=int, default=0, help=f"fixed port for {name} (default: a free one)")
    start.add_argument("--timeout", type=float, default=120.0, help="seconds each component may take to be ready")
    sub.add_parser("stop", help="stop every recorded component and check that none is left")
    sub.add_parser("status", help="print the state of the box as JSON")
    nodes = sub.add_parser("nodes", help="create fake nodes from a YAML list of {name, labels, taints, capacity}")
    nodes.add_argument("specs", type=Path)
    args = parser.parse_args(argv)

    try:
        if args.cmd == "start":
            ports = {n: getattr(args, f"{n.replace('-', '_')}_port") for n in PORT_NAMES}
            box = start_box(args.state_dir, args.bin_dir, ports, args.timeout)
            print(f"box up: {box.server}  kubeconfig {box.kubeconfig}")
        elif args.cmd == "stop":
            stopped = stop_box(args.state_dir)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        elif args.cmd == "status":
            status = box_status(args.state_dir)
            print(json.dumps(status, indent=2))
            return 0 if status["apiserver_ready"] else 1
        elif args.cmd == "nodes":
            specs = yaml.safe_load(args.specs.read_text()) or []
            create_fake_nodes(Box.load(args.state_dir.resolve()).kubeconfig, specs)
            print(f"ready: {', '.join(s['name'] for s in specs)}")
    except BoxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
