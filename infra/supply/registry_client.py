"""A small Docker Registry HTTP API v2 client on the standard library: the digest a registry serves for a tag.

Bearer-token and basic auth, HTTPS unless `http://` is given explicitly; every error names the image and the fix."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from infra.catalog import DIGEST

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


MIRROR_HINT = "run the mirror first (`pulumi up` with privatellm:mode=mirror on the connected bastion)"


CREDENTIALS_HINT = (
    "give a registry account with pull access to the project "
    "(PRIVATELLM_REGISTRY_USERNAME and PRIVATELLM_REGISTRY_PASSWORD for `private-llm images lock`)"
)


class RegistryError(Exception):
    """The registry could not give an image's digest; the message names the image and the fix."""


_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` → ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def _base_url(registry_url: str) -> str:
    url = registry_url.strip().rstrip("/")
    if "://" not in url:
        url = f"https://{url}"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise RegistryError(f"registry URL {registry_url!r} must be https://<host>[:port] (http:// only if explicit)")
    return url


def _basic(auth: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")


@dataclass
class _Response:
    status: int
    headers: Message
    body: bytes


def _open(opener: urllib.request.OpenerDirector, request: urllib.request.Request, timeout: float) -> _Response:
    try:
        with opener.open(request, timeout=timeout) as response:
            return _Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read() if exc.fp is not None else b""
        return _Response(exc.code, exc.headers, body)


def resolve_digest(
    registry_url: str,
    repository: str,
    tag: str,
    auth: tuple[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
    ca_file: str | Path | None = None,
    timeout: float = 30.0,
    missing_hint: str = f"not mirrored yet; {MIRROR_HINT}",
    credentials_hint: str = CREDENTIALS_HINT,
) -> str:
    """The `sha256:` digest `<registry>/<repository>:<tag>` resolves to, as the registry serves it.

    HEAD /v2/<repository>/manifests/<tag> accepting OCI and Docker manifests and indexes; answers a bearer-token
    challenge (credentials sent to the realm with basic auth) or a basic challenge; when the registry gives no
    Docker-Content-Digest header, GETs the manifest and hashes its bytes. `registry_url` is HTTPS unless it starts
    with `http://`; `ca_file` adds a private CA (ignored when an `opener` is given). `missing_hint` and
    `credentials_hint` end the message of a 404 and of a 401/403."""
    base = _base_url(registry_url)
    host = urllib.parse.urlsplit(base).netloc
    image = f"{host}/{repository}:{tag}"
    if opener is None:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    url = f"{base}/v2/{urllib.parse.quote(repository)}/manifests/{urllib.parse.quote(tag, safe='')}"
    accept = ", ".join(MANIFEST_MEDIA_TYPES)
    authorization: str | None = None

    def request(method: str) -> _Response:
        req = urllib.request.Request(url, method=method, headers={"Accept": accept})
        if authorization:
            # Never forwarded on a redirect (to blob storage, for instance).
            req.add_unredirected_header("Authorization", authorization)
        try:
            return _open(opener, req, timeout)
        except urllib.error.URLError as exc:
            hint = " (a private CA? give its certificate with --ca-file)" if "CERTIFICATE" in str(exc).upper() else ""
            raise RegistryError(f"{image}: cannot reach the registry at {base}: {exc.reason}{hint}") from None
        except OSError as exc:
            raise RegistryError(f"{image}: cannot reach the registry at {base}: {exc}") from None

    response = request("HEAD")
    if response.status == 401:
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, params = parse_challenge(challenge)
        if scheme == "bearer" and params.get("realm"):
            token = _bearer_token(opener, base, image, params, repository, auth, timeout, credentials_hint)
            authorization = f"Bearer {token}"
        elif scheme == "basic" and auth is not None:
            authorization = _basic(auth)
        else:
            raise RegistryError(f"{image}: the registry requires authentication (HTTP 401); {credentials_hint}")
        response = request("HEAD")
    _check_status(response.status, image, base, auth, missing_hint, credentials_hint)
    digest = response.headers.get("Docker-Content-Digest")
    if digest is None:
        response = request("GET")
        _check_status(response.status, image, base, auth, missing_hint, credentials_hint)
        return "sha256:" + hashlib.sha256(response.body).hexdigest()
    digest = digest.strip()
    if not DIGEST.fullmatch(digest):
        raise RegistryError(f"{image}: the registry answered digest {digest!r}, not sha256:<64 hex digits>")
    return digest


def _check_status(
    status: int,
    image: str,
    base: str,
    auth: tuple[str, str] | None,
    missing_hint: str = f"not mirrored yet; {MIRROR_HINT}",
    credentials_hint: str = CREDENTIALS_HINT,
) -> None:
    if 200 <= status < 300:
        return
    if status == 401:
        what = "refused the credentials" if auth else "requires credentials"
        raise RegistryError(f"{image}: the registry {what} (HTTP 401); {credentials_hint}")
    if status == 403:
        raise RegistryError(f"{image}: the account may not pull this repository (HTTP 403); {credentials_hint}")
    if status == 404:
        raise RegistryError(f"{image} is not in the registry at {base} (HTTP 404): {missing_hint}")
    raise RegistryError(f"{image}: the registry at {base} answered HTTP {status}")


def _bearer_token(
    opener: urllib.request.OpenerDirector,
    base: str,
    image: str,
    params: dict[str, str],
    repository: str,
    auth: tuple[str, str] | None,
    timeout: float,
    credentials_hint: str = CREDENTIALS_HINT,
) -> str:
    realm = params["realm"]
    realm_scheme = urllib.parse.urlsplit(realm).scheme
    if realm_scheme != "https" and not (realm_scheme == "http" and base.startswith("http://")):
        raise RegistryError(f"{image}: the registry's token realm {realm!r} is not https; refusing to send credentials")
    query = {"service": params.get("service", ""), "scope": params.get("scope") or f"repository:{repository}:pull"}
    sep = "&" if urllib.parse.urlsplit(realm).query else "?"
    req = urllib.request.Request(
        realm + sep + urllib.parse.urlencode({k: v for k, v in query.items() if v}), method="GET"
    )
    if auth is not None:
        req.add_unredirected_header("Authorization", _basic(auth))
    try:
        response = _open(opener, req, timeout)
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"{image}: cannot reach the registry's token service {realm}: {exc}") from None
    if response.status in (401, 403):
        what = "refused the credentials" if auth else "requires credentials"
        raise RegistryError(
            f"{image}: the registry's token service {what} (HTTP {response.status}); {credentials_hint}"
        )
    if response.status != 200:
        raise RegistryError(f"{image}: the registry's token service {realm} answered HTTP {response.status}")
    try:
        document = json.loads(response.body)
    except ValueError:
        raise RegistryError(f"{image}: the registry's token service {realm} did not answer JSON") from None
    token = (document.get("token") or document.get("access_token")) if isinstance(document, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryError(f"{image}: the registry's token service {realm} gave no token")
    return token
