"""What each compliance profile sets beyond the policy pack, one table per profile.

The pack's own numbers (certificate lifetime, key rotation, retention minimums) and enforcement levels live in
policies/profiles.py, where `pulumi preview --policy-pack` reads them; each profile's table here carries those
numbers too, so that the stack schema refuses what the pack would, and adds what only the program needs: Harbor's
blocking severity, the TLS 1.2 ciphers, metrics retention, Elasticsearch nodes, whether weights need a manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.profiles import PROFILES, THRESHOLDS, Profile

# TLS 1.3 cipher suites are fixed by the protocol; these are the TLS 1.2 suites a profile allows where 1.2 is needed
# (backends): ECDHE with AEAD only.
_STRICT_CIPHERS = ("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384")


@dataclass(frozen=True)
class ProfileSettings:
    vulnerability_severity: str
    """Harbor blocks pulls of images with a vulnerability at or above this severity."""
    tls12_ciphers: tuple[str, ...]
    metrics_retention_days: int
    elasticsearch_nodes: int
    integrity_required: bool
    """Every model must carry a weight manifest (supply-chain control, OWASP LLM03)."""
    max_certificate_days: int
    max_key_rotation_days: int
    min_audit_retention_days: int
    min_app_retention_days: int


def _settings(
    profile: Profile,
    severity: str,
    ciphers: tuple[str, ...],
    metrics_days: int,
    es_nodes: int,
    integrity_required: bool,
) -> ProfileSettings:
    pack = THRESHOLDS[profile]
    return ProfileSettings(
        vulnerability_severity=severity,
        tls12_ciphers=ciphers,
        metrics_retention_days=metrics_days,
        elasticsearch_nodes=es_nodes,
        integrity_required=integrity_required,
        max_certificate_days=pack["maxCertificateDays"],
        max_key_rotation_days=pack["maxKeyRotationDays"],
        min_audit_retention_days=pack["minAuditRetentionDays"],
        min_app_retention_days=pack["minAppRetentionDays"],
    )


PROFILE_SETTINGS: dict[str, ProfileSettings] = {
    "baseline": _settings("baseline", "critical", (*_STRICT_CIPHERS, "ECDHE-ECDSA-CHACHA20-POLY1305"), 15, 1, False),
    "finance": _settings("finance", "high", _STRICT_CIPHERS, 90, 3, True),
    "healthcare": _settings("healthcare", "high", _STRICT_CIPHERS, 90, 3, True),
    "government": _settings("government", "high", _STRICT_CIPHERS, 180, 3, True),
}
if tuple(PROFILE_SETTINGS) != PROFILES:
    raise RuntimeError("infra/profiles.py needs one table per profile of policies/profiles.py")
