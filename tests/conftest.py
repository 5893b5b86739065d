"""Shared test helpers: repository paths, the CRD schema folder, and an offline run of any program."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from infra.offline import RecordedResource, Recording, StackConfig, config_from_mapping, run_program

ROOT = Path(__file__).resolve().parent.parent
STACKS = ROOT / "stacks"


T = TypeVar("T")


def required(found: T | None, missing: str, fix: str) -> T:
    """A tool or data folder a test needs: skipped without it on a workstation, a failure under CI=true (CI
    installs everything, so a missing one there is a broken setup, never a silently skipped check)."""
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}: required under CI=true ({fix})")
        pytest.skip(f"{missing} ({fix}); the tests that need it are not run")
    return found


def shared_folder(variable: str, name: str) -> Path | None:
    """Upstream reference data: $<variable>, else ../shared/<name> beside the checkout (with its index.json)."""
    for candidate in (os.environ.get(variable), str(ROOT.parent / "shared" / name)):
        if candidate and (Path(candidate) / "index.json").is_file():
            return Path(candidate)
    return None


def crd_dir() -> Path | None:
    """Upstream CRD schemas: $PRIVATELLM_CRD_SCHEMAS, else ../shared/crds beside the checkout."""
    return shared_folder("PRIVATELLM_CRD_SCHEMAS", "crds")


@pytest.fixture(scope="session")
def crds() -> Path:
    return required(crd_dir(), "CRD schemas not found", "../shared/crds or $PRIVATELLM_CRD_SCHEMAS")


@pytest.fixture(scope="session")
def promtool() -> str:
    return required(shutil.which("promtool"), "promtool not on PATH", "install the Debian package `prometheus`")


def fake_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path | None = None) -> None:
    """Credentials and region for moto; nothing read from the machine's own AWS configuration."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    if tmp_path is not None:
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


def platform_config(platform: dict[str, Any], stack: str = "test", **extra: Any) -> StackConfig:
    return config_from_mapping(stack, {"privatellm:platform": platform, **extra})


def run(program: Callable[[], None] | None = None, platform: dict[str, Any] | None = None, **kw: Any) -> Recording:
    """Run `program` (default: the real program) offline with the given platform config."""
    return run_program(platform_config(platform if platform is not None else {}, **kw), program=program)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


MASKED_DOCKER_CONFIG = '{"auths": {"[secret]": {"auth": "[secret]"}}}'


def masked_keys(secret: RecordedResource) -> set[str]:
    """The keys of a Secret as `render` writes it: the keys the program set, every value masked one by one (a docker
    config as JSON the API server parses)."""
    shown = secret.masked["stringData"]
    expected = {
        key: MASKED_DOCKER_CONFIG if key == ".dockerconfigjson" else "[secret]" for key in secret.inputs["stringData"]
    }
    assert shown == expected, shown
    return set(shown)
