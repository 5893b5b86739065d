"""The standard Kubernetes labels every object of the platform carries."""

from __future__ import annotations

import re
from collections.abc import Mapping

PART_OF = "private-llm"
MANAGED_BY = "pulumi"


def standard_labels(name: str, instance: str, component: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """`app.kubernetes.io/*` labels (name, instance, component, part-of, managed-by), plus any extra ones."""
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    if extra:
        labels.update(extra)
    return labels


# Data volumes are created with retain_on_delete=True. Policy packs cannot see that option (the engine sends
# analyzers protect, ignoreChanges, deleteBeforeReplace, aliases, customTimeouts, additionalSecretOutputs and parent
# only), so the object also says it: the pack's data-volumes-retained rule reads this annotation, and the offline
# check verifies that every object carrying it really has retainOnDelete.
RETAIN_ANNOTATION = "privatellm.io/retain-on-delete"
RETAINED = {RETAIN_ANNOTATION: "true"}


# checkov reads skips from the object's own metadata.annotations, one check per key: `checkov.io/skipN: ID=reason`
# (checkov/kubernetes/kubernetes_utils.py splits on "=", so a reason must not contain one).
_SCANNER_CHECK = re.compile(r"^CKV2?_K8S_[0-9]+$")


def scanner_skips(skips: Mapping[str, str]) -> dict[str, str]:
    """`checkov.io/skipN` annotations for documented exceptions to checkov checks: {check id: reason}."""
    annotations: dict[str, str] = {}
    for index, (check, reason) in enumerate(sorted(skips.items()), start=1):
        if not _SCANNER_CHECK.fullmatch(check):
            raise ValueError(f"scanner skip {check!r} is not a checkov Kubernetes check id such as CKV_K8S_43")
        if not reason.strip() or "=" in reason:
            raise ValueError(f"scanner skip {check}: the reason must be a non-empty sentence without '=': {reason!r}")
        annotations[f"checkov.io/skip{index}"] = f"{check}={reason.strip()}"
    return annotations
