"""Fluent Bit PII redaction: the `lua` filter entry, the chart values that ship it, and custom patterns.

`components/assets/redact_pii.lua` masks ID numbers, mobile numbers, e-mail addresses and bank card numbers in
every string of every record on the node, before Fluent Bit sends it to Elasticsearch. Stacks may add their own
patterns: each is a Python-style regular expression in the safe subset that Lua patterns can express exactly; it is
checked here, translated to a Lua pattern and rendered into `redact_extra.lua`, which the script loads from the
same folder. See docs/redaction.md.

The fluent/helm-charts `fluent-bit` chart (0.58) puts every `luaScripts` entry into one ConfigMap mounted at
`/fluent-bit/scripts/`, and takes filters as classic-mode text in `config.filters`. Both go through Helm's `tpl`,
so nothing rendered here may contain two adjacent braces.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from components import assets

SCRIPT_NAME = "redact_pii.lua"
EXTRA_NAME = "redact_extra.lua"
SCRIPTS_DIR = "/fluent-bit/scripts"
CALL = "redact_pii"
DEFAULT_REPLACEMENT = "[REDACTED]"

# The chart's default `config.filters` (fluent-bit chart 0.58.1). Setting `config.filters` replaces it, so the
# fragment keeps it in front of the redaction filter: records are redacted after the kubernetes filter has merged
# the JSON log line into fields and added metadata, i.e. on everything that leaves the node.
CHART_DEFAULT_FILTERS = """[FILTER]
    Name kubernetes
    Match kube.*
    Merge_Log On
    Keep_Log Off
    K8S-Logging.Parser On
    K8S-Logging.Exclude On
"""

SUPPORTED = (
    "supported: literal characters, '.', character classes [...] (optionally negated with ^; ranges between two "
    "ASCII letters or digits; \\d \\s \\w inside), \\d \\D \\s \\S \\w \\W, escaped punctuation such as "
    "\\. \\( \\|, \\n \\t \\r, the quantifiers * + ? *? +? on a single character or class, ^ at the start and $ at "
    "the end"
)

# Lua patterns work on bytes. A single `.`, \D, \S or [^...] matches ASCII characters only (the negation also
# excludes the bytes 0x80-0xFF), so no match starts or ends inside a multi-byte UTF-8 character. Repeated with
# `*`, `+` or `*?` they match any byte instead, as Python would match any non-ASCII character: such a run stops
# before an ASCII character or a whole literal character, i.e. on a character boundary. \W stays ASCII (CJK
# characters are \w in Python, but [%w_] in Lua is ASCII).
_HIGH = "\x80-\xff"
_CLASS_ESCAPES = {
    "d": "%d",
    "D": f"[^%d{_HIGH}]",
    "s": "%s",
    "S": f"[^%s{_HIGH}]",
    "w": "[%w_]",
    "W": f"[^%w_{_HIGH}]",
}
_WIDE_ESCAPES = {"D": "%D", "S": "%S"}
_IN_CLASS_ESCAPES = {"d": "%d", "s": "%s", "w": "%w_"}


def _repeated(regex: str, i: int) -> bool:
    """Whether the item ending before regex[i] is repeated by `*`, `*?` or a greedy `+`."""
    after = regex[i : i + 2]
    return (after[:1] == "*" and after != "*+") or (after[:1] == "+" and after not in ("+?", "++"))


_CONTROL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
_REPEAT = re.compile(r"\{\d*(,\d*)?\}")
_ALLOWED_KEYS = {"pattern", "replacement", "name"}


class UnsupportedPattern(ValueError):
    """A valid regular expression outside the subset that translates exactly to a Lua pattern."""


def _literal(char: str) -> str:
    """One literal character as a Lua pattern item (or a byte sequence for non-ASCII characters)."""
    if char == "\0":
        raise UnsupportedPattern("NUL characters are not supported")
    if char.isascii() and (char.isalnum() or char == " " or not char.isprintable()):
        return char
    if char.isascii():
        return "%" + char  # %x for any non-alphanumeric x is the literal x, in and out of classes
    return char.encode().decode("latin-1")  # its UTF-8 bytes; bytes >= 0x80 are never magic in Lua


def _parse_class(regex: str, i: int) -> tuple[str, int]:
    """Translate the class starting at regex[i] == '['; returns the Lua class and the index after ']'."""
    item, end = _parse_class_items(regex, i)
    if item.endswith(f"{_HIGH}]") and _repeated(regex, end):
        item = item[: -len(_HIGH) - 1] + "]"
    return item, end


def _parse_class_items(regex: str, i: int) -> tuple[str, int]:
    j = i + 1
    out = ["["]
    negated = j < len(regex) and regex[j] == "^"
    if negated:
        out.append("^")
        j += 1
    first = True
    while True:
        if j >= len(regex):
            raise UnsupportedPattern("unterminated character class")
        char = regex[j]
        if char == "]" and not first:
            out.append(f"{_HIGH}]" if negated else "]")
            return "".join(out), j + 1
        first = False
        if char == "\\":
            if j + 1 >= len(regex):
                raise UnsupportedPattern("trailing backslash")
            esc = regex[j + 1]
            if esc in _IN_CLASS_ESCAPES:
                out.append(_IN_CLASS_ESCAPES[esc])
            elif esc in _CONTROL_ESCAPES:
                out.append(_CONTROL_ESCAPES[esc])
            elif esc.isascii() and not esc.isalnum() and esc.isprintable():
                if j + 2 < len(regex) and regex[j + 2] == "-" and j + 3 < len(regex) and regex[j + 3] != "]":
                    raise UnsupportedPattern("ranges in a class must be between two ASCII letters or digits")
                out.append("%" + esc)
            else:
                raise UnsupportedPattern(f"the escape \\{esc} is not supported in a class (\\d \\s \\w are)")
            j += 2
            continue
        if not char.isascii():
            raise UnsupportedPattern(f"non-ASCII character {char!r} in a character class (Lua classes are bytes)")
        if j + 2 < len(regex) and regex[j + 1] == "-" and regex[j + 2] != "]":
            low, high = char, regex[j + 2]
            if not (low.isascii() and low.isalnum() and high.isascii() and high.isalnum()):
                raise UnsupportedPattern("ranges in a class must be between two ASCII letters or digits")
            out.append(f"{low}-{high}")
            j += 3
            continue
        out.append(_literal(char))
        j += 1


def to_lua_pattern(regex: str) -> str:
    r"""Translate a regular expression in the safe subset (see SUPPORTED) to an equivalent Lua pattern.

    Lua patterns are byte strings: the result is returned as a `str` holding one character per byte (Latin-1),
    so a non-ASCII literal such as "员" appears as its UTF-8 bytes; render_extra_lua writes it back byte for byte.

    Raises UnsupportedPattern (a ValueError) for alternation, groups, {n,m} repetition, word boundaries,
    backreferences and other constructs Lua patterns cannot express. \d \s \w and ranges are ASCII, as in Lua.
    """
    out: list[str] = []
    quantifiable = False  # whether the last item is a single character or class
    i = 0
    n = len(regex)
    while i < n:
        char = regex[i]
        if char == "^":
            if i != 0:
                raise UnsupportedPattern("'^' is only supported at the start of the pattern")
            out.append("^")
            quantifiable = False
            i += 1
        elif char == "$":
            if i != n - 1:
                raise UnsupportedPattern("'$' is only supported at the end of the pattern")
            out.append("$")
            quantifiable = False
            i += 1
        elif char == "|":
            raise UnsupportedPattern("alternation '|' is not supported (use one pattern per alternative)")
        elif char in "()":
            raise UnsupportedPattern("groups '(...)' are not supported")
        elif char == "{" and _REPEAT.match(regex, i) and regex[i : i + 2] != "{}":
            raise UnsupportedPattern("repetition counts {n,m} are not supported (repeat the item instead)")
        elif char in "*+?":
            if not quantifiable:
                raise UnsupportedPattern(f"'{char}' must follow a single character, '.', an escape or a class")
            modifier = regex[i + 1] if i + 1 < n else ""
            if modifier == "+":
                raise UnsupportedPattern("possessive quantifiers are not supported")
            if modifier == "?":
                if char == "*":
                    out.append("-")
                elif char == "+":
                    out.append(out[-1] + "-")
                else:
                    raise UnsupportedPattern("the lazy quantifier ?? is not supported")
                i += 2
            else:
                out.append(char)
                i += 1
            quantifiable = False
        elif char == "[":
            item, i = _parse_class(regex, i)
            out.append(item)
            quantifiable = True
        elif char == ".":
            # Python's '.' does not match a newline; Lua's does.
            out.append("[^\n]" if _repeated(regex, i + 1) else f"[^\n{_HIGH}]")
            quantifiable = True
            i += 1
        elif char == "\\":
            if i + 1 >= n:
                raise UnsupportedPattern("trailing backslash")
            esc = regex[i + 1]
            if esc in _WIDE_ESCAPES and _repeated(regex, i + 2):
                out.append(_WIDE_ESCAPES[esc])
            elif esc in _CLASS_ESCAPES:
                out.append(_CLASS_ESCAPES[esc])
            elif esc in _CONTROL_ESCAPES:
                out.append(_CONTROL_ESCAPES[esc])
            elif esc.isascii() and not esc.isalnum() and esc.isprintable():
                out.append(_literal(esc))
            else:
                raise UnsupportedPattern(
                    f"the escape \\{esc} is not supported (no \\b \\A \\Z, backreferences or code escapes)"
                )
            quantifiable = True
            i += 2
        else:
            out.append(_literal(char))
            quantifiable = char.isascii()
            if not quantifiable and i + 1 < n and regex[i + 1] in "*+?":
                raise UnsupportedPattern(f"a quantifier after the non-ASCII character {char!r} (Lua repeats bytes)")
            i += 1
    return "".join(out)


def _check_entry(index: int, entry: Any) -> tuple[str, str]:
    """(regex, replacement) of one configured pattern; ValueError naming the index otherwise."""
    if isinstance(entry, str):  # LoggingSpec.redaction_patterns: plain regular expressions
        entry = {"pattern": entry}
    if not isinstance(entry, Mapping):
        raise ValueError(
            f"redaction pattern #{index}: expected a regular expression or a mapping with 'pattern' and 'replacement'"
        )
    unknown = sorted(set(entry) - _ALLOWED_KEYS)
    if unknown:
        raise ValueError(f"redaction pattern #{index}: unknown keys {unknown}; allowed: {sorted(_ALLOWED_KEYS)}")
    regex = entry.get("pattern")
    if not isinstance(regex, str) or not regex:
        raise ValueError(f"redaction pattern #{index}: 'pattern' must be a non-empty string")
    replacement = entry.get("replacement", DEFAULT_REPLACEMENT)
    if not isinstance(replacement, str) or not replacement:
        raise ValueError(f"redaction pattern #{index} {regex!r}: 'replacement' must be a non-empty string")
    return regex, replacement


def validate_extra_patterns(patterns: Sequence[Mapping[str, Any] | str]) -> list[str]:
    """Check each configured pattern and return the translated Lua patterns, in order.

    Each entry is {"pattern": <Python regular expression>, "replacement": <text, default [REDACTED]>}, or just the
    regular expression (as in LoggingSpec.redaction_patterns), replaced by [REDACTED]. Raises
    ValueError naming the index and the pattern when it does not compile with `re`, uses a construct outside the
    safe subset, or can match the empty string.
    """
    result: list[str] = []
    for index, entry in enumerate(patterns):
        regex, _ = _check_entry(index, entry)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", FutureWarning)  # e.g. "possible nested set": ambiguous, reject
                compiled = re.compile(regex)
        except (re.error, FutureWarning) as exc:
            raise ValueError(f"redaction pattern #{index} {regex!r} is not a valid regular expression: {exc}") from exc
        try:
            lua = to_lua_pattern(regex)
        except UnsupportedPattern as exc:
            raise ValueError(f"redaction pattern #{index} {regex!r}: {exc}; {SUPPORTED}") from exc
        if compiled.search("") is not None:
            raise ValueError(f"redaction pattern #{index} {regex!r} matches the empty string")
        result.append(lua)
    return result


def lua_string(text: str | bytes) -> str:
    """A double-quoted Lua string literal for `text`, safe for Lua and for Helm's tpl.

    Only printable ASCII other than `"`, `\\`, `{` and `}` is written as is; every other byte of the UTF-8
    encoding becomes a three-digit decimal escape, so no escape can run into a following digit.
    """
    parts = ['"']
    for b in text.encode("utf-8") if isinstance(text, str) else text:
        if 0x20 <= b <= 0x7E and chr(b) not in '"\\{}':
            parts.append(chr(b))
        else:
            parts.append(f"\\{b:03d}")
    parts.append('"')
    return "".join(parts)


def render_extra_lua(patterns: Sequence[Mapping[str, Any] | str]) -> str:
    """The content of redact_extra.lua: `REDACT_EXTRA = { { pattern = ..., replacement = ... }, ... }`."""
    lua_patterns = validate_extra_patterns(patterns)
    lines = [
        "-- Rendered by infra/observability/fluentbit.py (render_extra_lua) from the stack's redaction patterns.",
        "-- Loaded by redact_pii.lua from the same folder; do not edit.",
        "REDACT_EXTRA = {",
    ]
    for index, (entry, lua) in enumerate(zip(patterns, lua_patterns, strict=True)):
        _, replacement = _check_entry(index, entry)
        lines.append(f"  {{ pattern = {lua_string(lua.encode('latin-1'))}, replacement = {lua_string(replacement)} }},")
    lines.append("}")
    return "\n".join(lines) + "\n"


def fluent_bit_filters(extra: bool = False) -> list[dict[str, str]]:
    """The Fluent Bit filter entries for redaction (YAML- and classic-mode-independent dicts).

    The entry is the same with or without extra patterns (`extra`): redact_pii.lua loads redact_extra.lua from
    its own folder when the file is there, so shipping the file is all that custom patterns need.
    """
    del extra  # documented above: no separate filter entry for custom patterns
    return [{"name": "lua", "match": "*", "script": f"{SCRIPTS_DIR}/{SCRIPT_NAME}", "call": CALL}]


_CLASSIC_KEYS = {"name": "Name", "match": "Match"}


def fluent_bit_lua_config(filters: Sequence[Mapping[str, str]] | None = None) -> str:
    """Filter entries (default: fluent_bit_filters()) as classic-mode `[FILTER]` sections."""
    entries = fluent_bit_filters() if filters is None else filters
    sections = []
    for entry in entries:
        width = max(len(_CLASSIC_KEYS.get(key, key)) for key in entry)
        lines = ["[FILTER]"]
        for key, value in entry.items():
            if "\n" in value or "\n" in key or not value.strip():
                raise ValueError(f"filter property {key!r}={value!r}: values must be one non-empty line")
            lines.append(f"    {_CLASSIC_KEYS.get(key, key).ljust(width)} {value}")
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def fluent_bit_values_fragment(
    extra_patterns: Sequence[Mapping[str, Any] | str] | None = None,
    preceding_filters: str = CHART_DEFAULT_FILTERS,
) -> dict[str, Any]:
    """Values for the fluent-bit chart: `luaScripts` (file name -> content) and `config.filters`.

    `config.filters` replaces the chart's filters, so `preceding_filters` (default: the chart's kubernetes filter)
    comes first and the redaction filter last, right before the outputs.
    """
    scripts = {SCRIPT_NAME: assets.read(SCRIPT_NAME)}
    extra = bool(extra_patterns)
    if extra_patterns:
        scripts[EXTRA_NAME] = render_extra_lua(extra_patterns)
    for name, content in scripts.items():
        if "{{" in content or "}}" in content:  # the chart passes luaScripts through tpl
            raise ValueError(f"{name} contains '{{{{' or '}}}}', which the chart's tpl would interpret")
    ours = fluent_bit_lua_config(fluent_bit_filters(extra))
    filters = f"{preceding_filters.rstrip()}\n\n{ours}" if preceding_filters.strip() else ours
    return {"luaScripts": scripts, "config": {"filters": filters}}
