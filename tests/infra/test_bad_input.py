"""Bad input never crashes, never hangs and never echoes a secret: every command answers one clear error (exit 2).

Property-based: hypothesis mutates the shipped stack files (a value swapped for a strange one, a key removed, a
secret pasted where a key name belongs) and the files handed to the command's flags (devices, /proc, folders,
binary, oversized, FIFOs), and every run must end in exit 0, 1 or 2 with no traceback, within a time bound, and
without the planted secret anywhere in what it printed.
"""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from infra.cli import app
from infra.config import StackConfigError, parse_platform
from infra.inputs import InputError, load_yaml, read_text
from infra.offline import available_stacks
from tests.conftest import ROOT

runner = CliRunner()
STACKS = available_stacks(ROOT)
CANARY = "Pa55-CANARY-hunter2-7f3a9c"
SECONDS = 90
"""A run that takes longer is a hang (a render of the largest stack takes about 3 s on this machine)."""


class Hang(Exception):
    pass


def invoke(args: list[str]) -> Result:
    def alarm(*_: Any) -> None:
        raise Hang(" ".join(args))

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(SECONDS)
    try:
        return runner.invoke(app, args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_clean(result: Result, *secrets: str) -> None:
    """Exit 0/1/2, no traceback, no secret."""
    shown = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2), (result.exit_code, shown[-2000:])
    assert "Traceback" not in shown, shown[-2000:]
    for secret in secrets:
        assert secret not in shown, shown[-2000:]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (root / "stacks").mkdir()
    return root


def stack_document(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{name}.yaml").read_text())
    return document


def paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*at, key)
            yield from paths(value, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*at, i)
            yield from paths(value, (*at, i))


def replace(node: Any, at: tuple[Any, ...], value: Any) -> bool:
    """Set (or delete) the value at `at`; False where an earlier change took the path away."""
    for part in at[:-1]:
        if not isinstance(node, dict | list) or (isinstance(node, dict) and part not in node):
            return False
        if isinstance(node, list) and not (isinstance(part, int) and part < len(node)):
            return False
        node = node[part]
    if not isinstance(node, dict | list) or (isinstance(node, list) and not at[-1] < len(node)):
        return False
    if value is DELETE:
        if isinstance(node, dict) and at[-1] not in node:
            return False
        del node[at[-1]]
    else:
        node[at[-1]] = value
    return True


DELETE = object()
STRANGE = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "name\n",
            "x" * 5000,
            -1,
            0,
            10**40,
            1.5,
            True,
            None,
            [],
            {},
            "2026-01-01",
            "\U0001f4a5",
            "\x00",
            "/proc/self/environ",
            "/dev/zero",
            "../../etc/passwd",
            "10.0.0.0/8\n",
            ["", ""],
            {"a": {"b": {"c": {}}}},
            DELETE,
        ]
    ),
    st.text(max_size=40),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.text(max_size=8), max_size=3),
)
SECRETS = st.sampled_from(
    [
        CANARY,
        CANARY + "!",
        f"{CANARY} with spaces",
        "-----BEGIN PRIVATE KEY-----\n" + CANARY,
        "ghp_" + "A1b2" * 9 + CANARY,
    ]
)


def secret_positions(platform: Any) -> list[tuple[Any, ...]]:
    return [p for p in paths(platform) if isinstance(p[-1], str) and p[-1].endswith("_secret")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_stack_files(project: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(STACKS), label="stack")
    document = copy.deepcopy(stack_document(name))
    platform = document["config"]["privatellm:platform"]
    planted: list[str] = []
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        kind = data.draw(st.sampled_from(["value", "secret-ref", "credential"]), label="kind")
        candidates = list(paths(platform))
        if kind == "secret-ref":
            # a password pasted where the name of a secret config key belongs
            at = data.draw(st.sampled_from(secret_positions(platform) or [("cluster", "kubeconfig_secret")]))
            secret = data.draw(SECRETS, label="secret")
            if replace(platform, at, secret):
                planted.append(secret)
        elif kind == "credential" and candidates:
            # a credential typed in plain text under a key that says so
            at = data.draw(st.sampled_from(candidates), label="where")
            secret = data.draw(SECRETS, label="secret")
            if replace(platform, at, {"password": secret}):
                planted.append(secret)
        elif candidates:
            replace(platform, data.draw(st.sampled_from(candidates), label="where"), data.draw(STRANGE, label="to"))
    (project / "stacks" / "Pulumi.fuzz.yaml").write_text(yaml.safe_dump(document, allow_unicode=True))
    result = invoke(["check", "--stack", "fuzz", "--project-dir", str(project), "--format", "json"])
    assert_clean(result, *planted)


TEXT_MUTATIONS = {
    "duplicate key": lambda text: text.replace("config:\n", "config:\n  privatellm:platform: {}\n", 1),
    "alias bomb": lambda text: (
        text
        + "\nbomb0: &a0 [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"bomb{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
    ),
    "config as a list": lambda text: "config:\n  - privatellm:platform\n",
    "a list": lambda text: "- config\n",
    "cut in half": lambda text: text[: len(text) // 2],
    "tab indent": lambda text: text.replace("\n    name:", "\n\tname:", 1),
    "deep nesting": lambda text: "config:\n  privatellm:platform: " + "[" * 500 + "]" * 500 + "\n",
    "binary key": lambda text: text.replace("config:\n", "config:\n  ? !!binary aGVsbG8=\n  : x\n", 1),
    "number key": lambda text: text.replace("config:\n", "config:\n  3: x\n", 1),
    "set value": lambda text: text.replace("config:\n", "config:\n  privatellm:odd: !!set {a, b}\n", 1),
}


@pytest.mark.parametrize("mutation", sorted(TEXT_MUTATIONS))
def test_broken_yaml_is_one_clear_error(project: Path, mutation: str) -> None:
    text = TEXT_MUTATIONS[mutation]((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    (project / "stacks" / "Pulumi.fuzz.yaml").write_text(text)
    result = invoke(["check", "--stack", "fuzz", "--project-dir", str(project)])
    assert_clean(result)
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1, result.output


def test_an_unquoted_date_stays_a_string(project: Path) -> None:
    """YAML 1.1 would make it a datetime (which then crashed turning config into JSON); Pulumi reads a string."""
    text = (ROOT / "stacks" / "Pulumi.dev.yaml").read_text().replace("    name: llm-dev", "    name: 2026-01-01", 1)
    (project / "stacks" / "Pulumi.fuzz.yaml").write_text(text)
    result = invoke(["render", "--stack", "fuzz", "--project-dir", str(project), "--out", str(project / "out")])
    assert_clean(result)
    assert result.exit_code == 0 and "2026-01-01" in (project / "out" / "resources.json").read_text()


def test_non_utf8_stack_file(project: Path) -> None:
    (project / "stacks" / "Pulumi.fuzz.yaml").write_bytes(b"config:\n  privatellm:platform:\n    name: \xff\xfe\n")
    result = invoke(["check", "--stack", "fuzz", "--project-dir", str(project)])
    assert_clean(result)
    assert result.exit_code == 2 and "is not UTF-8 text" in result.output


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    binary = root / "binary.yaml"
    binary.write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    huge = root / "huge.yaml"
    with huge.open("wb") as handle:
        handle.truncate(40 * 1024 * 1024)  # sparse: size without the disk
    fifo = root / "fifo.yaml"
    os.mkfifo(fifo)
    link = root / "environ.yaml"
    link.symlink_to("/proc/self/environ")
    (root / "folder").mkdir()
    return {
        "environ": Path("/proc/self/environ"),
        "zero": Path("/dev/zero"),
        "link to /proc": link,
        "fifo": fifo,
        "folder": root / "folder",
        "binary": binary,
        "huge": huge,
        "missing": root / "missing.yaml",
    }


FLAGS = {
    "--manifests": lambda path: ["check", "--manifests", str(path)],
    "--policy-config": lambda path: [
        "check",
        "--stack",
        "dev",
        "--project-dir",
        str(ROOT),
        "--policy-config",
        str(path),
    ],
    "models verify --manifest": lambda path: ["models", "verify", str(ROOT), "--manifest", str(path)],
    "plan --model-config": lambda path: ["plan", "--model-config", str(path), "--gpu", "H100-80GB-SXM"],
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flag=st.sampled_from(sorted(FLAGS)),
    kind=st.sampled_from(["environ", "zero", "link to /proc", "fifo", "folder", "binary", "huge", "missing"]),
)
def test_bad_files_for_every_flag(bad_files: dict[str, Path], flag: str, kind: str) -> None:
    result = invoke(FLAGS[flag](bad_files[kind]))
    # the environment of this process must never be printed back
    assert_clean(result, os.environ.get("PATH", "PATH=")[:40])
    assert result.exit_code == 2, (flag, kind, result.output)


def test_render_into_a_file_or_a_pseudo_filesystem(tmp_path: Path) -> None:
    file = tmp_path / "out"
    file.write_text("keep me")
    for target, message in ((file, "is a file; give a folder"), (Path("/proc/x"), "/proc, /sys or /dev")):
        result = invoke(["render", "--stack", "dev", "--project-dir", str(ROOT), "--out", str(target)])
        assert_clean(result)
        assert result.exit_code == 2 and message in result.output
    assert file.read_text() == "keep me"


@pytest.mark.parametrize("stack", ["../etc/passwd", "a/b", "", "x" * 200])
def test_stack_names_are_names(stack: str) -> None:
    result = invoke(["check", "--stack", stack, "--project-dir", str(ROOT)])
    assert_clean(result)
    assert result.exit_code == 2


# ---------------------------------------------------------------------------------------------------------------
# The schema: each reported example, refused with the field named and without the value where it may be a secret
# ---------------------------------------------------------------------------------------------------------------


def problems(platform: dict[str, Any]) -> str:
    with pytest.raises(StackConfigError) as info:
        parse_platform(platform)
    return str(info.value)


@pytest.mark.parametrize(
    ("platform", "field"),
    [
        ({"name": "bank\n"}, "privatellm:platform.name"),
        ({"tenants": [{"name": "retail\n", "groups": {"admin": ["a"]}}]}, "tenants[0].name"),
        ({"cluster": {"api_server_cidrs": [""]}}, "cluster.api_server_cidrs[0]"),
        ({"cluster": {"api_server_cidrs": ["10.0.0.0/8\n"]}}, "cluster.api_server_cidrs[0]"),
        ({"registry": {"host": "harbor.bank.internal\n"}}, "registry.host"),
        (
            {"models": [{"name": "m", "model": "Llama-3.1-8B", "pool": "p", "gpu_memory_utilization": float("nan")}]},
            "gpu_memory_utilization",
        ),
    ],
)
def test_reported_examples_are_refused(platform: dict[str, Any], field: str) -> None:
    assert field in problems(platform)


@pytest.mark.parametrize("pasted", [CANARY + "!", f"{CANARY} x", "-----BEGIN PRIVATE KEY-----\n" + CANARY, CANARY])
def test_a_password_pasted_into_a_secret_field_is_never_printed(pasted: str) -> None:
    message = problems({"cluster": {"kubeconfig_secret": pasted}, "name": "Bad Name"})
    assert "kubeconfig_secret" in message or pasted == CANARY
    assert CANARY not in message
    # a valid-looking name is a key name: set, it passes; unset, the message names the field, not the value
    result = invoke_check_with({"cluster": {"kubeconfig_secret": CANARY}})
    assert_clean(result, CANARY)
    assert "cluster.kubeconfig_secret names a config key that is not set" in result.output


def invoke_check_with(platform: dict[str, Any]) -> Result:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
        (root / "stacks").mkdir()
        (root / "stacks" / "Pulumi.s.yaml").write_text(yaml.safe_dump({"config": {"privatellm:platform": platform}}))
        return invoke(["check", "--stack", "s", "--project-dir", str(root)])


def test_credential_mappings_are_never_echoed() -> None:
    message = problems({"tenants": [{"name": "t", "groups": {"member": {"password": CANARY}}}]})
    assert "tenants[0].groups.member" in message and CANARY not in message


def test_inputs_refuse_the_traps(tmp_path: Path) -> None:
    for text, expected in (
        ("a: 1\na: 2\n", "appears twice"),
        ("x: &a [1]\ny: *a\n", r"alias \*a is not accepted"),
        ("[" * 100 + "]" * 100, "nests deeper than"),
        ("password: hunter2\nbad: : :\n", "not valid YAML at line 2"),
    ):
        with pytest.raises(InputError, match=expected) as info:
            load_yaml(text, "stack file")
        assert "hunter2" not in str(info.value)  # PyYAML's snippet of the document is never quoted
    assert load_yaml("d: 2026-01-01\n", "x") == {"d": "2026-01-01"}
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, expected in ((fifo, "not a regular file"), (tmp_path, "is a directory"), (Path("/dev/null"), "/dev")):
        with pytest.raises(InputError, match=expected):
            read_text(path, "--x")
    big = tmp_path / "big"
    big.write_text("x" * 2048)
    with pytest.raises(InputError, match="more than the 1 KiB accepted"):
        read_text(big, "--x", limit=1024)
