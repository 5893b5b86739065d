"""The rendered shipped stacks pass checkov's Kubernetes checks; every skip is an annotation with a reason.

checkov lives in its own virtualenv (`make scanner-deps` creates `.venv-checkov`; $PRIVATELLM_CHECKOV points at another
binary): its pinned dependencies must not decide ours. It runs fully offline (BC_SKIP_MAPPING, --skip-download).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.offline import available_stacks, load_stack_config, run_program, write_render
from tests.conftest import ROOT, required

STACKS = available_stacks(ROOT)


def checkov_binary() -> Path | None:
    for candidate in (os.environ.get("PRIVATELLM_CHECKOV"), str(ROOT / ".venv-checkov" / "bin" / "checkov")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def checkov() -> Path:
    return required(checkov_binary(), "checkov not installed", "run `make scanner-deps`, which creates .venv-checkov")


def scan(checkov: Path, folder: Path) -> dict[str, Any]:
    """One checkov run over a folder of rendered stacks (one -d: several -d repeat the first folder in 3.3)."""
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(
        [
            str(checkov),
            "-d",
            str(folder),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--skip-path",
            "charts",
            "--compact",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    # One framework gives one report object; checkov returns a list when it has several.
    return report[0] if isinstance(report, list) else report


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checkov")
    for stack in STACKS:
        write_render(run_program(load_stack_config(ROOT, stack)), root / stack)
    return root


def test_every_shipped_stack_passes_checkov(checkov: Path, rendered: Path) -> None:
    report = scan(checkov, rendered)
    failed = [
        f"{c['check_id']} {c['resource']} ({Path(c['file_path']).parent.name}/{Path(c['file_path']).name})"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == []
    scanned = {Path(c["file_path"]).parts[1] for c in report["results"]["passed_checks"]}
    assert scanned == set(STACKS), "every stack folder must be scanned"
    for skipped in report["results"]["skipped_checks"]:
        comment = skipped["check_result"].get("suppress_comment", "")
        assert comment and comment != "No comment provided", skipped["check_id"]


def test_checkov_catches_an_object_without_its_documented_skip(checkov: Path, rendered: Path, tmp_path: Path) -> None:
    """The same scan fails once the annotations are gone: the passing test above can fail."""
    source = next((rendered / "dev" / "manifests" / "llm-inference").glob("Deployment-*.yaml"))
    obj = yaml.safe_load(source.read_text())
    assert any(k.startswith("checkov.io/skip") for k in obj["metadata"]["annotations"])
    del obj["metadata"]["annotations"]
    target = tmp_path / "manifests" / "llm-inference"
    target.mkdir(parents=True)
    (target / source.name).write_text(yaml.safe_dump(obj))
    report = scan(checkov, tmp_path)
    assert {c["check_id"] for c in report["results"]["failed_checks"]} >= {"CKV_K8S_43", "CKV_K8S_15"}


def test_scanner_skip_annotations_are_checked() -> None:
    from components.labels import scanner_skips

    assert scanner_skips({"CKV_K8S_43": "pinned in Harbor", "CKV_K8S_15": "immutable tag"}) == {
        "checkov.io/skip1": "CKV_K8S_15=immutable tag",
        "checkov.io/skip2": "CKV_K8S_43=pinned in Harbor",
    }
    with pytest.raises(ValueError, match="not a checkov Kubernetes check id"):
        scanner_skips({"CKV_AWS_1": "x"})
    with pytest.raises(ValueError, match="without '='"):
        scanner_skips({"CKV_K8S_43": "a=b"})
    with pytest.raises(ValueError, match="non-empty"):
        scanner_skips({"CKV_K8S_43": " "})


def test_image_skips_follow_the_pin() -> None:
    from infra.pack_config import image_scanner_skips
    from infra.tools.checks import spec_of

    finance = spec_of(load_stack_config(ROOT, "finance-prod"))
    assert finance.registry is not None
    host = finance.registry.host
    digest = "sha256:" + "0" * 64
    assert image_scanner_skips(finance, f"{host}/platform/vllm/vllm-openai:v0.33.0@{digest}") == {}
    immutable = image_scanner_skips(finance, f"{host}/platform/vllm/vllm-openai:v0.33.0")
    assert set(immutable) == {"CKV_K8S_43", "CKV_K8S_15"} and "tag-immutability" in immutable["CKV_K8S_43"]
    # a mutable repository in a production profile gets no skip: checkov reports it, as images-pinned does
    assert image_scanner_skips(finance, f"{host}/scratch/app:1") == {}
    dev = spec_of(load_stack_config(ROOT, "dev"))
    assert dev.profile == "baseline"
    assert "advisory" in image_scanner_skips(dev, "registry.dev.internal:5000/platform/app:1")["CKV_K8S_43"]
