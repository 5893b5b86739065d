"""PII redaction in Fluent Bit: redact_pii.lua run with the real LuaJIT, and the Python side that ships it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components import assets
from infra.observability import fluentbit
from infra.observability.fluentbit import (
    fluent_bit_filters,
    fluent_bit_lua_config,
    fluent_bit_values_fragment,
    lua_string,
    render_extra_lua,
    to_lua_pattern,
    validate_extra_patterns,
)
from tests.conftest import required

SCRIPT = Path(assets.__file__).with_name("redact_pii.lua")

# Reads the script named by arg[1] and the records returned by the Lua file arg[2]; prints one JSON line per record.
DRIVER = r"""
dofile(arg[1])
local records = dofile(arg[2])

local function is_array(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local encode
local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end
encode = function(v)
  local t = type(v)
  if t == "string" then return encode_string(v) end
  if t == "number" then
    if v == math.floor(v) then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  if t == "boolean" then return tostring(v) end
  if t == "table" then
    local parts = {}
    if is_array(v) then
      for i = 1, #v do parts[#parts + 1] = encode(v[i]) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for k, val in pairs(v) do parts[#parts + 1] = encode_string(tostring(k)) .. ":" .. encode(val) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "null"
end

for i = 1, #records do
  local code, ts, out = redact_pii("kube.var.log", 0, records[i])
  io.write(encode({ code = code, ts = ts, record = out }), "\n")
end
"""


# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def luajit() -> str:
    return required(shutil.which("luajit"), "luajit not on PATH", "apt-get install luajit")


def lua_literal(value: Any) -> str:
    """A Lua table-constructor literal for JSON-like data (an independent encoder: every byte escaped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(f"\\{b:03d}" for b in value.encode()) + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def run_filter(
    luajit: str,
    tmp_path: Path,
    records: list[dict[str, Any]],
    script: Path = SCRIPT,
    extra_file: Path | None = None,
) -> tuple[list[tuple[int, Any]], str]:
    """(code, record) for each record, and LuaJIT's stderr."""
    driver = tmp_path / "driver.lua"
    driver.write_text(DRIVER)
    cases = tmp_path / "cases.lua"
    cases.write_text("return {\n" + ",\n".join(lua_literal(r) for r in records) + "\n}\n")
    env = {k: v for k, v in os.environ.items() if k != "REDACT_EXTRA_FILE"}
    if extra_file is not None:
        env["REDACT_EXTRA_FILE"] = str(extra_file)
    result = subprocess.run(
        [luajit, str(driver), str(script), str(cases)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(records)
    for line in lines:
        assert line["ts"] == 0
    return [(line["code"], line["record"]) for line in lines], result.stderr


def redact_lines(luajit: str, tmp_path: Path, lines: list[str], **kw: Any) -> list[str]:
    results, _ = run_filter(luajit, tmp_path, [{"log": line} for line in lines], **kw)
    return [record["log"] for _, record in results]


def redact_one(luajit: str, tmp_path: Path, line: str, **kw: Any) -> str:
    return redact_lines(luajit, tmp_path, [line], **kw)[0]


ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def id_number(first17: str) -> str:
    """A resident ID number with its ISO 7064 MOD 11-2 check character."""
    total = sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS, strict=True))
    return first17 + "10X98765432"[total % 11]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def luhn_complete(prefix: str) -> str:
    """prefix + the digit that makes it Luhn-valid."""
    for d in "0123456789":
        if luhn_ok(prefix + d):
            return prefix + d
    raise AssertionError(prefix)


def ids_ending_with(check: str, base: str = "11010519900307") -> str:
    for seq in range(1000):
        candidate = id_number(f"{base}{seq:03d}")
        if candidate.endswith(check):
            return candidate
    raise AssertionError(check)


VALID_ID = next(i for i in (id_number(f"44030519851231{seq:03d}") for seq in range(100)) if i[-1].isdigit())
ID_X = ids_ending_with("X")
CARD16 = luhn_complete("622202100112345")
CARD19 = luhn_complete("621483012345678901")
VISA = luhn_complete("411111111111111")


def group4(digits: str, sep: str) -> str:
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


# --------------------------------------------------------------------------------------------- test data sanity


def test_generated_test_data_is_what_the_cases_claim() -> None:
    assert ID_X.endswith("X") and len(ID_X) == 18
    assert len(VALID_ID) == 18 and VALID_ID[-1].isdigit()
    assert luhn_ok(CARD16) and len(CARD16) == 16
    assert luhn_ok(CARD19) and len(CARD19) == 19
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


# --------------------------------------------------------------------------------------------- ID numbers


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"id={VALID_ID}", "id=[ID]"),
        (f"身份证号：{VALID_ID}，已核验", "身份证号：[ID]，已核验"),  # noqa: RUF001 (full-width punctuation, as in real logs)
        (f"holder {ID_X} ok", "holder [ID] ok"),
        (f"holder {ID_X[:-1]}x ok", "holder [ID] ok"),
        (f"two {VALID_ID},{ID_X}.", "two [ID],[ID]."),
    ],
    ids=["plain", "chinese-text", "upper-X", "lower-x", "two"],
)
def test_valid_id_numbers_are_masked(luajit: str, tmp_path: Path, line: str, expected: str) -> None:
    assert redact_one(luajit, tmp_path, line) == expected


def test_id_numbers_failing_checks_survive(luajit: str, tmp_path: Path) -> None:
    wrong_check = VALID_ID[:-1] + str((int(VALID_ID[-1]) + 1) % 10)
    bad_month = id_number(VALID_ID[:10] + "13" + VALID_ID[12:17])  # month 13, right check digit
    bad_year = id_number(VALID_ID[:6] + "17" + VALID_ID[8:17])  # year 17xx
    longer = VALID_ID + "5"  # part of a 19-digit run
    lines = [f"n={wrong_check}", f"n={bad_month}", f"n={bad_year}", f"n={longer}"]
    out = redact_lines(luajit, tmp_path, lines)
    assert out[:3] == lines[:3]
    assert "[ID]" not in out[3]


def test_id_takes_precedence_over_card(luajit: str, tmp_path: Path) -> None:
    both = next(
        c for c in (id_number(f"11010519900307{seq:03d}") for seq in range(1000)) if c[-1] != "X" and luhn_ok(c)
    )
    assert redact_one(luajit, tmp_path, f"v {both}") == "v [ID]"


# --------------------------------------------------------------------------------------------- phones


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("tel 13800138000", "tel [PHONE]"),
        ("tel:+8613912345678;", "tel:[PHONE];"),
        ("tel +86 139 1234 5678.", "tel [PHONE]."),
        ("tel 86-139-1234-5678", "tel [PHONE]"),
        ("tel 0086 13912345678", "tel [PHONE]"),
        ("tel 008615012345678", "tel [PHONE]"),
        ("tel 139 1234 5678 end", "tel [PHONE] end"),
        ("手机号码19912345678请回拨", "手机号码[PHONE]请回拨"),
    ],
)
def test_mobile_numbers_are_masked(luajit: str, tmp_path: Path, line: str, expected: str) -> None:
    assert redact_one(luajit, tmp_path, line) == expected


def test_phone_like_runs_inside_longer_numbers_survive(luajit: str, tmp_path: Path) -> None:
    long14 = next(f"138001380001{i:02d}" for i in range(100) if not luhn_ok(f"138001380001{i:02d}"))
    lines = ["order 213800138000", f"order {long14}", "x 12800138000", "x 1380013800", "ts 1380013800-0"]
    assert not luhn_ok("213800138000")
    assert redact_lines(luajit, tmp_path, lines) == lines


def test_phone_takes_precedence_over_card(luajit: str, tmp_path: Path) -> None:
    phone = next(p for p in (f"139{i:08d}" for i in range(1000)) if luhn_ok("86" + p))
    assert redact_one(luajit, tmp_path, f"call 86{phone}") == "call [PHONE]"


# --------------------------------------------------------------------------------------------- e-mail


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("from alice@example.com", "from [EMAIL]"),
        ("user=bob.smith+tag@mail.corp.example.cn, ok", "user=[EMAIL], ok"),
        ("<13800138000@qq.com>", "<[EMAIL]>"),
        ("联系邮箱：zhang_san@company.com.cn。", "联系邮箱：[EMAIL]。"),  # noqa: RUF001
        ("end with dot a-b@x-y.org.", "end with dot [EMAIL]."),
        ("two a@b.io c@d.io", "two [EMAIL] [EMAIL]"),
    ],
)
def test_email_addresses_are_masked(luajit: str, tmp_path: Path, line: str, expected: str) -> None:
    assert redact_one(luajit, tmp_path, line) == expected


def test_at_signs_that_are_not_addresses_survive(luajit: str, tmp_path: Path) -> None:
    lines = ["@channel deploy", "user@localhost", "a@b.c1", "pkg@1.2.3", "x @ y.com", "@@@", "a@b..com"]
    assert redact_lines(luajit, tmp_path, lines) == lines


# --------------------------------------------------------------------------------------------- cards


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"card {CARD16}", "card [CARD]"),
        (f"card {group4(CARD16, ' ')} paid", "card [CARD] paid"),
        (f"card {group4(CARD16, '-')}", "card [CARD]"),
        (f"card {CARD19}", "card [CARD]"),
        (f"card {group4(CARD19, ' ')}.", "card [CARD]."),
        (f"visa={VISA};", "visa=[CARD];"),
    ],
    ids=["16", "16-spaces", "16-dashes", "19", "19-spaces", "visa"],
)
def test_luhn_valid_cards_are_masked(luajit: str, tmp_path: Path, line: str, expected: str) -> None:
    assert redact_one(luajit, tmp_path, line) == expected


def test_luhn_invalid_and_non_card_numbers_survive(luajit: str, tmp_path: Path) -> None:
    order = "2024061512345678"
    assert not luhn_ok(order)
    grouped_bad = group4(CARD16[:-1] + str((int(CARD16[-1]) + 1) % 10), " ")
    longer = CARD16 + "0000"  # 20 digits: part of a longer run
    lines = [
        f"order_id={order}",
        f"card {grouped_bad}",
        f"n={longer}",
        f"{group4(CARD16, ' ')} 1234",  # grouping continues past 19 digits
        "at 2024-06-15 12:00:01.123",
        "pid 12345 uid 1000",
    ]
    assert redact_lines(luajit, tmp_path, lines) == lines


# --------------------------------------------------------------------------------------------- records


def test_nested_tables_and_arrays_are_walked_and_keys_kept(luajit: str, tmp_path: Path) -> None:
    record = {
        "log": "login ok",
        "alice@example.com": "key that looks like an address",
        "kubernetes": {"pod_name": "api-0", "labels": {"owner": "ops@example.com"}},
        "contacts": ["13800138000", {"card": CARD16}, 42, True, ["deep", "x@y.io"]],
        "count": 7,
    }
    [(code, out)], _ = run_filter(luajit, tmp_path, [record])
    assert code == 2
    assert out == {
        "log": "login ok",
        "alice@example.com": "key that looks like an address",
        "kubernetes": {"pod_name": "api-0", "labels": {"owner": "[EMAIL]"}},
        "contacts": ["[PHONE]", {"card": "[CARD]"}, 42, True, ["deep", "[EMAIL]"]],
        "count": 7,
    }


def test_untouched_records_return_zero(luajit: str, tmp_path: Path) -> None:
    records = [
        {"log": "GET /v1/models 200 12ms", "stream": "stdout"},
        {"n": 13800138000, "nested": {"a": ["b", 1.5]}},  # numbers are not strings: not scanned
        {"log": ""},
    ]
    results, _ = run_filter(luajit, tmp_path, records)
    assert [code for code, _ in results] == [0, 0, 0]
    assert [rec for _, rec in results] == records


def test_many_lines_are_all_masked(luajit: str, tmp_path: Path) -> None:
    """Throughput sanity over 10k mixed lines and pathological inputs; checks results, not timings."""
    lines = [
        f"req {i} user u{i}@example.com phone 138{i:08d} order {2024061500000000 + i} card {CARD16}"
        for i in range(10_000)
    ]
    pathological = ["9" * 2000, "a" * 1000 + "@" + "b" * 1000, "@" * 2000, "1 " * 1000, "1234 " * 400, "a.@" * 600]
    out = redact_lines(luajit, tmp_path, lines + pathological)
    for i, line in enumerate(out[: len(lines)]):
        order = 2024061500000000 + i
        expected_order = "[CARD]" if luhn_ok(str(order)) else str(order)
        assert line == f"req {i} user [EMAIL] phone [PHONE] order {expected_order} card [CARD]"
    assert out[len(lines) :] == pathological


# --------------------------------------------------------------------------------------------- extra patterns


EXTRA = [
    {"pattern": r"EMP-\d\d\d\d\d\d", "replacement": "[EMPLOYEE]"},
    {"pattern": r"token=[A-Za-z0-9_]+", "replacement": "token=[SECRET]"},
]


def test_extra_patterns_from_redact_extra_file(luajit: str, tmp_path: Path) -> None:
    extra = tmp_path / "elsewhere" / "extra.lua"
    extra.parent.mkdir()
    extra.write_text(render_extra_lua(EXTRA))
    lines = ["by EMP-123456 with token=abc_DEF9 mail a@b.io", "EMP-12345 short"]
    assert redact_lines(luajit, tmp_path, lines, extra_file=extra) == [
        "by [EMPLOYEE] with token=[SECRET] mail [EMAIL]",
        "EMP-12345 short",
    ]
    # without the file the built-in patterns still apply and the extra ones do not
    assert redact_lines(luajit, tmp_path, lines[:1]) == ["by EMP-123456 with token=abc_DEF9 mail [EMAIL]"]


def test_extra_file_next_to_the_script_is_loaded_by_default(luajit: str, tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"  # what the chart mounts at /fluent-bit/scripts
    scripts.mkdir()
    for name, content in fluent_bit_values_fragment(EXTRA)["luaScripts"].items():
        (scripts / name).write_text(content)
    line = "EMP-654321 token=x"
    assert redact_one(luajit, tmp_path, line, script=scripts / "redact_pii.lua") == "[EMPLOYEE] token=[SECRET]"


def test_broken_extra_entries_are_skipped_with_a_warning(luajit: str, tmp_path: Path) -> None:
    extra = tmp_path / "extra.lua"
    extra.write_text(
        'REDACT_EXTRA = {\n  { pattern = "[unclosed", replacement = "[BAD]" },\n'
        '  { pattern = "secret%d+", replacement = "[100%]" },\n  { replacement = "[NONE]" },\n}\n'
    )
    results, stderr = run_filter(luajit, tmp_path, [{"log": "secret42 [unclosed"}], extra_file=extra)
    assert results == [(2, {"log": "[100%] [unclosed"})]
    assert "REDACT_EXTRA[1] bad Lua pattern" in stderr
    assert "REDACT_EXTRA[3] needs string fields" in stderr


def test_missing_explicit_extra_file_warns_and_keeps_builtins(luajit: str, tmp_path: Path) -> None:
    results, stderr = run_filter(luajit, tmp_path, [{"log": "a@b.io"}], extra_file=tmp_path / "absent.lua")
    assert results == [(2, {"log": "[EMAIL]"})]
    assert "absent.lua cannot be read" in stderr


# Each regex is translated, run by LuaJIT, and must give exactly what Python's re.sub gives.
EQUIVALENCE_PATTERNS = [
    r"EMP-\d\d\d\d\d\d",
    r"[A-Z][a-z]+",
    r"[^\s,;]+#corp\.local",
    r"key=\S+",
    r"^secret",
    r"tail$",
    r"a.c",
    r"<.*?>",
    r"x+?y",
    r"colou?r",
    r"\w+\.internal",
    r"[-_a-z0-9]+!",
    r"\$\d+\.\d\d",
    r"say \"hi\" \\ back",
    r"[\]\[]+",
    r"\W\W",
    r"{}x",
    r"员工\d+",
    r"a.",
    r".a",
    r"[^a-z ]+",
    r"\S+",
]
EQUIVALENCE_LINES = [
    "EMP-123456 EMP-12345 xEMP-9999999",
    "Hello World foo Bar",
    "mail a.b#corp.local, c#corp.local;d#corp.localhost",
    "key=abc key= key=x\ty",
    "secret secret",
    "tail tail",
    "abc a-c a\nc ac",
    "<a> <b>> <<c>",
    "xy xxxy y",
    "color colour colouur",
    "db1.internal x_y.internal .internal",
    "a-b_c! ! x!",
    "cost $12.50 $3.5",
    'they say "hi" \\ back',
    "[[x]] ][",
    "a, b;;c",
    "{}x {}",
    "员工42号 员工",
    "<汉字> 汉 ab 汉 key=值1 x汉y 汉,, 汉!!",
]


def test_translated_patterns_match_like_python(luajit: str, tmp_path: Path) -> None:
    patterns = [{"pattern": p, "replacement": f"<{i}>"} for i, p in enumerate(EQUIVALENCE_PATTERNS)]
    for i, entry in enumerate(patterns):
        extra = tmp_path / f"extra{i}.lua"
        extra.write_text(render_extra_lua([entry]))
        got = redact_lines(luajit, tmp_path, EQUIVALENCE_LINES, extra_file=extra)
        want = [re.sub(entry["pattern"], entry["replacement"], line) for line in EQUIVALENCE_LINES]
        assert got == want, entry["pattern"]


def test_quotes_backslashes_and_braces_are_rendered_safely(luajit: str, tmp_path: Path) -> None:
    entry = {"pattern": r"pw=\"[^\"\\]+\"\\", "replacement": 'pw="{{hidden}}" %1 \\'}
    rendered = render_extra_lua([entry])
    assert "{{" not in rendered and "}}" not in rendered  # the chart runs luaScripts through tpl
    extra = tmp_path / "extra.lua"
    extra.write_text(rendered)
    line = 'login pw="s3cr\'t"\\ done'
    assert redact_one(luajit, tmp_path, line, extra_file=extra) == 'login pw="{{hidden}}" %1 \\ done'
    assert re.sub(entry["pattern"], lambda _: entry["replacement"], line) == 'login pw="{{hidden}}" %1 \\ done'


def test_lua_string_round_trips_through_luajit(luajit: str, tmp_path: Path) -> None:
    text = 'q"b\\s{x}}\n\t\x01 1\\0 汉字 %d'
    script = tmp_path / "echo.lua"
    script.write_text(f"io.write({lua_string(text)})")
    result = subprocess.run([luajit, str(script)], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == text.encode()
    assert "{" not in lua_string(text) and "\n" not in lua_string(text)


# --------------------------------------------------------------------------------------------- Python side


@pytest.mark.parametrize(
    ("regex", "lua"),
    [
        (r"EMP-\d\d", "EMP%-%d%d"),
        (r"^\w+@corp\.local$", "^[%w_]+%@corp%.local$"),
        (r"[^\s,;]+", "[^%s%,%;]+"),
        (r"[^\s,;]?", "[^%s%,%;\x80-\xff]?"),
        (r"\S+\D*?\W*", "%S+%D-[^%w_\x80-\xff]*"),
        (r"[a-z0-9_-]*?x", "[a-z0-9%_%-]-x"),
        (r"<.*?>", "%<[^\n]-%>"),
        (r"a.b.?", "a[^\n\x80-\xff]b[^\n\x80-\xff]?"),
        (r"员\d", "员".encode().decode("latin-1") + "%d"),
        (r"a+?", "aa-"),
        (r"\W\D\S", "[^%w_\x80-\xff][^%d\x80-\xff][^%s\x80-\xff]"),
        (r"[]a]", "[%]a]"),
        (r"{}", "%{%}"),
    ],
)
def test_to_lua_pattern(regex: str, lua: str) -> None:
    assert to_lua_pattern(regex) == lua


@pytest.mark.parametrize(
    ("regex", "message"),
    [
        (r"cat|dog", "alternation"),
        (r"\d{11}", "repetition counts"),
        (r"\d{2,}", "repetition counts"),
        (r"(ab)+", "groups"),
        (r"(?i)secret", "groups"),
        (r"\bword", "escape \\b"),
        (r"(a)\1", "groups"),
        (r"a^b", "'^' is only supported at the start"),
        (r"a$b", "'$' is only supported at the end"),
        (r"[!-/]", "ranges in a class"),
        (r"a??", "lazy quantifier ??"),
        (r"a*+", "possessive"),
        (r"[汉字]", "non-ASCII"),
        (r"汉+", "non-ASCII"),
        (r"[\D]", "not supported in a class"),
    ],
)
def test_unsupported_constructs_are_rejected_with_the_supported_subset(regex: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        validate_extra_patterns([{"pattern": "ok\\d", "replacement": "[X]"}, {"pattern": regex}])
    text = str(err.value)
    assert text.startswith(f"redaction pattern #1 {regex!r}")
    assert message in text
    assert "supported: literal characters" in text


@pytest.mark.parametrize("regex", ["[a-", "a**", "*a", "(?P<x", "\\"])
def test_invalid_regex_names_index_pattern_and_re_error(regex: str) -> None:
    try:
        re.compile(regex)
    except re.error as exc:
        re_message = str(exc)
    else:
        raise AssertionError(f"{regex!r} compiles")
    with pytest.raises(ValueError) as err:
        validate_extra_patterns([{"pattern": "a"}, {"pattern": "b"}, {"pattern": regex}])
    assert str(err.value) == f"redaction pattern #2 {regex!r} is not a valid regular expression: {re_message}"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"pattern": "a*"}, "matches the empty string"),
        ({"pattern": "^"}, "matches the empty string"),
        ({"pattern": ""}, "'pattern' must be a non-empty string"),
        ({"pattern": "x", "replacement": ""}, "'replacement' must be a non-empty string"),
        ({"pattern": "x", "replace": "[X]"}, "unknown keys ['replace']"),
        (42, "expected a regular expression or a mapping"),
    ],
)
def test_bad_entries_are_rejected(entry: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        validate_extra_patterns([entry])
    assert str(err.value).startswith("redaction pattern #0")


def test_validate_returns_lua_patterns_and_default_replacement_is_rendered() -> None:
    assert validate_extra_patterns(EXTRA) == ["EMP%-%d%d%d%d%d%d", "token%=[A-Za-z0-9%_]+"]
    rendered = render_extra_lua([{"pattern": "x\\d"}, "y\\d"])  # plain strings, as in LoggingSpec
    assert rendered.count('replacement = "[REDACTED]"') == 2
    assert 'pattern = "x%d"' in rendered and 'pattern = "y%d"' in rendered
    with pytest.raises(ValueError, match="#0"):
        render_extra_lua([{"pattern": "a|b"}])


def test_filter_entry_and_classic_config() -> None:
    expected = {"name": "lua", "match": "*", "script": "/fluent-bit/scripts/redact_pii.lua", "call": "redact_pii"}
    assert fluent_bit_filters(False) == [expected]
    assert fluent_bit_filters(True) == [expected]
    assert fluent_bit_lua_config() == (
        "[FILTER]\n    Name   lua\n    Match  *\n    script /fluent-bit/scripts/redact_pii.lua\n    call   redact_pii\n"
    )
    with pytest.raises(ValueError, match="one non-empty line"):
        fluent_bit_lua_config([{"name": "lua", "call": "a\nb"}])


def test_values_fragment_for_the_chart() -> None:
    plain = fluent_bit_values_fragment()
    assert plain["luaScripts"] == {"redact_pii.lua": SCRIPT.read_text()}
    filters = plain["config"]["filters"]
    assert filters.index("Name kubernetes") < filters.index("Name   lua")  # redact after metadata and merge
    assert filters.endswith(fluent_bit_lua_config())
    assert fluent_bit_values_fragment(preceding_filters="")["config"]["filters"] == fluent_bit_lua_config()

    with_extra = fluent_bit_values_fragment(EXTRA)
    assert set(with_extra["luaScripts"]) == {"redact_pii.lua", "redact_extra.lua"}
    assert with_extra["luaScripts"]["redact_extra.lua"] == render_extra_lua(EXTRA)
    for content in with_extra["luaScripts"].values():
        assert "{{" not in content and "}}" not in content
    assert fluentbit.SCRIPTS_DIR == "/fluent-bit/scripts"


def test_script_has_no_default_extra_file_in_the_repository() -> None:
    # redact_pii.lua loads redact_extra.lua from its own folder; one in the source tree would apply everywhere.
    assert not SCRIPT.with_name("redact_extra.lua").exists()
