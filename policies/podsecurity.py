"""Pod Security Standards "restricted", as Pod Security Admission implements them, on every pod template.

Each PSA check is its own rule (stable id `pss-<check>`), applied to Pods and to every kind that carries a pod
template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, ReplicationController, PodTemplate and the
leader and worker templates of a LeaderWorkerSet). Version-gated checks follow the `kubernetesVersion` config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pulumi_policy import Severity

from policies.base import (
    POD_TYPES,
    PodTemplate,
    Rule,
    Standard,
    cis,
    containers,
    is_list,
    minor_of,
    nsa,
    pod_templates,
    pss,
    where_prefix,
)

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
RESTRICTED_ADD_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
RESTRICTED_VOLUME_SOURCES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
# Image volumes are allowed by the restricted level from Kubernetes 1.33 (API servers before it reject them).
IMAGE_VOLUME_SINCE = 33
# Upstream check ids (k8s.io/pod-security-admission/policy), for reports that cite them.
UPSTREAM_IDS = {
    "host-namespaces": "hostNamespaces",
    "privileged": "privileged",
    "capabilities-baseline": "capabilities_baseline",
    "host-path-volumes": "hostPathVolumes",
    "host-ports": "hostPorts",
    "apparmor": "appArmorProfile",
    "selinux": "seLinuxOptions",
    "proc-mount": "procMount",
    "seccomp-baseline": "seccompProfile_baseline",
    "sysctls": "sysctls",
    "windows-host-process": "windowsHostProcess",
    "host-probes-and-lifecycle": "hostProbesAndHostLifecycle",
    "restricted-volumes": "restrictedVolumes",
    "allow-privilege-escalation": "allowPrivilegeEscalation",
    "run-as-non-root": "runAsNonRoot",
    "run-as-user": "runAsUser",
    "seccomp-restricted": "seccompProfile_restricted",
    "capabilities-restricted": "capabilities_restricted",
}
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
SAFE_SYSCTLS: tuple[tuple[int, frozenset[str]], ...] = (
    (
        0,
        frozenset(
            {
                "kernel.shm_rmid_forced",
                "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range",
            }
        ),
    ),
    (27, frozenset({"net.ipv4.ip_local_reserved_ports"})),
    (
        29,
        frozenset(
            {
                "net.ipv4.tcp_keepalive_time",
                "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes",
            }
        ),
    ),
    (32, frozenset({"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"})),
    # Added for policy version 1.37 (not yet in a stable Kubernetes release when written).
    (37, frozenset({"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"})),
)
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"

PodCheck = Callable[[PodTemplate, int], list[str]]


def _windows(t: PodTemplate) -> bool:
    """Windows pods are exempt from the Linux-only restricted checks (PSA, policy version 1.25+)."""
    os_spec = t.spec.get("os")
    return isinstance(os_spec, Mapping) and os_spec.get("name") == "windows"


def _user_namespaced(t: PodTemplate, minor: int) -> bool:
    """Pods with hostUsers: false relax runAsNonRoot/runAsUser from policy version 1.35 (user namespaces)."""
    return minor >= 35 and t.spec.get("hostUsers") is False


def _sc(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    sc = obj.get("securityContext")
    return sc if isinstance(sc, Mapping) else {}


def _pod_rule(
    check_id: str,
    description: str,
    check: PodCheck,
    remediation: str,
    standards: tuple[Standard, ...] = (),
    severity: Severity = Severity.HIGH,
) -> Rule:
    def run(resource_type: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
        minor = minor_of(config)
        messages: list[str] = []
        for template in pod_templates(resource_type, props):
            messages.extend(where_prefix(template) + m for m in check(template, minor))
        return messages

    return Rule(
        name=f"pss-{check_id}",
        description=description,
        check=run,
        resource_types=POD_TYPES,
        standards=(pss(UPSTREAM_IDS[check_id]), *standards),
        remediation=remediation,
        severity=severity,
    )


# --------------------------------------------------------------------------------------------------------------
# Baseline checks
# --------------------------------------------------------------------------------------------------------------


def host_namespaces(t: PodTemplate, _minor: int) -> list[str]:
    return [
        f"spec.{f} is true; pods must not share the node's namespaces"
        for f in ("hostNetwork", "hostPID", "hostIPC")
        if t.spec.get(f) is True
    ]


def privileged(t: PodTemplate, _minor: int) -> list[str]:
    return [
        f"{label} sets securityContext.privileged=true"
        for label, c in containers(t.spec)
        if _sc(c).get("privileged") is True
    ]


def _added_capabilities(c: Mapping[str, Any]) -> list[str]:
    caps = _sc(c).get("capabilities")
    added = caps.get("add") if isinstance(caps, Mapping) else None
    return [str(a) for a in added] if is_list(added) else []


def capabilities_baseline(t: PodTemplate, _minor: int) -> list[str]:
    out = []
    for label, c in containers(t.spec):
        bad = sorted(a for a in _added_capabilities(c) if a not in BASELINE_CAPABILITIES)
        if bad:
            out.append(f"{label} adds capabilities {', '.join(bad)} outside the baseline set")
    return out


def host_path_volumes(t: PodTemplate, _minor: int) -> list[str]:
    bad = [
        str(v.get("name"))
        for v in t.spec.get("volumes") or []
        if isinstance(v, Mapping) and v.get("hostPath") is not None
    ]
    return [f"volumes {', '.join(bad)} mount host paths"] if bad else []


def host_ports(t: PodTemplate, _minor: int) -> list[str]:
    out = []
    for label, c in containers(t.spec):
        ports = [str(p.get("hostPort")) for p in c.get("ports") or [] if isinstance(p, Mapping) and p.get("hostPort")]
        if ports:
            out.append(f"{label} binds host ports {', '.join(ports)}")
    return out


def _apparmor_field_ok(sc: Mapping[str, Any]) -> bool:
    profile = sc.get("appArmorProfile")
    if not isinstance(profile, Mapping):
        return True
    return profile.get("type") in (None, "RuntimeDefault", "Localhost")


def apparmor(t: PodTemplate, _minor: int) -> list[str]:
    out = []
    annotations = t.metadata.get("annotations") or {}
    for key, value in annotations.items() if isinstance(annotations, Mapping) else []:
        if key.startswith(APPARMOR_ANNOTATION) and not (
            value in ("", "runtime/default") or str(value).startswith("localhost/")
        ):
            out.append(f"annotation {key}={value!r} disables AppArmor; use runtime/default or localhost/<profile>")
    if not _apparmor_field_ok(_sc(t.spec)):
        out.append("spec.securityContext.appArmorProfile.type must be RuntimeDefault or Localhost")
    for label, c in containers(t.spec):
        if not _apparmor_field_ok(_sc(c)):
            out.append(f"{label} securityContext.appArmorProfile.type must be RuntimeDefault or Localhost")
    return out


def _selinux_problem(sc: Mapping[str, Any], minor: int) -> str | None:
    opts = sc.get("seLinuxOptions")
    if not isinstance(opts, Mapping):
        return None
    allowed = SELINUX_TYPES | ({"container_engine_t"} if minor >= 31 else set())
    if (opts.get("type") or "") not in allowed:
        names = ", ".join(sorted(name or "(empty)" for name in allowed))
        return f"seLinuxOptions.type {opts.get('type')!r} is not one of {names}"
    if opts.get("user") or opts.get("role"):
        return "seLinuxOptions.user and .role must be empty"
    return None


def selinux(t: PodTemplate, minor: int) -> list[str]:
    out = []
    problem = _selinux_problem(_sc(t.spec), minor)
    if problem:
        out.append(f"spec.securityContext.{problem}")
    for label, c in containers(t.spec):
        problem = _selinux_problem(_sc(c), minor)
        if problem:
            out.append(f"{label} securityContext.{problem}")
    return out


def proc_mount(t: PodTemplate, _minor: int) -> list[str]:
    # Restricted never relaxes procMount for user-namespaced pods (procMount_restricted, 1.35+); only baseline
    # does. This pack enforces restricted, so the unrelaxed check applies at every version.
    return [
        f"{label} sets securityContext.procMount={_sc(c).get('procMount')!r}; only Default is allowed"
        for label, c in containers(t.spec)
        if _sc(c).get("procMount") not in (None, "Default")
    ]


def _seccomp_type(sc: Mapping[str, Any]) -> Any:
    profile = sc.get("seccompProfile")
    return profile.get("type") if isinstance(profile, Mapping) else None


def seccomp_baseline(t: PodTemplate, _minor: int) -> list[str]:
    out = []
    if _seccomp_type(_sc(t.spec)) == "Unconfined":
        out.append("spec.securityContext.seccompProfile.type is Unconfined")
    out.extend(
        f"{label} securityContext.seccompProfile.type is Unconfined"
        for label, c in containers(t.spec)
        if _seccomp_type(_sc(c)) == "Unconfined"
    )
    return out


def safe_sysctls(minor: int) -> frozenset[str]:
    allowed: set[str] = set()
    for since, names in SAFE_SYSCTLS:
        if minor >= since:
            allowed |= names
    return frozenset(allowed)


def sysctls(t: PodTemplate, minor: int) -> list[str]:
    allowed = safe_sysctls(minor)
    entries = _sc(t.spec).get("sysctls") or []
    bad = sorted(str(s.get("name")) for s in entries if isinstance(s, Mapping) and s.get("name") not in allowed)
    return [f"spec.securityContext.sysctls sets unsafe sysctls {', '.join(bad)}"] if bad else []


def _host_process(sc: Mapping[str, Any]) -> bool:
    opts = sc.get("windowsOptions")
    return isinstance(opts, Mapping) and opts.get("hostProcess") is True


def windows_host_process(t: PodTemplate, _minor: int) -> list[str]:
    out = ["spec.securityContext.windowsOptions.hostProcess is true"] if _host_process(_sc(t.spec)) else []
    out.extend(
        f"{label} securityContext.windowsOptions.hostProcess is true"
        for label, c in containers(t.spec)
        if _host_process(_sc(c))
    )
    return out


def _handler_hosts(handler: Any) -> list[str]:
    if not isinstance(handler, Mapping):
        return []
    hosts = []
    for kind in ("httpGet", "tcpSocket"):
        action = handler.get(kind)
        if isinstance(action, Mapping) and action.get("host"):
            hosts.append(kind)
    return hosts


def host_probes_and_lifecycle(t: PodTemplate, minor: int) -> list[str]:
    if minor < 34:
        return []
    out = []
    for label, c in containers(t.spec):
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            for kind in _handler_hosts(c.get(probe)):
                out.append(f"{label} {probe}.{kind}.host is set; probes must target the pod itself")
        lifecycle = c.get("lifecycle")
        if isinstance(lifecycle, Mapping):
            for hook in ("postStart", "preStop"):
                for kind in _handler_hosts(lifecycle.get(hook)):
                    out.append(f"{label} lifecycle.{hook}.{kind}.host is set; handlers must target the pod itself")
    return out


# --------------------------------------------------------------------------------------------------------------
# Restricted checks
# --------------------------------------------------------------------------------------------------------------


def restricted_volumes(t: PodTemplate, minor: int) -> list[str]:
    allowed = RESTRICTED_VOLUME_SOURCES | ({"image"} if minor >= IMAGE_VOLUME_SINCE else set())
    out = []
    for v in t.spec.get("volumes") or []:
        if not isinstance(v, Mapping):
            continue
        # A volume without a source is defaulted to emptyDir by the API server.
        sources = {k for k, val in v.items() if k != "name" and val is not None}
        if not sources <= allowed:
            kinds = ", ".join(sorted(sources - allowed))
            out.append(f"volume {v.get('name')!r} uses restricted volume type {kinds}")
    return out


def allow_privilege_escalation(t: PodTemplate, _minor: int) -> list[str]:
    if _windows(t):
        return []
    return [
        f"{label} must set securityContext.allowPrivilegeEscalation=false"
        for label, c in containers(t.spec)
        if _sc(c).get("allowPrivilegeEscalation") is not False
    ]


def run_as_non_root(t: PodTemplate, minor: int) -> list[str]:
    if _user_namespaced(t, minor):
        return []
    pod_value = _sc(t.spec).get("runAsNonRoot")
    out = []
    if pod_value is False:
        out.append("spec.securityContext.runAsNonRoot is false")
    for label, c in containers(t.spec):
        value = _sc(c).get("runAsNonRoot")
        if value is False:
            out.append(f"{label} sets securityContext.runAsNonRoot=false")
        elif value is None and pod_value is not True:
            out.append(f"{label} must set runAsNonRoot=true (or set it in spec.securityContext)")
    return out


def run_as_user(t: PodTemplate, minor: int) -> list[str]:
    if _user_namespaced(t, minor):
        return []
    out = []
    if _sc(t.spec).get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser is 0 (root)")
    out.extend(
        f"{label} sets securityContext.runAsUser=0 (root)"
        for label, c in containers(t.spec)
        if _sc(c).get("runAsUser") == 0
    )
    return out


def seccomp_restricted(t: PodTemplate, _minor: int) -> list[str]:
    if _windows(t):
        return []
    allowed = ("RuntimeDefault", "Localhost")
    pod_type = _seccomp_type(_sc(t.spec))
    out = []
    if pod_type is not None and pod_type not in allowed:
        out.append(f"spec.securityContext.seccompProfile.type={pod_type!r} must be RuntimeDefault or Localhost")
    for label, c in containers(t.spec):
        ctype = _seccomp_type(_sc(c))
        if ctype is not None and ctype not in allowed:
            out.append(f"{label} securityContext.seccompProfile.type={ctype!r} must be RuntimeDefault or Localhost")
        elif ctype is None and pod_type not in allowed:
            out.append(f"{label} must set seccompProfile.type=RuntimeDefault (or set it in spec.securityContext)")
    return out


def capabilities_restricted(t: PodTemplate, _minor: int) -> list[str]:
    if _windows(t):
        return []
    out = []
    for label, c in containers(t.spec):
        caps = _sc(c).get("capabilities")
        drop = caps.get("drop") if isinstance(caps, Mapping) else None
        if not is_list(drop) or "ALL" not in drop:
            out.append(f"{label} must drop ALL capabilities (securityContext.capabilities.drop: [ALL])")
        bad = sorted(a for a in _added_capabilities(c) if a not in RESTRICTED_ADD_CAPABILITIES)
        if bad:
            out.append(f"{label} adds capabilities {', '.join(bad)}; only NET_BIND_SERVICE may be added")
    return out


SECURITY_CONTEXT_FIX = (
    "Set in the pod template: securityContext {runAsNonRoot: true, runAsUser: >=10000, seccompProfile: "
    "{type: RuntimeDefault}}; and on every container: securityContext {allowPrivilegeEscalation: false, "
    "capabilities: {drop: [ALL]}, readOnlyRootFilesystem: true}."
)

POD_SECURITY_RULES: list[Rule] = [
    _pod_rule(
        "host-namespaces",
        "Sharing the host's network, PID or IPC namespace lets a pod see and reach the node's processes and traffic.",
        host_namespaces,
        "Remove hostNetwork, hostPID and hostIPC from the pod spec (or set them to false).",
        (cis("5.2.3"), cis("5.2.4"), cis("5.2.5"), nsa("Pod security: host namespaces")),
        Severity.CRITICAL,
    ),
    _pod_rule(
        "privileged",
        "Privileged containers have every capability and device of the node; one compromise owns the node.",
        privileged,
        "Remove securityContext.privileged or set it to false on every container.",
        (cis("5.2.2"), nsa("Pod security: non-privileged containers")),
        Severity.CRITICAL,
    ),
    _pod_rule(
        "capabilities-baseline",
        "Adding Linux capabilities beyond the runtime's default set widens what a compromised container can do.",
        capabilities_baseline,
        "Remove the extra entries from securityContext.capabilities.add.",
        (cis("5.2.9"),),
    ),
    _pod_rule(
        "host-path-volumes",
        "hostPath volumes expose the node's filesystem to the pod (credentials, runtime sockets, other pods' data).",
        host_path_volumes,
        "Replace hostPath volumes with persistentVolumeClaim, emptyDir, configMap, secret or projected volumes.",
        (cis("5.2.12"), nsa("Pod security: immutable container filesystems")),
        Severity.CRITICAL,
    ),
    _pod_rule(
        "host-ports",
        "Host ports bypass Services and NetworkPolicies and pin pods to nodes.",
        host_ports,
        "Remove hostPort from container ports; expose the port through a Service.",
        (cis("5.2.13"),),
    ),
    _pod_rule(
        "apparmor",
        "Overriding or disabling the default AppArmor profile removes a kernel confinement layer.",
        apparmor,
        "Use appArmorProfile.type RuntimeDefault or Localhost, or leave it unset.",
    ),
    _pod_rule(
        "selinux",
        "Custom SELinux users, roles or types can lift the container's confinement.",
        selinux,
        "Leave seLinuxOptions unset, or use only an allowed container type without user and role.",
    ),
    _pod_rule(
        "proc-mount",
        "An unmasked /proc exposes kernel interfaces that the default mask hides.",
        proc_mount,
        "Remove securityContext.procMount or set it to Default.",
    ),
    _pod_rule(
        "seccomp-baseline",
        "An Unconfined seccomp profile allows every system call, including ones used in container escapes.",
        seccomp_baseline,
        "Set seccompProfile.type to RuntimeDefault or Localhost.",
        (cis("5.7.2"),),
    ),
    _pod_rule(
        "sysctls",
        "Only namespaced, safe sysctls may be set by pods; others change the node's kernel for every pod.",
        sysctls,
        "Remove unsafe entries from spec.securityContext.sysctls.",
    ),
    _pod_rule(
        "windows-host-process",
        "Windows HostProcess containers run with the node's privileges.",
        windows_host_process,
        "Remove windowsOptions.hostProcess.",
        severity=Severity.CRITICAL,
    ),
    _pod_rule(
        "host-probes-and-lifecycle",
        "Probe and lifecycle handlers with a host field can be pointed at other endpoints (Kubernetes 1.34+).",
        host_probes_and_lifecycle,
        "Remove the host field from httpGet and tcpSocket probe and lifecycle handlers.",
        severity=Severity.MEDIUM,
    ),
    _pod_rule(
        "restricted-volumes",
        "The restricted level allows only volume types that cannot reach node or network storage directly.",
        restricted_volumes,
        "Use only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected or secret "
        "volumes.",
    ),
    _pod_rule(
        "allow-privilege-escalation",
        "Without allowPrivilegeEscalation=false a process can gain privileges through setuid binaries.",
        allow_privilege_escalation,
        SECURITY_CONTEXT_FIX,
        (cis("5.2.6"), nsa("Pod security: privilege escalation")),
    ),
    _pod_rule(
        "run-as-non-root",
        "Containers running as root turn any escape into root on the node.",
        run_as_non_root,
        SECURITY_CONTEXT_FIX,
        (cis("5.2.7"), nsa("Pod security: non-root containers")),
    ),
    _pod_rule(
        "run-as-user",
        "runAsUser 0 is root whatever the image says.",
        run_as_user,
        SECURITY_CONTEXT_FIX,
        (cis("5.2.7"),),
    ),
    _pod_rule(
        "seccomp-restricted",
        "The restricted level requires the runtime's default seccomp profile (or a local one) on every container.",
        seccomp_restricted,
        SECURITY_CONTEXT_FIX,
        (cis("5.7.2"), nsa("Pod security: seccomp")),
    ),
    _pod_rule(
        "capabilities-restricted",
        "Every container drops all capabilities and adds back at most NET_BIND_SERVICE.",
        capabilities_restricted,
        SECURITY_CONTEXT_FIX,
        (cis("5.2.8"), cis("5.2.10"), nsa("Pod security: capabilities")),
    ),
]
