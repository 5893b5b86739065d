"""Reading what a user hands the program: files bounded in size and kind, YAML without its traps.

Every file the command or the program reads on a user's behalf (a stack file, a policy config, manifests, a weight
manifest, a model's config.json, a lock file) comes through `read_text`: a regular file (never a directory, device,
FIFO or a file of /proc, /sys or /dev, which can hang a read or hold the environment), at most `limit` bytes, UTF-8.
YAML comes through `load_yaml`/`load_yaml_all`: a repeated key is an error (YAML would keep the last one silently),
aliases are refused (an alias bomb expands exponentially once the data is copied), timestamps stay strings, nesting
is bounded. Errors name the file and what to change, and never quote the file's content: it may hold a secret.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

KIB = 1024
MIB = 1024 * KIB
MAX_DEPTH = 64
PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


class InputError(ValueError):
    """A file or value handed to the command that it cannot use; the message names it and the fix."""


def _size(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit >= MIB else f"{limit // KIB} KiB"


def in_pseudo_filesystem(path: Path) -> bool:
    """Under /proc, /sys or /dev (links followed): reads there can hang or return the process's environment."""
    resolved = path.resolve()
    return any(resolved == p or p in resolved.parents for p in PSEUDO_FILESYSTEMS)


def read_text(path: Path, what: str, limit: int = MIB) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes; `what` names it in errors (a flag or a field)."""
    resolved = path.resolve()
    if in_pseudo_filesystem(resolved):
        raise InputError(f"{what} {path}: files of /proc, /sys and /dev are not read; give a regular file")
    try:
        info = os.stat(resolved)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{what} {path} is a directory; give a file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{what} {path} is not a regular file (a device, FIFO or socket); give a file")
    if info.st_size > limit:
        raise InputError(f"{what} {path} is {info.st_size} bytes, more than the {_size(limit)} accepted")
    try:
        with open(resolved, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot be read ({exc.strerror})") from None
    if len(data) > limit:
        raise InputError(f"{what} {path} is more than the {_size(limit)} accepted")
    if b"\x00" in data:
        raise InputError(f"{what} {path} is a binary file (it holds NUL bytes); give a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8"
        ) from None


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without silent surprises: repeated keys and aliases are errors, timestamps stay strings."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, f"the alias *{event.anchor} is not accepted: write the value out", event.start_mark
            )
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the document nests deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} appears twice in one mapping (YAML would silently keep the last)",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep)


# Timestamps stay strings: Pulumi reads stack files as YAML 1.2, where an unquoted date is a string.
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_error(what: str, exc: yaml.YAMLError) -> InputError:
    """The problem and where, without the snippet of the document PyYAML quotes (it may hold a secret)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or type(exc).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return InputError(f"{what} is not valid YAML{where}: {problem}")


def load_yaml(text: str, what: str) -> Any:
    """One YAML document, strictly (see `StrictLoader`)."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise _yaml_error(what, exc) from None
    except RecursionError:
        raise InputError(f"{what} nests too deeply") from None


def load_yaml_all(text: str, what: str) -> list[Any]:
    """Every YAML document of a stream, strictly (see `StrictLoader`)."""
    try:
        return list(yaml.load_all(text, Loader=StrictLoader))  # StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise _yaml_error(what, exc) from None
    except RecursionError:
        raise InputError(f"{what} nests too deeply") from None


def read_yaml(path: Path, what: str, limit: int = MIB) -> Any:
    return load_yaml(read_text(path, what, limit), f"{what} {path}")
