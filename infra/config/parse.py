"""Reading a stack file: `parse_platform` (one StackConfigError listing every problem, with did-you-mean hints and
plaintext credentials caught before validation), the secrets it references, and where the project is."""

from __future__ import annotations

import difflib
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pulumi
from pydantic import (
    BaseModel,
    ValidationError,
)

from infra.config.spec import PlatformSpec
from infra.config.types import CONFIG_NAMESPACE, FULL_PLATFORM_KEY, StackConfigError

# Key words that, holding a plain string, make a key a credential stored in the clear ("tokens_per_minute" is not).
_CREDENTIAL_WORDS = frozenset({"password", "passwd", "passphrase", "token", "apikey", "credential", "credentials"})


_CREDENTIAL_PAIRS = frozenset(
    {("api", "key"), ("private", "key"), ("client", "key"), ("access", "key"), ("secret", "key")}
)


def _is_credential_key(key: str) -> bool:
    words = [w for w in re.split(r"[_\-.]+|(?<=[a-z])(?=[A-Z])", key) if w]
    lowered = [w.lower() for w in words]
    if lowered == ["secret"] or any(w in _CREDENTIAL_WORDS for w in lowered):
        return True
    return any(pair in _CREDENTIAL_PAIRS for pair in itertools.pairwise(lowered))


# Values that are credentials whatever key holds them.
_CREDENTIAL_VALUE = re.compile(
    r"(-----BEGIN [A-Z ]*PRIVATE KEY-----|client-key-data:|\btoken:\s*\S{16,}|AKIA[0-9A-Z]{16})"
)


CHECKOUT = Path(__file__).resolve().parents[2]
"""This checkout (or installed tree): where the project is when no Pulumi.yaml is found above the working directory."""


_PROJECT_DIR: ContextVar[Path | None] = ContextVar("privatellm_project_dir", default=None)


def set_project_dir(path: Path | None) -> None:
    """Where relative paths of a stack file (config_path, manifest_file) are resolved; set by the offline engine."""
    _PROJECT_DIR.set(path)


def find_project_dir(start: Path | None = None) -> Path:
    """The folder holding Pulumi.yaml: from `start` (or the working directory) upwards, else this checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    if (CHECKOUT / "Pulumi.yaml").is_file():
        return CHECKOUT
    raise FileNotFoundError("no Pulumi.yaml found in the working directory or above; run from the project folder")


def project_dir() -> Path:
    """The folder holding Pulumi.yaml: the one set explicitly (`set_project_dir`), else `find_project_dir()`."""
    explicit = _PROJECT_DIR.get()
    return explicit if explicit is not None else find_project_dir()


def _format_loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that owns the last element of `loc` (to list allowed keys for an unknown one)."""
    model: Any = PlatformSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        model = _unwrap_model(field.annotation)
        if model is None:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


HIDDEN = "<not shown: it may be a secret>"
# A run of characters a generated token, key or password is made of, too long for a name anyone types.
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9+/=_\-]{32,}")


def might_be_secret(value: Any) -> bool:
    """A string error messages must not repeat: key material, a known token shape, or a long random-looking run."""
    return isinstance(value, str) and bool(_CREDENTIAL_VALUE.search(value) or _TOKEN_LIKE.search(value))


def _secret_position(loc: Iterable[int | str]) -> bool:
    """A field that holds a credential, or the name of a secret config key (`*_secret`), or anything below one."""
    return any(isinstance(p, str) and (p.endswith("_secret") or _is_credential_key(p)) for p in loc)


def _short(value: Any, loc: Iterable[int | str] = ()) -> str:
    """A bad value as an error message may show it: never one in a secret position or shaped like a secret, never
    the contents of a mapping or list (they may hold one), at most 80 characters."""
    if _secret_position(loc) or might_be_secret(value):
        return HIDDEN
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problems_from(error: ValidationError, prefix: str) -> list[str]:
    problems: list[str] = []
    for err in error.errors():
        loc = tuple(err["loc"])
        path = _format_loc(loc)
        where = f"{prefix}.{path}" if path else prefix
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            model = _model_at(loc)
            allowed = sorted(model.model_fields) if model else []
            hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            msg = f"{where}: unknown key {key!r}"
            if hint:
                msg += f"; did you mean {hint[0]!r}?"
            if allowed:
                msg += f" (allowed keys: {', '.join(allowed)})"
            problems.append(msg)
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            problems.append(f"{where}={_short(err.get('input'), loc)} is not allowed; use one of {expected}")
        elif kind == "missing":
            problems.append(f"{where}: required key is missing")
        elif kind in ("value_error", "assertion_error"):
            message = str(err["msg"]).removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict | list):
                problems.append(f"{where}={_short(err['input'], loc)} {message}")
            else:
                problems.append(f"{where}: {message}")
        else:
            problems.append(f"{where}={_short(err.get('input'), loc)}: {err['msg']}")
    return problems


def _plaintext_credentials(raw: Any, path: str) -> list[tuple[str, str]]:
    """(path, message) for credential-looking keys or values held in plain text anywhere in the platform object."""
    found: list[tuple[str, str]] = []
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            sub = f"{path}.{key}"
            if isinstance(value, Mapping) and "secure" in value and len(value) == 1:
                found.append(
                    (
                        sub,
                        f"{sub}: encrypted values inside {FULL_PLATFORM_KEY} are not supported; "
                        f"store it as its own key with `pulumi config set --secret {CONFIG_NAMESPACE}:<name>` "
                        "and reference it with "
                        f"'{key.removesuffix('_secret')}_secret: <name>'",
                    )
                )
                continue
            if (
                isinstance(value, str | int)
                and not str(key).endswith(("_secret", "_path", "_ref"))
                and _is_credential_key(str(key))
            ):
                found.append(
                    (
                        sub,
                        f"{sub} holds a credential in plain text; store it with "
                        f"`pulumi config set --secret {CONFIG_NAMESPACE}:<name>` and reference it as "
                        "'<field>_secret: <name>'",
                    )
                )
                continue
            found.extend(_plaintext_credentials(value, sub))
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            found.extend(_plaintext_credentials(item, f"{path}[{i}]"))
    elif isinstance(raw, str) and _CREDENTIAL_VALUE.search(raw):
        found.append(
            (
                path,
                f"{path} contains key material or a token in plain text; move it to a secure config key "
                f"(`pulumi config set --secret`)",
            )
        )
    return found


def parse_platform(raw: Any, stack: str | None = None) -> PlatformSpec:
    """Validate the raw `privatellm:platform` object. Raises one StackConfigError listing every problem."""
    if raw is None:
        raise StackConfigError(
            [f"{FULL_PLATFORM_KEY} is not set; add it to stacks/Pulumi.<stack>.yaml under `config:`"], stack
        )
    if not isinstance(raw, Mapping):
        raise StackConfigError([f"{FULL_PLATFORM_KEY} must be a mapping of settings, got {type(raw).__name__}"], stack)
    credentials = _plaintext_credentials(raw, FULL_PLATFORM_KEY)
    problems = [msg for _, msg in credentials]
    try:
        spec = PlatformSpec.model_validate(dict(raw))
    except ValidationError as exc:
        for p in _problems_from(exc, FULL_PLATFORM_KEY):
            # A credential key reported above may also be an unknown key: keep the clearer message only.
            if not any(p.startswith(path + ":") or p.startswith(path + "=") for path, _ in credentials):
                problems.append(p)
        raise StackConfigError(problems, stack) from None
    if problems:
        raise StackConfigError(problems, stack)
    return spec


def check_secret_refs(
    spec: PlatformSpec,
    is_set: Callable[[str], bool],
    is_secret: Callable[[str], bool],
) -> list[str]:
    """Every `*_secret` field must name a config key that is set and encrypted."""
    problems: list[str] = []
    for path, ref in spec.secret_refs():
        key = qualified_key(ref)
        # The field holds a key's name, which is never repeated: if it is the secret itself (pasted by mistake),
        # the message must not print it. The field's path says where it is.
        field = f"{FULL_PLATFORM_KEY}.{path}"
        if not is_set(key):
            problems.append(
                f"{field} names a config key that is not set; set it with `pulumi config set --secret <key> ...` "
                f"(<key>: the name written in {path}, not repeated here)"
            )
        elif not is_secret(key):
            problems.append(
                f"{field} names a config key that is stored in plain text; re-set it with "
                f"`pulumi config set --secret <key> ...` (<key>: the name written in {path})"
            )
    return problems


def qualified_key(ref: str) -> str:
    """The full config key a `*_secret` field names: `<namespace>:<key>`, the project's namespace by default."""
    return ref if ":" in ref else f"{CONFIG_NAMESPACE}:{ref}"


def config_secret(ref: str) -> pulumi.Output[str]:
    """The secret value of the config key a `*_secret` field names (`pulumi config set --secret`), as a secret
    output: it never appears in plain text in state or in the rendered inputs."""
    namespace, _, name = qualified_key(ref).partition(":")
    return pulumi.Config(namespace).require_secret(name)


def load_spec() -> PlatformSpec:
    """Read and validate the current stack's platform config (inside a Pulumi program or under mocks)."""
    from pulumi.runtime import config as runtime_config

    stack = pulumi.get_stack()
    raw_text = runtime_config.get_config(FULL_PLATFORM_KEY)
    if raw_text is None:
        raise StackConfigError(
            [f"{FULL_PLATFORM_KEY} is not set; add it to stacks/Pulumi.{stack}.yaml under `config:`"], stack
        )
    try:
        raw = json.loads(raw_text) if isinstance(raw_text, str) else raw_text
    except json.JSONDecodeError as exc:
        raise StackConfigError([f"{FULL_PLATFORM_KEY} is not a structured value: {exc}"], stack) from None
    spec = parse_platform(raw, stack)
    problems = check_secret_refs(
        spec,
        is_set=lambda key: runtime_config.get_config(key) is not None,
        is_secret=runtime_config.is_config_secret,
    )
    if problems:
        raise StackConfigError(problems, stack)
    return spec
