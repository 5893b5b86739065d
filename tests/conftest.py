"""Shared test helpers: repository paths, the CRD schema folder, and an offline run of any program."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.offline import RecordedResource, Recording, StackConfig, config_from_mapping, run_program

ROOT = Path(__file__).resolve().parent.parent
STACKS = ROOT / "stacks"


def crd_dir() -> Path | None:
    """Upstream CRD schemas: $PRIVATELLM_CRD_SCHEMAS, else ../shared/crds beside the checkout."""
    candidates = [os.environ.get("PRIVATELLM_CRD_SCHEMAS"), str(ROOT.parent / "shared" / "crds")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "index.json").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def crds() -> Path:
    found = crd_dir()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CRD schemas not found (../shared/crds or $PRIVATELLM_CRD_SCHEMAS): required under CI=true")
        pytest.skip("CRD schemas not found (../shared/crds or $PRIVATELLM_CRD_SCHEMAS); CRD validation not run")
    return found


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
