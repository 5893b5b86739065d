"""The pull-request workflow users copy: its `check` job checks every stack offline, its `preview` job runs the
policy pack in `pulumi preview` only when a state backend is configured.

The step scripts are run for real with bash, against stub `private-llm` and `pulumi` commands that log their
arguments, so the assertions are on what the workflow would execute, not on how its text is spelled.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.offline import available_stacks
from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "private-llm.yml"
ALLOWED_ACTIONS = {"actions/checkout", "actions/setup-python", "actions/upload-artifact"}
BASH = shutil.which("bash")


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    document = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(document, dict)
    return document


def step(job: dict[str, Any], step_id: str) -> dict[str, Any]:
    [found] = [s for s in job["steps"] if s.get("id") == step_id]
    return found


def executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def run_step(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a step's script the way the runner does for `shell: bash` (bash -e -o pipefail)."""
    assert BASH is not None
    assert "${{" not in script, "expressions belong in the step's env, never inline in a script"
    path = cwd / "step.sh"
    path.write_text(script)
    github = {"GITHUB_OUTPUT": str(cwd / "github_output"), "GITHUB_STEP_SUMMARY": str(cwd / "summary")}
    for name in github.values():
        Path(name).write_text("")
    full_env = {"PATH": os.environ["PATH"], "HOME": str(cwd), **github, **env}
    return subprocess.run(
        [BASH, "--noprofile", "--norc", "-e", "-o", "pipefail", str(path)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def outputs(cwd: Path) -> dict[str, str]:
    lines = (cwd / "github_output").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def project_copy(tmp_path: Path) -> Path:
    """The repository's stack files (plus a lock file, which is not a stack) in a scratch project."""
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    for path in (ROOT / "stacks").glob("Pulumi.*.yaml"):
        shutil.copy(path, project / "stacks" / path.name)
    (project / "stacks" / "Pulumi.dev.lock.yaml").write_text("images: {}\n")
    return project


# ------------------------------------------------------------------------------------------------ shape


def test_runs_on_pull_requests_on_a_configurable_runner(workflow: dict[str, Any]) -> None:
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the bare key `on` as true
    assert "pull_request" in triggers
    for name in ("check", "preview"):
        runs_on = workflow["jobs"][name]["runs-on"]
        assert re.fullmatch(r"\$\{\{ vars\.[A-Z_]+ \|\| 'ubuntu-latest' \}\}", runs_on), runs_on


def test_only_actions_a_self_hosted_runner_can_run(workflow: dict[str, Any]) -> None:
    used = {s["uses"] for job in workflow["jobs"].values() for s in job["steps"] if "uses" in s}
    assert {u.split("@")[0] for u in used} <= ALLOWED_ACTIONS
    assert all(re.fullmatch(r"[\w/-]+@v\d+", u) for u in used), used
    for job in workflow["jobs"].values():
        [setup] = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
        # skipped where python3 is already installed
        assert setup["if"] == "steps.python.outputs.setup == 'true'"
        probe = step(job, "python")["run"]
        assert "command -v python3" in probe and "(3, 11)" in probe


def test_no_secret_is_read_in_a_condition(workflow: dict[str, Any]) -> None:
    """`secrets` is not available in a job's `if:`; the gate is a step output of the check job."""
    for job in workflow["jobs"].values():
        conditions = [str(job.get("if", ""))] + [str(s.get("if", "")) for s in job["steps"]]
        assert not any("secrets." in c for c in conditions), conditions
    gate = step(workflow["jobs"]["check"], "gate")
    assert gate["env"] == {
        "PULUMI_BACKEND_URL": "${{ secrets.PULUMI_BACKEND_URL }}",
        "PULUMI_CONFIG_PASSPHRASE": "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}",
    }
    assert workflow["jobs"]["check"]["outputs"]["preview"] == "${{ steps.gate.outputs.preview }}"
    preview = workflow["jobs"]["preview"]
    assert preview["needs"] == "check"
    assert preview["if"] == "needs.check.outputs.preview == 'true'"


def test_the_check_job_installs_with_make_and_uploads_the_reports(workflow: dict[str, Any]) -> None:
    check = workflow["jobs"]["check"]
    runs = [s.get("run", "").strip() for s in check["steps"]]
    assert "make install" in runs
    assert runs.index("make install") < next(i for i, s in enumerate(check["steps"]) if s.get("id") == "check")
    [upload] = [s for s in check["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()" and upload["with"]["path"] == "build/ci/"


def test_the_pulumi_cli_is_pinned(workflow: dict[str, Any]) -> None:
    version = workflow["env"]["PULUMI_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    scripts = "\n".join(s.get("run", "") for s in workflow["jobs"]["preview"]["steps"])
    assert '--version "$PULUMI_VERSION"' in scripts
    assert 'pulumi login "$PULUMI_BACKEND_URL"' in scripts


# ------------------------------------------------------------------------------------------------ check job


PRIVATE_LLM_STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
if [ "$1" = check ]; then
  for fail in ${STUB_FAIL:-}; do
    if [ "$3" = "$fail" ]; then echo '{"summary": {"ok": false}}'; exit 1; fi
  done
  echo '{"summary": {"ok": true}}'
elif [ "$1" = policy-config ]; then
  echo "{\\"stack\\": \\"$3\\"}"
fi
"""


@pytest.mark.skipif(BASH is None, reason="bash is needed to run the workflow's scripts")
def test_the_check_job_checks_every_stack_and_no_lock_file(workflow: dict[str, Any], tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    log = tmp_path / "private-llm.log"
    executable(project / ".venv" / "bin" / "private-llm", PRIVATE_LLM_STUB)
    script = step(workflow["jobs"]["check"], "check")["run"]

    result = run_step(script, project, {"STUB_LOG": str(log), "CRD_SCHEMAS": ""})

    assert result.returncode == 0, result.stdout + result.stderr
    expected = available_stacks(ROOT)
    assert "healthcare-prod" in expected
    calls = log.read_text().splitlines()
    assert calls == [f"check --stack {s} --format json" for s in expected]
    assert outputs(project)["stacks"].split() == expected
    for stack in expected:
        assert (project / "build" / "ci" / f"check-{stack}.json").read_text().strip() == '{"summary": {"ok": true}}'


@pytest.mark.skipif(BASH is None, reason="bash is needed to run the workflow's scripts")
def test_the_check_job_fails_on_any_failing_stack_and_passes_crd_schemas(
    workflow: dict[str, Any], tmp_path: Path
) -> None:
    project = project_copy(tmp_path)
    log = tmp_path / "private-llm.log"
    executable(project / ".venv" / "bin" / "private-llm", PRIVATE_LLM_STUB)
    script = step(workflow["jobs"]["check"], "check")["run"]

    env = {"STUB_LOG": str(log), "CRD_SCHEMAS": "/opt/crds", "STUB_FAIL": "dev"}
    result = run_step(script, project, env)

    assert result.returncode != 0
    assert "::error title=private-llm check dev::exit 1" in result.stdout
    calls = log.read_text().splitlines()
    # one failing stack does not stop the others from being checked
    assert calls == [f"check --stack {s} --format json --crd-schemas /opt/crds" for s in available_stacks(ROOT)]


# ------------------------------------------------------------------------------------------------ preview job


PULUMI_STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
if [ "$1 $2" = "stack select" ]; then
  for known in $STUB_KNOWN; do [ "$3" = "$known" ] && exit 0; done
  echo "no stack named '$3' found" >&2
  exit 255
fi
if [ "$1" = preview ]; then echo "Previewing update ($3)"; fi
"""


@pytest.mark.skipif(BASH is None, reason="bash is needed to run the workflow's scripts")
def test_the_preview_job_runs_the_policy_pack_with_each_stacks_config(workflow: dict[str, Any], tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    log = tmp_path / "calls.log"
    executable(project / ".venv" / "bin" / "private-llm", PRIVATE_LLM_STUB)
    executable(tmp_path / "bin" / "pulumi", PULUMI_STUB)
    preview = step(workflow["jobs"]["preview"], "preview")
    assert preview["env"]["CHECKED_STACKS"] == "${{ needs.check.outputs.stacks }}"
    stacks = available_stacks(ROOT)
    env = {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "CHECKED_STACKS": " ".join(stacks),
        "PREVIEW_STACKS": "",
        "STUB_KNOWN": "finance-prod healthcare-prod",  # the stacks this backend holds
    }

    result = run_step(preview["run"], project, env)

    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    previews = [c for c in calls if c.startswith("preview ")]
    assert previews == [
        f"preview --stack {s} --policy-pack policies --policy-pack-config build/ci/policy-config-{s}.json "
        "--non-interactive --diff"
        for s in ("finance-prod", "healthcare-prod")
    ]
    assert f"policy-config --stack {'healthcare-prod'}" in calls
    config = project / "build" / "ci" / "policy-config-healthcare-prod.json"
    assert config.read_text().strip() == '{"stack": "healthcare-prod"}'
    assert "skipped: stack dev does not exist in the backend" in result.stdout


@pytest.mark.skipif(BASH is None, reason="bash is needed to run the workflow's scripts")
def test_a_named_preview_stack_missing_from_the_backend_fails(workflow: dict[str, Any], tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    log = tmp_path / "calls.log"
    executable(project / ".venv" / "bin" / "private-llm", PRIVATE_LLM_STUB)
    executable(tmp_path / "bin" / "pulumi", PULUMI_STUB)
    env = {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "CHECKED_STACKS": "dev",
        "PREVIEW_STACKS": "healthcare-prod gov-airgap",
        "STUB_KNOWN": "healthcare-prod",
    }

    result = run_step(step(workflow["jobs"]["preview"], "preview")["run"], project, env)

    assert result.returncode != 0
    assert "stack gov-airgap does not exist in the backend" in result.stdout
    assert [c for c in log.read_text().splitlines() if c.startswith("preview ")] == [
        "preview --stack healthcare-prod --policy-pack policies --policy-pack-config "
        "build/ci/policy-config-healthcare-prod.json --non-interactive --diff"
    ]


@pytest.mark.skipif(BASH is None, reason="bash is needed to run the workflow's scripts")
def test_pull_requests_refuse_removing_a_revision_with_traffic(workflow: dict[str, Any], tmp_path: Path) -> None:
    """Each stack that exists in the base commit is diffed against it; a new stack is not; any refusal fails."""
    project = project_copy(tmp_path)
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "stacks"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "base"], check=True)
    base = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (project / "stacks" / "Pulumi.new-site.yaml").write_text("config: {}\n")
    log = tmp_path / "private-llm.log"
    stub = PRIVATE_LLM_STUB.replace(
        'if [ "$1" = check ]; then',
        'if [ "$1 $2" = "rollout diff" ]; then\n'
        '  [ "$4" = "${STUB_FAIL:-}" ] && exit 1\n'
        "  exit 0\n"
        'elif [ "$1" = check ]; then',
    )
    executable(project / ".venv" / "bin" / "private-llm", stub)
    check_job = workflow["jobs"]["check"]
    revision_step = step(check_job, "revisions")
    assert revision_step["if"] == "github.event_name == 'pull_request'"
    assert revision_step["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    stacks = [*available_stacks(ROOT), "new-site"]
    env = {"STUB_LOG": str(log), "BASE_SHA": base, "STACKS": " ".join(stacks), "STUB_FAIL": "finance-prod"}

    result = run_step(revision_step["run"], project, env)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "NEW new-site (not in the base branch)" in result.stdout
    assert "::error title=private-llm rollout diff finance-prod::" in result.stdout
    assert log.read_text().splitlines() == [
        f"rollout diff --stack {s} --base-ref {base}" for s in available_stacks(ROOT)
    ]
    assert run_step(revision_step["run"], project, {**env, "STUB_FAIL": ""}).returncode == 0
