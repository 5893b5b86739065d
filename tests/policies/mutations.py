"""What a mutation test injects: a known violation of one policy into a resource of a shipped stack's render.

Each policy area's test file (`tests/policies/test_<area>.py`) declares the mutations of its own rules:
`MUTATIONS` (a violation injected into a resource that complies), `STACK_MUTATIONS` (a safeguard taken away: which
resource to remove) and `ADDITIONS` (a resource added to the render). tests/stacks/test_mutations.py collects them
from every area and runs each against every shipped stack, so a new policy touches its rule module and its test file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from infra.offline import RecordedResource, Recording
from policies.base import POD_TYPES, is_vllm_server

Props = dict[str, Any]


def templates(props: Props) -> list[Props]:
    """Pod specs inside a workload (a Pod is its own template)."""
    spec = props.get("spec") or {}
    if props.get("kind") == "Pod":
        return [spec]
    if props.get("kind") == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if props.get("kind") == "LeaderWorkerSet":
        lwt = spec["leaderWorkerTemplate"]
        return [lwt[t]["spec"] for t in ("leaderTemplate", "workerTemplate") if t in lwt]
    return [spec["template"]["spec"]]


def first_container(props: Props) -> Props:
    container: Props = templates(props)[0]["containers"][0]
    return container


def vllm_container(props: Props) -> Props:
    return next(c for t in templates(props) for c in t["containers"] if is_vllm_server(c))


def pod(mutate: Callable[[Props], Any]) -> Callable[[Props], None]:
    def apply(props: Props) -> None:
        mutate(templates(props)[0])

    return apply


def container(mutate: Callable[[Props], Any]) -> Callable[[Props], None]:
    def apply(props: Props) -> None:
        mutate(first_container(props))

    return apply


def server(mutate: Callable[[Props], Any]) -> Callable[[Props], None]:
    def apply(props: Props) -> None:
        mutate(vllm_container(props))

    return apply


def security(c: Props) -> Props:
    result: Props = c.setdefault("securityContext", {})
    return result


def drop_flag(c: Props, flag: str) -> None:
    args = list(c["args"])
    i = args.index(flag)
    del args[i : i + 2]
    c["args"] = args


def set_flag(c: Props, flag: str, value: str) -> None:
    args = list(c["args"])
    args[args.index(flag) + 1] = value
    c["args"] = args


def is_workload(r: RecordedResource) -> bool:
    return r.type in POD_TYPES


def is_vllm_workload(r: RecordedResource) -> bool:
    if not is_workload(r):
        return False
    try:
        vllm_container(r.inputs)
    except StopIteration:
        return False
    return True


def is_kind(*kinds: str) -> Callable[[RecordedResource], bool]:
    return lambda r: r.is_kubernetes_object and r.kind in kinds


def is_chart(name: str) -> Callable[[RecordedResource], bool]:
    return lambda r: r.is_chart and str(r.inputs.get("chart", "")).rstrip("/").endswith(name)


def is_ilm_config(r: RecordedResource) -> bool:
    return (
        r.is_kubernetes_object and r.kind == "ConfigMap" and "privatellm-audit.policy.json" in r.inputs.get("data", {})
    )


def set_audit_retention(props: Props) -> None:
    policy = json.loads(props["data"]["privatellm-audit.policy.json"])
    policy["policy"]["phases"]["delete"]["min_age"] = "1d"
    props["data"]["privatellm-audit.policy.json"] = json.dumps(policy)


@dataclasses.dataclass(frozen=True)
class Mutation:
    policy: str
    what: str
    target: Callable[[RecordedResource], bool]
    mutate: Callable[[Props], None]
    min_minor: int = 0
    """Version-gated checks (Pod Security Admission): only a violation from this Kubernetes minor on."""


def is_default_deny_policy(r: RecordedResource) -> bool:
    """A rendered NetworkPolicy that selects every pod and allows nothing."""
    spec = r.inputs.get("spec", {})
    return (
        r.kind == "NetworkPolicy"
        and spec.get("podSelector") == {}
        and not spec.get("ingress")
        and not spec.get("egress")
    )


StackMutation = Callable[[RecordedResource], bool]
"""Which resource of the render to take away (the first that matches, outside documented exceptions)."""
Addition = Callable[[str], RecordedResource]
"""A resource added to the render of the stack named."""
StackAddition = Callable[[Recording], RecordedResource | None]
"""A resource to add to a stack's render that breaks a stack rule (None: the stack has nothing the rule guards)."""


def recorded(stack: str, resource_type: str, name: str, inputs: Props) -> RecordedResource:
    """A custom resource as the offline engine records it, to add to a stack's render."""
    return RecordedResource.declared(stack, resource_type, name, inputs)
