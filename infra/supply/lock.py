"""`private-llm images lock`: every image of a stack resolved to the digest the registry it is pulled from serves."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from infra.config import (
    PlatformSpec,
)
from infra.supply.inventory import stack_inventory
from infra.supply.registry_client import RegistryError, resolve_digest

BOOTSTRAP_HINT = (
    "not loaded yet; push it to the bootstrap registry at exactly this reference: the mirror does "
    "(`pulumi up` with privatellm:mode=mirror and privatellm:mirrorTo all or bootstrap), or the site's own tooling"
)


BOOTSTRAP_CREDENTIALS_HINT = (
    "give an account with pull access to the bootstrap registry (PRIVATELLM_BOOTSTRAP_REGISTRY_USERNAME and "
    "PRIVATELLM_BOOTSTRAP_REGISTRY_PASSWORD); the cluster's nodes pull these images without a pull secret"
)


def lock_stack(
    spec: PlatformSpec,
    project_dir: Path,
    registry_url: str | None = None,
    auth: tuple[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
    ca_file: str | Path | None = None,
    bootstrap_url: str | None = None,
    bootstrap_auth: tuple[str, str] | None = None,
) -> dict[str, str]:
    """Catalog key → digest of every image of the stack, each resolved from the registry the cluster pulls it from:
    `registry_url` (default `https://<registry.host>`, credentials `auth`) for most, and for the images pulled before
    Harbor exists (Harbor's own and, with a managed Harbor, the PKI's) the bootstrap registry: `bootstrap_url`
    (default `$PRIVATELLM_BOOTSTRAP_REGISTRY_URL`, else `https://<registry.harbor.bootstrap_registry>`), credentials
    `bootstrap_auth` (default `$PRIVATELLM_BOOTSTRAP_REGISTRY_USERNAME`/`_PASSWORD`, else none: the nodes pull them
    without a pull secret). The credentials of one registry are never sent to the other.

    The existing lock is ignored. An image whose tag the stack sets (`gpu_operator.driver_version`) is resolved (it
    must be there) but not returned: the lock pins catalog tags only. Every failing image is reported in one
    RegistryError."""
    images, _ = stack_inventory(spec, project_dir)
    assert spec.registry is not None  # checked by stack_inventory
    url = registry_url or f"https://{spec.registry.host}"
    harbor = spec.registry.harbor
    if harbor is not None:
        bootstrap_url = bootstrap_url or os.environ.get("PRIVATELLM_BOOTSTRAP_REGISTRY_URL") or None
        bootstrap_url = bootstrap_url or f"https://{harbor.bootstrap_registry}"
        if bootstrap_auth is None:
            user = os.environ.get("PRIVATELLM_BOOTSTRAP_REGISTRY_USERNAME")
            password = os.environ.get("PRIVATELLM_BOOTSTRAP_REGISTRY_PASSWORD")
            bootstrap_auth = (user, password) if user and password else None
    digests: dict[str, str] = {}
    problems: list[str] = []
    for entry in images:
        try:
            if entry.bootstrap:
                assert bootstrap_url is not None
                digest = resolve_digest(
                    bootstrap_url,
                    entry.repository,
                    entry.tag,
                    bootstrap_auth,
                    opener=opener,
                    ca_file=ca_file,
                    missing_hint=BOOTSTRAP_HINT,
                    credentials_hint=BOOTSTRAP_CREDENTIALS_HINT,
                )
            else:
                digest = resolve_digest(url, entry.repository, entry.tag, auth, opener=opener, ca_file=ca_file)
        except RegistryError as exc:
            problems.append(f"{exc} (bootstrap registry)" if entry.bootstrap else str(exc))
            continue
        if entry.lockable:
            digests[entry.key] = digest
    if problems:
        raise RegistryError(
            f"{len(problems)} of {len(images)} images could not be resolved:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return digests
