"""`private-llm rollout check` and `rollout diff`: the gates judged on a real Prometheus (Debian's `prometheus`,
its TSDB filled with promtool from synthetic vLLM series of finance-prod's 90/10 canary), the audit-log gate on a
stand-in Elasticsearch search API, the verdicts and next weights, and the refusal to remove a revision that still
takes traffic."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from typer.testing import CliRunner

from infra.cli import app
from infra.config import GateSpec, parse_platform
from infra.offline import load_stack_config
from infra.tools import rollout
from infra.tools.checks import spec_of
from tests.conftest import ROOT, required

NS = "llm-inference"
SERVED = "llama-3.1-8b-instruct"
STABLE_POD = "llama-3-1-8b-7c9d5b8f6d-k2x9q"
CANDIDATE_POD = "llama-3-1-8b-r2-5f6b7c8d9-q4w8z"
runner = CliRunner()


def finance() -> Any:
    return spec_of(load_stack_config(ROOT, "finance-prod"))


# ------------------------------------------------------------------------------------------- a real Prometheus


@dataclass(frozen=True)
class Scenario:
    """Per minute, per revision: finished requests, failed ones, and where first tokens and token gaps fall."""

    candidate_requests: int = 60
    candidate_errors: int = 0
    candidate_ttft_le: str = "1"
    candidate_itl_le: str = "0.1"
    candidate_age_minutes: int = 120
    stable_requests: int = 540


def openmetrics(s: Scenario, end: float, minutes: int = 90) -> str:
    """The series Prometheus would hold for finance-prod's llama-3-1-8b (stable `base`, candidate `r2`)."""
    lines: list[str] = []

    def series(name: str, labels: dict[str, str], per_minute: float) -> None:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for i in range(minutes + 1):
            lines.append(f"{name}{{{text}}} {per_minute * i:g} {end - (minutes - i) * 60:.3f}")

    base = {"namespace": NS, "model_name": SERVED}
    revisions = {
        "base": (s.stable_requests, 0, "1", "0.1"),
        "r2": (s.candidate_requests, s.candidate_errors, s.candidate_ttft_le, s.candidate_itl_le),
    }
    for revision, (total, errors, _, _) in revisions.items():
        series("vllm:request_success_total", {**base, "revision": revision, "finished_reason": "stop"}, total - errors)
        series("vllm:request_success_total", {**base, "revision": revision, "finished_reason": "error"}, errors)
    for metric, index, edges in (
        ("vllm:time_to_first_token_seconds_bucket", 2, ("0.5", "1", "2", "+Inf")),
        ("vllm:inter_token_latency_seconds_bucket", 3, ("0.05", "0.1", "0.2", "+Inf")),
    ):
        for revision, row in revisions.items():
            upper = str(row[index])
            total = row[0]
            for le in edges:
                inside = le == "+Inf" or float(le) >= float(upper)
                series(metric, {**base, "revision": revision, "pod": "p", "le": le}, total if inside else 0)
    for pod, age in ((STABLE_POD, 600), (CANDIDATE_POD, s.candidate_age_minutes)):
        text = f'namespace="{NS}",pod="{pod}"'
        for i in range(minutes + 1):
            lines.append(f"kube_pod_start_time{{{text}}} {end - age * 60:.0f} {end - (minutes - i) * 60:.3f}")
    return "\n".join(lines) + "\n# EOF\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def prometheus(promtool: str) -> str:
    return required(shutil.which("prometheus"), "prometheus not on PATH", "install the Debian package `prometheus`")


@pytest.fixture
def serve(prometheus: str, promtool: str, tmp_path: Path) -> Iterator[Any]:
    """Start a real Prometheus over a TSDB built from a scenario; yields a function scenario → base URL."""
    server = prometheus
    processes: list[subprocess.Popen[bytes]] = []

    def start(scenario: Scenario) -> str:
        folder = tmp_path / f"tsdb-{len(processes)}"
        source = tmp_path / f"series-{len(processes)}.om"
        source.write_text(openmetrics(scenario, time.time() - 30))
        subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(folder)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({"global": {"evaluation_interval": "1m"}}))
        port = free_port()
        process = subprocess.Popen(
            [
                server,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1d",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    return url
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError("Prometheus did not become ready")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def check(url: str, audit: rollout.AuditLog | None = None) -> rollout.RolloutReport:
    metrics = rollout.Prometheus(rollout.HttpSource(url, "Prometheus"))
    return rollout.check_rollout(finance(), ROOT, "llama-3-1-8b", metrics, audit)


def verdicts(report: rollout.RolloutReport) -> dict[str, str]:
    return {g.gate: g.verdict for g in report.gates}


def test_a_healthy_canary_passes_and_takes_the_next_step(serve: Any) -> None:
    report = check(serve(Scenario()))
    assert (report.stable, report.candidate, report.weights) == ("base", "r2", {"base": 90, "r2": 10})
    assert verdicts(report) == dict.fromkeys(("warmup", "sample", "errors", "ttft_p95", "itl_p95"), "pass")
    assert report.verdict == "pass" and report.next_weight == 25  # the default steps: 1, 5, 10, 25, 50, 100
    sample = next(g for g in report.gates if g.gate == "sample")
    assert sample.measured == "3600 requests"  # 60 a minute over the 60-minute window
    assert report.next_step == (
        "set models[1].revisions[1].weight to 25 and models[1].revisions[0].weight to 75, then `pulumi up`"
    )


def test_a_failing_canary_fails_and_rolls_back(serve: Any) -> None:
    report = check(serve(Scenario(candidate_errors=6, candidate_ttft_le="2")))
    gates = {g.gate: g for g in report.gates}
    assert gates["errors"].verdict == "fail" and gates["errors"].measured == "10.00% vs 0.00%"
    assert gates["ttft_p95"].verdict == "fail" and gates["ttft_p95"].measured == "2.00x (1950 ms vs 975 ms)"
    assert gates["itl_p95"].verdict == "pass"
    assert report.verdict == "fail" and report.next_weight == 0
    assert report.next_step.startswith("roll back: set models[1].revisions[1].weight to 0")


def test_a_young_or_quiet_canary_is_held(serve: Any) -> None:
    young = check(serve(Scenario(candidate_age_minutes=30)))
    assert verdicts(young)["warmup"] == "hold" and young.verdict == "hold" and young.next_weight == 10
    assert "needs 40 more minutes" in next(g.detail for g in young.gates if g.gate == "warmup")
    quiet = check(serve(Scenario(candidate_requests=5, candidate_errors=5)))
    # 300 requests, every one failed: not judged before the sample is complete, and never passed
    assert verdicts(quiet)["sample"] == "hold" and verdicts(quiet)["errors"] == "hold"
    assert quiet.verdict == "hold" and quiet.next_step.startswith("keep the weights")


def test_cli_prints_the_gates_and_exits_1_on_fail(serve: Any) -> None:
    url = serve(Scenario(candidate_errors=6))
    args = ["rollout", "check", "--stack", "finance-prod", "--model", "llama-3-1-8b", "--prometheus", url]
    result = runner.invoke(app, [*args, "--format", "json", "--project-dir", str(ROOT)])
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["verdict"] == "fail" and document["next_weight"] == 0
    assert {g["gate"] for g in document["gates"]} == {"warmup", "sample", "errors", "ttft_p95", "itl_p95"}
    table = runner.invoke(app, [*args, "--project-dir", str(ROOT)])
    assert table.exit_code == 1
    assert "Candidate r2 against base" in table.stdout and "verdict: fail; next weight of r2: 0" in table.stdout


# ------------------------------------------------------------------------------------- the audit log's gate


class SearchApi(BaseHTTPRequestHandler):
    """Elasticsearch's _search as the audit check calls it: records each request, answers the canned buckets."""

    answer: dict[str, Any] = {}
    seen: list[tuple[str, dict[str, Any], str | None]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        SearchApi.seen.append((self.path, body, self.headers.get("Authorization")))
        payload = json.dumps(SearchApi.answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def search_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SearchApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    SearchApi.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def buckets(candidate: tuple[int, int], stable: tuple[int, int]) -> dict[str, Any]:
    def bucket(service: str, counts: tuple[int, int]) -> dict[str, Any]:
        key = f"{NS}/{service}/route/bank-llm-llm-models/rule/1/ref/{0 if service == 'llama-3-1-8b' else 1}"
        return {"key": key, "doc_count": counts[0], "server_errors": {"doc_count": counts[1]}}

    return {
        "aggregations": {
            "backends": {"buckets": [bucket("llama-3-1-8b", stable), bucket("llama-3-1-8b-r2", candidate)]}
        }
    }


def test_audit_gate_compares_5xx_by_backend(serve: Any, search_api: str) -> None:
    url = serve(Scenario())
    audit = rollout.AuditLog(rollout.HttpSource(search_api, "Elasticsearch", headers={"Authorization": "ApiKey k"}))
    SearchApi.answer = buckets(candidate=(3600, 90), stable=(32400, 32))
    report = check(url, audit)
    gate = next(g for g in report.gates if g.gate == "audit_5xx")
    assert gate.verdict == "fail" and gate.measured.startswith("2.50% vs 0.10%")
    assert report.verdict == "fail"
    [(path, body, authorization)] = SearchApi.seen
    assert path == "/privatellm-audit-*/_search" and authorization == "ApiKey k"
    assert {"term": {"model": SERVED}} in body["query"]["bool"]["filter"]
    assert {"range": {"@timestamp": {"gte": "now-60m"}}} in body["query"]["bool"]["filter"]
    assert body["aggs"]["backends"]["terms"]["field"] == "backend"
    SearchApi.answer = buckets(candidate=(3600, 3), stable=(32400, 32))
    assert check(url, audit).verdict == "pass"


def test_backend_names_resolve_to_the_revision_service() -> None:
    assert rollout.backend_service("llm-inference/chat-r2/route/gw-models/rule/0/ref/1") == "chat-r2"
    assert rollout.backend_service("chat-r2") == "chat-r2"


def test_audit_credentials_come_from_the_environment() -> None:
    assert rollout.audit_credentials({"ELASTICSEARCH_API_KEY": "k"}) == ({"Authorization": "ApiKey k"}, None)
    assert rollout.audit_credentials({"ELASTICSEARCH_USERNAME": "u", "ELASTICSEARCH_PASSWORD": "p"}) == ({}, ("u", "p"))
    assert rollout.audit_credentials({}) == ({}, None)


# ------------------------------------------------------------------------------------------------ pure verdicts


def measures(requests_: float | None, failed: float, ttft: float | None = 0.5, itl: float | None = 0.05) -> Any:
    return rollout.Measures(requests_, failed, ttft, itl)


@pytest.mark.parametrize(
    ("candidate", "stable", "age", "expected"),
    [
        (measures(600, 0), measures(6000, 6), 7200.0, "pass"),
        (measures(600, 12), measures(6000, 6), 7200.0, "fail"),  # 2 % against 0.1 %: 1.9 points over
        (measures(600, 3), measures(6000, 6), 7200.0, "pass"),  # 0.5 % against 0.1 %: within 0.5 points
        (measures(600, 0, ttft=0.7), measures(6000, 6), 7200.0, "fail"),  # 1.4x stable's TTFT
        (measures(600, 0, itl=0.06), measures(6000, 6), 7200.0, "fail"),  # 1.2x stable's ITL
        (measures(600, 0, ttft=None), measures(6000, 6), 7200.0, "hold"),
        (measures(499, 0), measures(6000, 6), 7200.0, "hold"),
        (measures(600, 0), measures(0, 0), 7200.0, "hold"),
        (measures(None, 0), measures(6000, 6), 7200.0, "hold"),
        (measures(600, 0), measures(6000, 6), None, "hold"),
        (measures(600, 0), measures(6000, 6), 60.0, "hold"),
    ],
)
def test_judge(candidate: Any, stable: Any, age: float | None, expected: str) -> None:
    assert rollout.verdict_of(rollout.judge(GateSpec(), candidate, stable, age)) == expected


@pytest.mark.parametrize(
    ("weight", "verdict", "expected"),
    [(10, "pass", 25), (50, "pass", 100), (1, "pass", 5), (7, "pass", 10), (10, "hold", 10), (25, "fail", 0)],
)
def test_next_weight(weight: int, verdict: Any, expected: int) -> None:
    assert rollout.next_weight(GateSpec(), weight, verdict) == expected


def test_the_step_past_half_asks_for_the_approval() -> None:
    spec = finance()
    i, model = rollout.find_model(spec, "llama-3.1-8b-instruct")
    stable, candidate = model.stable_and_candidate()
    assert "needs models[1].revisions[1].approved_by first" in rollout.next_step(spec, i, model, stable, candidate, 100)
    assert "stays deployed and warm at 0" in rollout.next_step(spec, i, model, stable, candidate, 100)


def test_unknown_models_and_unreachable_servers_are_one_clear_error() -> None:
    spec = finance()
    metrics = rollout.Prometheus(rollout.HttpSource(f"http://127.0.0.1:{free_port()}", "Prometheus"))
    with pytest.raises(rollout.RolloutError, match=r"--model 'chat' is not a model of this stack"):
        rollout.check_rollout(spec, ROOT, "chat", metrics)
    with pytest.raises(rollout.RolloutError, match=r"the model has no revisions"):
        rollout.check_rollout(spec, ROOT, "llama-3-3-70b", metrics)
    with pytest.raises(rollout.RolloutError, match=r"Prometheus at http://127.0.0.1:\d+ cannot be reached"):
        rollout.check_rollout(spec, ROOT, "llama-3-1-8b", metrics)
    with pytest.raises(rollout.RolloutError, match=r"is not an http\(s\):// URL"):
        rollout.HttpSource("file:///etc/passwd", "Prometheus")


def test_no_canary_in_progress_once_promoted() -> None:
    doc = yaml.safe_load((ROOT / "stacks" / "Pulumi.finance-prod.yaml").read_text())["config"]["privatellm:platform"]
    doc["models"][1]["revisions"][0]["weight"] = 0
    doc["models"][1]["revisions"][1].update(weight=100, approved_by="model risk committee, CHG-1042")
    metrics = rollout.Prometheus(rollout.HttpSource(f"http://127.0.0.1:{free_port()}", "Prometheus"))
    report = rollout.check_rollout(parse_platform(doc), ROOT, "llama-3-1-8b", metrics)  # asks Prometheus nothing
    assert report.verdict == "pass" and report.next_step == "no canary in progress: r2 takes all the traffic"


# ---------------------------------------------------------------------------------------------- rollout diff


def stack_doc() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "stacks" / "Pulumi.finance-prod.yaml").read_text())
    return document


def revisions_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = document["config"]["privatellm:platform"]["models"][1]["revisions"]
    return found


def diff(tmp_path: Path, change: Any) -> Any:
    before = tmp_path / "before.yaml"
    before.write_text(yaml.safe_dump(stack_doc()))
    project = tmp_path / "project"
    shutil.copytree(ROOT / "stacks", project / "stacks")
    shutil.copy(ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    after = stack_doc()
    change(after)
    (project / "stacks" / "Pulumi.finance-prod.yaml").write_text(yaml.safe_dump(after))
    args = ["rollout", "diff", "--stack", "finance-prod", "--base", str(before), "--project-dir", str(project)]
    return runner.invoke(app, [*args, "--format", "json"])


def test_removing_a_revision_with_weight_is_refused(tmp_path: Path) -> None:
    def drop_candidate(document: dict[str, Any]) -> None:
        revisions = revisions_of(document)
        del revisions[1]
        revisions[0]["weight"] = 100

    result = diff(tmp_path, drop_candidate)
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["problems"] == [
        "model llama-3-1-8b: revision r2 is removed while it takes 10%; set its weight to 0 and apply that first "
        "(the other revision takes the traffic), then remove it in a later change"
    ]
    assert {"model": "llama-3-1-8b", "revision": "r2", "before": 10, "after": None} in document["revisions"]


def test_rolling_back_then_removing_is_allowed(tmp_path: Path) -> None:
    def roll_back(document: dict[str, Any]) -> None:
        revisions = revisions_of(document)
        revisions[0]["weight"], revisions[1]["weight"] = 100, 0

    result = diff(tmp_path, roll_back)
    assert result.exit_code == 0, result.output
    assert {"model": "llama-3-1-8b", "revision": "r2", "before": 10, "after": 0} in json.loads(result.stdout)[
        "revisions"
    ]
    before = parse_platform(stack_doc()["config"]["privatellm:platform"])
    rolled = stack_doc()
    roll_back(rolled)
    removed = stack_doc()
    del revisions_of(removed)[1]
    revisions_of(removed)[0]["weight"] = 100
    after_rollback = parse_platform(rolled["config"]["privatellm:platform"])
    assert rollout.removal_problems(after_rollback, parse_platform(removed["config"]["privatellm:platform"])) == []
    assert rollout.removal_problems(before, after_rollback) == []


def test_dropping_revisions_keeps_the_unnamed_one(tmp_path: Path) -> None:
    """Going back to a model without revisions: the unnamed revision is the model's own objects."""
    zero = stack_doc()
    revisions_of(zero)[0]["weight"], revisions_of(zero)[1]["weight"] = 100, 0
    plain = stack_doc()
    model = plain["config"]["privatellm:platform"]["models"][1]
    del model["revisions"], model["rollout"]
    spec = (parse_platform(d["config"]["privatellm:platform"]) for d in (zero, plain))
    assert rollout.removal_problems(*spec) == []
    removed_model = stack_doc()
    del removed_model["config"]["privatellm:platform"]["models"][1]
    problems = rollout.removal_problems(finance(), parse_platform(removed_model["config"]["privatellm:platform"]))
    assert [p.split(";")[0] for p in problems] == [
        "model llama-3-1-8b is removed while its revision base takes 90%",
        "model llama-3-1-8b is removed while its revision r2 takes 10%",
    ]


def test_diff_against_a_git_revision(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    shutil.copytree(ROOT / "stacks", project / "stacks")
    shutil.copy(ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "stacks"], check=True)
    changed = stack_doc()
    del revisions_of(changed)[1]
    revisions_of(changed)[0]["weight"] = 100
    (project / "stacks" / "Pulumi.finance-prod.yaml").write_text(yaml.safe_dump(changed))
    args = ["rollout", "diff", "--stack", "finance-prod", "--project-dir", str(project)]
    refused = runner.invoke(app, [*args, "--base-ref", "HEAD"])
    assert refused.exit_code == 1 and "refused: model llama-3-1-8b: revision r2 is removed" in refused.output
    missing = runner.invoke(app, [*args, "--base-ref", "no-such-branch"])
    assert missing.exit_code == 2 and "git has no no-such-branch:stacks/Pulumi.finance-prod.yaml" in missing.output
    injected = runner.invoke(app, [*args, "--base-ref", "--output=/tmp/x"])
    assert injected.exit_code == 2 and "is not a git revision" in injected.output
    neither = runner.invoke(app, args)
    assert neither.exit_code == 2 and "give one of --base FILE or --base-ref REVISION" in neither.output
