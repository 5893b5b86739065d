"""Compliance profiles: the thresholds and enforcement levels each one gives the pack.

A profile is pack config (`profile` in every policy's config), so `pulumi preview --policy-pack policies` and the
offline check apply the same numbers; an explicit threshold in the config wins over the profile's. The stack schema
(infra/config/, through infra/profiles.py) reads its limits from here too, so a stack file is refused for the same
numbers the pack enforces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from pulumi_policy import EnforcementLevel

Profile = Literal["baseline", "finance", "healthcare", "government"]
"""The compliance profiles: the one list the pack, the stack schema and the profile tables share."""
PROFILES: tuple[str, ...] = get_args(Profile)
DEFAULT_PROFILE = "baseline"

# Per profile: longest certificate lifetime and API-key rotation period, shortest audit and application log
# retention (days). Sources: PCI DSS 4.0 10.5.1 (audit logs kept 12 months), China MLPS level 3 (logs kept at least
# 6 months), HIPAA 164.312(b) audit controls and 164.316(b)(2) six-year retention, NIST SP 800-57 (cryptoperiods),
# the NSA/CISA guidance on certificates.
THRESHOLDS: dict[str, dict[str, int]] = {
    "baseline": {
        "maxCertificateDays": 365,
        "maxKeyRotationDays": 365,
        "minAuditRetentionDays": 30,
        "minAppRetentionDays": 7,
    },
    "finance": {
        "maxCertificateDays": 90,
        "maxKeyRotationDays": 90,
        "minAuditRetentionDays": 365,
        "minAppRetentionDays": 30,
    },
    # HIPAA 164.316(b)(2)(i): documentation of the required activities is kept six years; audit logs are the
    # record of access to ePHI, so the healthcare profile keeps them that long.
    "healthcare": {
        "maxCertificateDays": 180,
        "maxKeyRotationDays": 180,
        "minAuditRetentionDays": 2190,
        "minAppRetentionDays": 30,
    },
    "government": {
        "maxCertificateDays": 90,
        "maxKeyRotationDays": 90,
        "minAuditRetentionDays": 365,
        "minAppRetentionDays": 90,
    },
}
THRESHOLD_KEYS = tuple(THRESHOLDS[DEFAULT_PROFILE])

# Enforcement per profile: what the baseline profile only warns about (a developer's registry may not offer
# immutable tags, a developer's model may have no approved manifest yet); every other profile enforces everything.
LEVELS: dict[str, dict[str, EnforcementLevel]] = {
    "baseline": {
        "images-pinned": EnforcementLevel.ADVISORY,
        "charts-from-internal-registry": EnforcementLevel.ADVISORY,
        "model-weights-verified": EnforcementLevel.ADVISORY,
        "canary-approval": EnforcementLevel.ADVISORY,
    },
    "finance": {},
    "healthcare": {},
    "government": {},
}


def profile_of(config: Mapping[str, Any]) -> str:
    profile = config.get("profile", DEFAULT_PROFILE)
    return profile if profile in THRESHOLDS else DEFAULT_PROFILE


def threshold(config: Mapping[str, Any], key: str) -> int:
    """The config's explicit value for `key`, else the profile's (validated config never reaches here wrong-typed).
    The engine hands config numbers over as protobuf doubles (90.0)."""
    value = config.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return THRESHOLDS[profile_of(config)][key]
