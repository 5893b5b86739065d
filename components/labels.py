"""The standard Kubernetes labels every object of the platform carries."""

from __future__ import annotations

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
