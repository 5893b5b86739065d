"""In-cluster defence in depth: ValidatingAdmissionPolicies for what Pod Security Admission does not cover.

The policy pack judges what Pulumi sends; these policies judge what anyone sends to the API server (a tenant admin
with kubectl, a Helm chart installed by hand, an operator creating pods). `AdmissionGuardrails` creates one
`ValidatingAdmissionPolicy` (admissionregistration.k8s.io/v1, GA since Kubernetes 1.30) and one binding per control:

- `images-from-internal-registry`: rejects an image whose host is not one of the allowed registries;
- `images-pinned`: rejects an image with no tag, or `:latest`, and no `@sha256:` digest;
- `vllm-client-certificates`: rejects a vLLM server without `--ssl-certfile`, `--ssl-keyfile`, `--ssl-ca-certs` and
  `--ssl-cert-reqs 2`;
  (these three match Pods and their ephemeral containers, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,
  CronJobs and LeaderWorkerSets: a bad template is refused before its controller tries to create pods)
- `no-external-services`: rejects a LoadBalancer or NodePort Service outside the declared entry namespaces (the
  gateway's, and the registry's when Harbor is exposed);
- `workload-labels`: rejects a pod template (or Pod) without the required labels, in tenant namespaces only.

The names follow the policy pack's rules (`policies/supplychain.py`, `policies/tls.py`) so that an audit entry maps to
the same control in the compliance report. Every policy has `failurePolicy: Fail`, matches CREATE and UPDATE (an
update only when it changes the spec, `SPEC_CHANGED`), and its messages name the offending container (or Service)
and say what to change.

Design choices:

- **Which namespaces.** A binding selects namespaces by the labels `SecureNamespace` puts on every platform and
  tenant namespace (`app.kubernetes.io/part-of=private-llm`, `app.kubernetes.io/instance=<stack>`), and always
  excludes `kube-system`, `kube-public` and `kube-node-lease` by their API-server-set
  `kubernetes.io/metadata.name` label. A list of names would have to repeat every place the program creates a
  namespace (platform roles, tenants, the gateway controllers, the log shipper, the GPU Operator): a namespace added
  later would be silently unguarded. The labels are already a contract (trust-manager distributes the platform CA by
  `part-of`), tenant roles cannot edit Namespace objects, and removing the label also cuts the namespace off from
  the CA bundle, so it cannot be dropped quietly. The instance label keeps two platforms on one cluster apart.
- **GPU Operator namespace.** It is a `SecureNamespace` like the others and stays guarded: it is exempt from the
  restricted Pod Security level (its pods must be privileged), not from supply-chain controls. The platform
  renders its operands' images through the same internal registry, and a privileged pod is exactly where an image
  from elsewhere does the most harm. kube-system is never matched.
- **Required labels, tenant namespaces only.** In platform namespaces workloads come from our components (labelled
  by `standard_labels` and checked by the pack before they are sent) and from third-party charts and operators
  whose objects we do not label: GPU Operator operands (`app: nvidia-driver-daemonset`), ECK and
  prometheus-operator StatefulSets carry their own label schemes. Tenant roles grant no rights there. In tenant
  namespaces, tenants create workloads directly (the admin and member roles may), nothing of the platform's runs
  there, and the labels are what dashboards, logs and NetworkPolicies select by. So that policy's binding adds the
  tenant label (`privatellm.io/tenant` exists) to the selector.
- **Literals, not params.** The allowed registries and gateway namespaces are rendered into the CEL as list
  literals (strings escaped by `cel_string`). They are per-stack values that only change with a `pulumi up`, so a
  policy is self-contained: a preview shows the whole rule in its diff, the rule is tested offline exactly as the
  API server will run it, and there is no parameter object (ConfigMap or CRD) whose deletion or edit by someone with
  rights in its namespace would change or, with `parameterNotFoundAction`, disable the control.
- **Deny and Audit.** The default `validationActions` are `[Deny, Audit]`: the request is refused and the failure is
  also written to the API server's audit log (annotation `validation.policy.admission.k8s.io/validation_failure`),
  so an auditor sees attempts, not only what got in. `[Warn, Audit]` is the dry run for a first rollout on a cluster
  with existing workloads (Kubernetes does not allow Deny together with Warn).
- **CEL subset.** Only what both the Kubernetes CEL environment and cel-python evaluate: `has()`, the
  `all`/`exists`/`filter`/`map` macros, `startsWith`, `endsWith`, `matches` (RE2), `size`, `in`, `string()`,
  conditionals and list concatenation. Kinds are told apart by `request.kind.kind`. There is no `split`, `join`,
  `indexOf` or `cel.bind`: a flag's value is found by index over a literal index list (`ARGV_LIMIT` arguments at
  most; a longer command line cannot be verified and is rejected).

vLLM detection mirrors `policies/tls.py` (`vllm ... serve`, not `bench`, `--headless` workers exempt) and adds what
only matters against hand-written pods: `python -m vllm.entrypoints.openai.api_server`, the `vllm-openai` image
run with its own entrypoint (`vllm serve`) and no command, and `vllm serve` inside a shell string, which is
rejected because its flags cannot be verified. Every spelling argparse accepts for `--ssl-cert-reqs`
(underscores, unambiguous abbreviations, `=value`) must say 2, since the last one given wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.base import check_dns_label
from components.labels import PART_OF, standard_labels

VALIDATION_ACTIONS = ("Deny", "Warn", "Audit")
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
NAME_LABEL = "kubernetes.io/metadata.name"
SPEC_CHANGED = "request.operation != 'UPDATE' || object.spec != oldObject.spec"
"""The match condition of every policy: an update is judged only when it changes the spec. Images, commands, pod
templates and Service types all live in `spec`; an update of metadata alone (a finalizer removed while a pod is
deleted, a label added by a controller) must not be refused because of an object that predates the policy."""
ARGV_LIMIT = 128
"""The longest vLLM command line (command + args) whose flags the policy can verify."""

# A registry host must be unambiguous in an image reference: Docker takes the first path component as the host only
# if it has a dot or a port or is localhost (otherwise `foo/bar` means docker.io/foo/bar).
_REGISTRY = re.compile(r"^(localhost|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+)(:[0-9]{1,5})?$")
_REGISTRY_WITH_PORT = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?:[0-9]{1,5}$")
_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
PUBLIC_REGISTRIES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "quay.io", "ghcr.io", "nvcr.io", "registry.k8s.io"}
)


def _check_label_name(value: str, what: str) -> None:
    prefix, _, name = value.rpartition("/")
    if not _LABEL_NAME.fullmatch(value) or len(name) > 63 or len(prefix) > 253:
        raise ValueError(f"{what}={value!r} is not a Kubernetes label key such as app.kubernetes.io/name")


@dataclass(frozen=True)
class AdmissionGuardrailsArgs:
    """What the guardrails need. Validated when constructed: a bad value raises a ValueError naming the field."""

    instance: str
    allowed_registries: Sequence[str]
    gateway_namespaces: Sequence[str] = ()
    namespace_labels: Mapping[str, str] | None = None
    """Labels every guarded namespace carries; default: the part-of and instance labels of `SecureNamespace`."""
    tenant_namespace_label: str = "privatellm.io/tenant"
    """A label key present only on tenant namespaces: where the required-labels policy applies."""
    required_labels: Sequence[str] = ("app.kubernetes.io/name",)
    """Label keys every pod template in a tenant namespace must carry (empty: no required-labels policy)."""
    excluded_namespaces: Sequence[str] = ()
    """Namespaces never matched, on top of kube-system, kube-public and kube-node-lease."""
    validation_actions: Sequence[str] = ("Deny", "Audit")

    def __post_init__(self) -> None:
        check_dns_label("instance", self.instance)
        if isinstance(self.allowed_registries, str):
            raise ValueError("allowed_registries must be a list of registry hosts, not one string")
        if not self.allowed_registries:
            raise ValueError(
                "allowed_registries is empty: give the host of the platform registry (e.g. harbor.bank.internal); "
                "with no registry every image would be rejected"
            )
        for i, host in enumerate(self.allowed_registries):
            if not isinstance(host, str) or not (_REGISTRY.fullmatch(host) or _REGISTRY_WITH_PORT.fullmatch(host)):
                raise ValueError(
                    f"allowed_registries[{i}]={host!r} is not a registry host: use a host name with a dot or a port "
                    "(harbor.bank.internal, registry:5000), lower case, without scheme or path"
                )
            if host in PUBLIC_REGISTRIES:
                raise ValueError(
                    f"allowed_registries[{i}]={host!r} is a public registry: mirror its images into the platform "
                    "registry and allow only that"
                )
        if len(set(self.allowed_registries)) != len(self.allowed_registries):
            raise ValueError(f"allowed_registries repeats a host: {list(self.allowed_registries)}")
        if isinstance(self.gateway_namespaces, str):
            raise ValueError("gateway_namespaces must be a list of namespace names, not one string")
        for i, ns in enumerate(self.gateway_namespaces):
            check_dns_label(f"gateway_namespaces[{i}]", ns)
        if self.namespace_labels is not None:
            if not self.namespace_labels:
                raise ValueError(
                    "namespace_labels is empty: an empty selector would guard every namespace of the cluster; "
                    "give the labels of the platform's namespaces"
                )
            for key, value in self.namespace_labels.items():
                _check_label_name(key, "namespace_labels key")
                if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
                    raise ValueError(f"namespace_labels[{key!r}]={value!r} is not a Kubernetes label value")
        _check_label_name(self.tenant_namespace_label, "tenant_namespace_label")
        if isinstance(self.required_labels, str):
            raise ValueError("required_labels must be a list of label keys, not one string")
        for i, key in enumerate(self.required_labels):
            _check_label_name(key, f"required_labels[{i}]")
        if isinstance(self.excluded_namespaces, str):
            raise ValueError("excluded_namespaces must be a list of namespace names, not one string")
        for i, ns in enumerate(self.excluded_namespaces):
            check_dns_label(f"excluded_namespaces[{i}]", ns)
            if ns in self.gateway_namespaces:
                raise ValueError(
                    f"excluded_namespaces[{i}]={ns!r} is also a gateway namespace: a gateway namespace is guarded"
                )
        actions = list(self.validation_actions)
        if isinstance(self.validation_actions, str) or not actions:
            raise ValueError("validation_actions must be a non-empty list: Deny and Audit (Warn and Audit to dry-run)")
        unknown = [a for a in actions if a not in VALIDATION_ACTIONS]
        if unknown:
            raise ValueError(f"validation_actions has {unknown}; use {', '.join(VALIDATION_ACTIONS)}")
        if len(set(actions)) != len(actions):
            raise ValueError(f"validation_actions repeats an action: {actions}")
        if "Deny" in actions and "Warn" in actions:
            raise ValueError("validation_actions: Deny and Warn together are not allowed by Kubernetes; pick one")

    @property
    def guarded_namespace_labels(self) -> dict[str, str]:
        if self.namespace_labels is not None:
            return dict(self.namespace_labels)
        return {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/instance": self.instance}

    @property
    def never_matched(self) -> list[str]:
        return list(dict.fromkeys([*SYSTEM_NAMESPACES, *self.excluded_namespaces]))


# ------------------------------------------------------------------------------------------------------------- CEL


def cel_string(value: str) -> str:
    """A CEL double-quoted string literal for `value` (backslash, quote and control characters escaped)."""
    out = []
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(cel_string(v) for v in values) + "]"


def _or_empty(path: str, field_name: str) -> str:
    return f"(has({path}.{field_name}) ? {path}.{field_name} : [])"


def _containers_of(spec: str) -> str:
    """Every container of one pod spec: containers, init containers and ephemeral containers."""
    return " + ".join(_or_empty(spec, f) for f in ("containers", "initContainers", "ephemeralContainers"))


def _labels_of(metadata: str, guard: bool = True) -> str:
    """The labels of one object or pod template metadata, `{}` when it has none."""
    condition = f"has({metadata}) && has({metadata}.labels)" if guard else f"has({metadata}.labels)"
    return f"({condition} ? {metadata}.labels : {{}})"


KIND = "request.kind.kind"
LWS = "object.spec.leaderWorkerTemplate"


def _per_kind(pod: str, cronjob: str, lws: str, template: str) -> str:
    """One expression per kind of object the pod-template policies match (Deployment & co. share `template`)."""
    return (
        f"{KIND} == 'Pod' ? {pod} : {KIND} == 'CronJob' ? {cronjob} : {KIND} == 'LeaderWorkerSet' ? {lws} : {template}"
    )


def containers_expression() -> str:
    """`variables.containers`: every container of every pod spec of the object, whatever its kind."""
    return _per_kind(
        _containers_of("object.spec"),
        _containers_of("object.spec.jobTemplate.spec.template.spec"),
        f"(has({LWS}.leaderTemplate) && has({LWS}.leaderTemplate.spec) ? "
        f"{_containers_of(f'{LWS}.leaderTemplate.spec')} : []) + {_containers_of(f'{LWS}.workerTemplate.spec')}",
        _containers_of("object.spec.template.spec"),
    )


def pod_labels_expression() -> str:
    """`variables.podLabels`: the labels of every pod template of the object (of the Pod itself for Pods)."""
    return _per_kind(
        f"[{_labels_of('object.metadata', guard=False)}]",
        f"[{_labels_of('object.spec.jobTemplate.spec.template.metadata')}]",
        f"(has({LWS}.leaderTemplate) ? [{_labels_of(f'{LWS}.leaderTemplate.metadata')}] : []) + "
        f"[{_labels_of(f'{LWS}.workerTemplate.metadata')}]",
        f"[{_labels_of('object.spec.template.metadata')}]",
    )


_DIGEST = "@sha256:[0-9a-f]{64}$"
_TAG = ":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"


def pinned_expression(image: str) -> str:
    """True when `image` names one artifact: a sha256 digest, or an explicit tag other than latest."""
    return (
        f"({image}.matches({cel_string(_DIGEST)}) || (!{image}.contains('@') && {image}.matches({cel_string(_TAG)})"
        f" && !{image}.endsWith(':latest')))"
    )


def registry_expression(image: str, registries: Sequence[str]) -> str:
    """True when `image` is pulled from one of `registries` (by the Docker rule: the first path component)."""
    return f"{cel_list([r + '/' for r in registries])}.exists(r, {image}.startsWith(r))"


def _argv(c: str) -> str:
    return f"({_or_empty(c, 'command')} + {_or_empty(c, 'args')})"


_SHELL_SERVE = r"vllm\s+serve(\s|$)|vllm[.]entrypoints[.]openai[.]api_server\s"
_REQS = r"^--ssl[-_]cert[-_]r(e(q(s)?)?)?"


def vllm_server_expression(c: str) -> str:
    """True when container `c` runs vLLM's API server (see the module docstring for the forms recognised)."""
    argv = _argv(c)
    return (
        f"(({argv}.exists(a, a.matches('(^|/)vllm$')) && 'serve' in {argv} && !('bench' in {argv}))"
        f" || {argv}.exists(a, a.matches('^vllm[.]entrypoints[.]openai[.]api_server$'))"
        f" || {argv}.exists(a, a.matches({cel_string(_SHELL_SERVE)}))"
        f" || (!has({c}.command) && has({c}.image) && {c}.image.matches('/vllm-openai([:@]|$)')))"
    )


def vllm_verified_expression(c: str) -> str:
    """True when the vLLM server in `c` verifies client certificates, or is a headless worker serving no API."""
    argv = _argv(c)

    def given(flag: str) -> str:
        return f"{argv}.exists(a, a == {cel_string(flag)} || a.startsWith({cel_string(flag + '=')}))"

    indices = "[" + ", ".join(str(i) for i in range(ARGV_LIMIT)) + "]"
    every_value_is_2 = (
        f"{indices}.all(i, i < size({argv}) ? ({argv}[i].matches({cel_string(_REQS + '$')}) ? "
        f"(i + 1 < size({argv}) ? {argv}[i + 1] == '2' : false) : true) : true)"
    )
    flags_ok = " && ".join(
        [
            given("--ssl-certfile"),
            given("--ssl-keyfile"),
            given("--ssl-ca-certs"),
            f"{argv}.exists(a, a == '--ssl-cert-reqs' || a == '--ssl-cert-reqs=2')",
            f"{argv}.all(a, !a.matches({cel_string(_REQS + '=')}) || a.matches({cel_string(_REQS + '=2$')}))",
            f"size({argv}) <= {ARGV_LIMIT}",
            every_value_is_2,
        ]
    )
    shell = f"{argv}.exists(a, a.matches({cel_string(_SHELL_SERVE)}))"
    return f"(!{shell} && ('--headless' in {argv} || ({flags_ok})))"


def offender_message(variable: str, describe: str, advice: str) -> str:
    """A message expression naming the first offending container of `variables.<variable>` (`describe` says what of
    it, with `{c}` for the container), how many more there are, and `advice`."""
    first = f"variables.{variable}[0]"
    count = f"size(variables.{variable})"
    return (
        f"'container ' + {describe.format(c=first)} + ({count} > 1 ? ' (and ' + string({count} - 1) + ' more)' : '')"
        f" + {cel_string(advice)}"
    )


@dataclass(frozen=True)
class Validation:
    expression: str
    message: str
    message_expression: str | None = None
    reason: str = "Forbidden"


@dataclass(frozen=True)
class Rule:
    """One resource rule of a policy's matchConstraints."""

    api_group: str
    api_version: str
    resources: tuple[str, ...]


POD_RULES = (
    Rule("", "v1", ("pods",)),
    Rule("apps", "v1", ("deployments", "statefulsets", "daemonsets", "replicasets")),
    Rule("batch", "v1", ("jobs", "cronjobs")),
    Rule("leaderworkerset.x-k8s.io", "v1", ("leaderworkersets",)),
)
# Ephemeral containers are added to a running pod through a subresource (kubectl debug): same Pod object.
CONTAINER_RULES = (Rule("", "v1", ("pods", "pods/ephemeralcontainers")), *POD_RULES[1:])
SERVICE_RULES = (Rule("", "v1", ("services",)),)


@dataclass(frozen=True)
class Control:
    """One policy and its binding, as data: what the component renders and the tests evaluate."""

    name: str
    description: str
    rules: tuple[Rule, ...]
    variables: tuple[tuple[str, str], ...]
    validations: tuple[Validation, ...]
    tenants_only: bool = False


def controls(args: AdmissionGuardrailsArgs) -> list[Control]:
    """The guardrails for `args`, in a stable order."""
    containers = ("containers", containers_expression())
    registries = ", ".join(args.allowed_registries)
    gateways = ", ".join(args.gateway_namespaces) or "none declared"
    out = [
        Control(
            name="images-from-internal-registry",
            description="Every image comes from the platform's own registry (CIS 5.5.1, OWASP LLM03).",
            rules=CONTAINER_RULES,
            variables=(
                containers,
                (
                    "untrustedImages",
                    "variables.containers.filter(c, has(c.image) && "
                    f"!{registry_expression('c.image', args.allowed_registries)})",
                ),
            ),
            validations=(
                Validation(
                    expression="size(variables.untrustedImages) == 0",
                    message=(
                        f"an image comes from outside the allowed registries ({registries}); mirror it into the "
                        "platform registry and reference it as <registry>/<project>/<repository>:<tag>"
                    ),
                    message_expression=offender_message(
                        "untrustedImages",
                        "{c}.name + ' pulls ' + {c}.image",
                        f" from outside the allowed registries ({registries}); mirror the image into the platform "
                        "registry and reference it as <registry>/<project>/<repository>:<tag>",
                    ),
                ),
            ),
        ),
        Control(
            name="images-pinned",
            description="Every image names one artifact: an explicit tag or a digest, never :latest (CIS 5.5.1).",
            rules=CONTAINER_RULES,
            variables=(
                containers,
                ("unpinnedImages", f"variables.containers.filter(c, has(c.image) && !{pinned_expression('c.image')})"),
            ),
            validations=(
                Validation(
                    expression="size(variables.unpinnedImages) == 0",
                    message=(
                        "an image has no tag or uses :latest; give an explicit version tag or an @sha256 digest "
                        "(private-llm images lock pins digests)"
                    ),
                    message_expression=offender_message(
                        "unpinnedImages",
                        "{c}.name + ' uses image ' + {c}.image",
                        ", which has no tag or is :latest; give an explicit version tag or an @sha256 digest "
                        "(private-llm images lock pins digests)",
                    ),
                ),
            ),
        ),
        Control(
            name="vllm-client-certificates",
            description="vLLM servers accept only clients with a certificate of the platform CA (mutual TLS).",
            rules=CONTAINER_RULES,
            variables=(
                containers,
                (
                    "vllmWithoutClientAuth",
                    f"variables.containers.filter(c, {vllm_server_expression('c')} && "
                    f"!{vllm_verified_expression('c')})",
                ),
            ),
            validations=(
                Validation(
                    expression="size(variables.vllmWithoutClientAuth) == 0",
                    message=(
                        "a vLLM server does not verify client certificates; run `vllm serve` directly (not in a "
                        "shell) with --ssl-certfile, --ssl-keyfile, --ssl-ca-certs and --ssl-cert-reqs 2"
                    ),
                    message_expression=offender_message(
                        "vllmWithoutClientAuth",
                        "{c}.name",
                        " serves vLLM without verifying client certificates; run `vllm serve` directly (not in a "
                        "shell) with --ssl-certfile, --ssl-keyfile, --ssl-ca-certs <platform CA> and "
                        "--ssl-cert-reqs 2 (a VllmService with ServingTls does)",
                    ),
                ),
            ),
        ),
        Control(
            name="no-external-services",
            description="Only the declared entry points may be reachable from outside the cluster (NSA).",
            rules=SERVICE_RULES,
            variables=(),
            validations=(
                Validation(
                    expression=(
                        "!has(object.spec.type) || !(object.spec.type in ['LoadBalancer', 'NodePort']) || "
                        f"request.namespace in {cel_list(args.gateway_namespaces)}"
                    ),
                    message=(
                        f"a LoadBalancer or NodePort Service outside the entry namespaces ({gateways}); use "
                        "ClusterIP and route external traffic through the gateway"
                    ),
                    message_expression=(
                        "'Service ' + (has(object.metadata.name) ? object.metadata.name : '') + ' is of type ' + "
                        "object.spec.type + ' in namespace ' + request.namespace + "
                        + cel_string(
                            f"; only the entry namespaces ({gateways}) may expose Services outside the cluster: "
                            "use ClusterIP and route external traffic through the gateway"
                        )
                    ),
                ),
            ),
        ),
    ]
    if args.required_labels:
        out.append(
            Control(
                name="workload-labels",
                description="Tenant workloads carry the labels dashboards, logs and network policies select by.",
                rules=POD_RULES,
                variables=(("podLabels", pod_labels_expression()),),
                validations=tuple(
                    Validation(
                        expression=f"variables.podLabels.all(l, {cel_string(key)} in l && l[{cel_string(key)}] != '')",
                        message=f"every pod template must carry the label {key}; set it in the pod template's labels",
                        message_expression=(
                            f"{KIND} + ' ' + (has(object.metadata.name) ? object.metadata.name : '') + "
                            + cel_string(
                                f" has a pod template without the label {key}: set it in the pod template's "
                                "metadata.labels (for example the application's name)"
                            )
                        ),
                        reason="Invalid",
                    )
                    for key in args.required_labels
                ),
                tenants_only=True,
            )
        )
    return out


# ------------------------------------------------------------------------------------------------------- component


class AdmissionGuardrails(pulumi.ComponentResource):
    """ValidatingAdmissionPolicies and their bindings for the platform's and tenants' namespaces."""

    policies: dict[str, k8s.admissionregistration.v1.ValidatingAdmissionPolicy]
    bindings: dict[str, k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding]

    def __init__(self, name: str, args: AdmissionGuardrailsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("privatellm:baseline:AdmissionGuardrails", name, None, opts)
        self.policies = {}
        self.bindings = {}
        for control in controls(args):
            object_name = f"{args.instance}-{control.name}"
            labels = standard_labels(name=object_name, instance=args.instance, component="admission-policy")
            policy = k8s.admissionregistration.v1.ValidatingAdmissionPolicy(
                f"{name}-{control.name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=object_name,
                    labels=labels,
                    annotations={"privatellm.io/description": control.description},
                ),
                spec=k8s.admissionregistration.v1.ValidatingAdmissionPolicySpecArgs(
                    failure_policy="Fail",
                    match_conditions=[
                        k8s.admissionregistration.v1.MatchConditionArgs(
                            name="create-or-spec-change", expression=SPEC_CHANGED
                        )
                    ],
                    match_constraints=k8s.admissionregistration.v1.MatchResourcesArgs(
                        match_policy="Equivalent",
                        resource_rules=[
                            k8s.admissionregistration.v1.NamedRuleWithOperationsArgs(
                                api_groups=[rule.api_group],
                                api_versions=[rule.api_version],
                                resources=list(rule.resources),
                                operations=["CREATE", "UPDATE"],
                                scope="Namespaced",
                            )
                            for rule in control.rules
                        ],
                    ),
                    variables=[
                        k8s.admissionregistration.v1.VariableArgs(name=var_name, expression=expression)
                        for var_name, expression in control.variables
                    ]
                    or None,
                    validations=[
                        k8s.admissionregistration.v1.ValidationArgs(
                            expression=v.expression,
                            message=v.message,
                            message_expression=v.message_expression,
                            reason=v.reason,
                        )
                        for v in control.validations
                    ],
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            expressions = [
                k8s.meta.v1.LabelSelectorRequirementArgs(key=NAME_LABEL, operator="NotIn", values=args.never_matched)
            ]
            if control.tenants_only:
                expressions.append(
                    k8s.meta.v1.LabelSelectorRequirementArgs(key=args.tenant_namespace_label, operator="Exists")
                )
            binding = k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding(
                f"{name}-{control.name}-binding",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=object_name, labels=labels),
                spec=k8s.admissionregistration.v1.ValidatingAdmissionPolicyBindingSpecArgs(
                    policy_name=object_name,
                    validation_actions=list(args.validation_actions),
                    match_resources=k8s.admissionregistration.v1.MatchResourcesArgs(
                        namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                            match_labels=args.guarded_namespace_labels,
                            match_expressions=expressions,
                        ),
                    ),
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
            )
            self.policies[control.name] = policy
            self.bindings[control.name] = binding
        self.register_outputs({"policies": [f"{args.instance}-{c}" for c in self.policies]})
