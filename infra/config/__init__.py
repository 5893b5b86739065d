"""Typed stack configuration: the `privatellm:platform` key of a stack file, parsed into a `PlatformSpec`.

Everything a customer can say about their platform is declared here, with safe defaults, one module per section of
the stack file (`cluster`, `gpu`, `registry`, `models`, `security`, `operations`; `spec` ties them together and
`parse` reads the file). A bad stack file fails before any resource is registered with one `StackConfigError` that
lists every problem: the field path, the bad value and what is allowed. Unknown keys are errors (`extra="forbid"` at
every level), with a "did you mean" hint.

Secrets never live in the platform object: a field ending in `_secret` names another config key of the stack that
was set with `pulumi config set --secret`; `check_secret_refs` checks that each one exists and is encrypted.

This package's public face is what is imported below; the rest of the program imports from `infra.config` only.
"""

from infra.config.cluster import (
    INFERENCE_QUOTA,
    PLATFORM_LIMITS,
    PLATFORM_QUOTA,
    TENANT_ROLES,
    LimitRangeSpec,
    QuotaSpec,
    TenantSpec,
)
from infra.config.gpu import POOL_LABEL, GpuPoolSpec
from infra.config.models import BASE_REVISION, GateSpec, ModelDeploymentSpec, RevisionSpec, RolloutSpec
from infra.config.operations import LOG_SHIPPER_NAMESPACE
from infra.config.parse import (
    check_secret_refs,
    config_secret,
    find_project_dir,
    load_spec,
    parse_platform,
    project_dir,
    qualified_key,
    set_project_dir,
)
from infra.config.registry import HarborSpec, RegistrySpec
from infra.config.spec import PlatformSpec
from infra.config.types import (
    CONFIG_NAMESPACE,
    DEFAULT_KUBERNETES_VERSION,
    FULL_PLATFORM_KEY,
    MAX_KUBERNETES_MINOR,
    MIN_KUBERNETES_MINOR,
    StackConfigError,
)

__all__ = [
    "BASE_REVISION",
    "CONFIG_NAMESPACE",
    "DEFAULT_KUBERNETES_VERSION",
    "FULL_PLATFORM_KEY",
    "INFERENCE_QUOTA",
    "LOG_SHIPPER_NAMESPACE",
    "MAX_KUBERNETES_MINOR",
    "MIN_KUBERNETES_MINOR",
    "PLATFORM_LIMITS",
    "PLATFORM_QUOTA",
    "POOL_LABEL",
    "TENANT_ROLES",
    "GateSpec",
    "GpuPoolSpec",
    "HarborSpec",
    "LimitRangeSpec",
    "ModelDeploymentSpec",
    "PlatformSpec",
    "QuotaSpec",
    "RegistrySpec",
    "RevisionSpec",
    "RolloutSpec",
    "StackConfigError",
    "TenantSpec",
    "check_secret_refs",
    "config_secret",
    "find_project_dir",
    "load_spec",
    "parse_platform",
    "project_dir",
    "qualified_key",
    "set_project_dir",
]
