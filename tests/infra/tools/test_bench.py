"""infra/tools/bench.py's pure helpers: generated stacks, machine description, analysis and the Markdown report.
No timing is asserted here: `make bench` measures, tests only check that it measures the right things."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from infra.config import FULL_PLATFORM_KEY, parse_platform
from infra.offline import run_program
from infra.placement import plan_models
from infra.tools import bench
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def finance() -> dict[str, Any]:
    return bench.base_platform(ROOT, "finance-prod")


@pytest.mark.parametrize("count", [1, 10, 100])
def test_generated_platform_has_n_models_the_planner_places(finance: dict[str, Any], count: int) -> None:
    platform = bench.generated_platform(finance, count)
    spec = parse_platform(platform, "bench")
    assert len(spec.models) == count
    assert len({m.name for m in spec.models}) == count
    assert len({m.served_name for m in spec.models}) == count
    assert {m.model for m in spec.models} == {bench.SMALL_MODEL}
    placed = plan_models(spec, ROOT)  # raises StackConfigError when a model does not fit or the pool is too small
    assert len(placed) == count
    assert all(p.plan.fits and p.gpus_per_replica == bench.GPUS_PER_GENERATED_MODEL for p in placed)
    pool = next(p for p in spec.node_pools if p.name == placed[0].pool.name)
    assert sum(p.reserved_gpus for p in placed) <= pool.total_gpus
    assert pool.onprem is not None and len(pool.onprem.node_names) == pool.nodes


def test_generated_platform_keeps_the_base_and_its_template(finance: dict[str, Any]) -> None:
    platform = bench.generated_platform(finance, 3)
    assert platform["tenants"] == finance["tenants"]
    assert platform["pki"] == finance["pki"]
    first = platform["models"][0]
    assert first["storage"]["existing_claim"] == "models-bench-000"
    assert first["integrity"] == {"configmap": "bench-000-approved-weights"}
    assert "autoscaling" not in first
    assert len(finance["models"]) == 2  # the base is not modified


def test_generated_platform_refuses_zero_models(finance: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        bench.generated_platform(finance, 0)


def test_generated_config_renders_every_model() -> None:
    config = bench.case_config(ROOT, "generated:finance-prod:2")
    assert config.stack == "bench-2-models"
    recording = run_program(config)
    names = " ".join(r.object_name for r in recording.kubernetes_objects())
    assert "bench-000" in names and "bench-001" in names


def test_shipped_stacks_skip_lock_files(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: private-llm\nstackConfigDir: stacks\n")
    (tmp_path / "stacks").mkdir()
    for name in ("Pulumi.a.yaml", "Pulumi.b.yaml", "Pulumi.a.lock.yaml"):
        (tmp_path / "stacks" / name).write_text("config: {}\n")
    assert bench.shipped_stacks(tmp_path) == ["a", "b"]
    assert set(bench.shipped_stacks(ROOT)) >= {"dev", "finance-prod"}


def test_machine_description_has_the_keys() -> None:
    described = bench.machine(ROOT)
    for key in ("cpu_model", "cpu_count", "memory_total_gib", "python", "os", "packages", "date", "load_average"):
        assert key in described
    assert set(described["packages"]) >= {"pulumi", "pulumi-kubernetes", "pulumi-policy"}
    assert described["cpu_count"] >= 1


def test_memory_now_reports_a_peak() -> None:
    memory = bench.memory_now()
    assert memory["peak_rss_mib"] > 0
    assert memory["method"] in ("VmHWM", "ru_maxrss")


def _case(name: str, models: int, objects: int, total: float, ok: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "models": models,
        "resources": objects + 50,
        "objects": objects,
        "charts": 5,
        "render_s": total * 0.4,
        "check_s": total * 0.6,
        "total_s": total,
        "total_min_s": total * 0.9,
        "total_max_s": total * 1.1,
        "ms_per_object": 1000 * total / objects,
        "check_ok": ok,
        "mandatory_failures": 0 if ok else 1,
        "failures": [] if ok else ["crd-schema AIGatewayRoute/x/y: spec.rules is too long"],
        "memory": {"cold_s": total + 2, "peak_rss_mib": 150.0, "baseline_rss_mib": 80.0, "method": "VmHWM"},
    }


def _results(total_100: float) -> dict[str, Any]:
    generated = [
        _case("1 models", 1, 200, 2.0),
        _case("10 models", 10, 300, 3.0),
        _case("50 models", 50, 800, 8.0, ok=False),
        _case("100 models", 100, 1400, total_100, ok=False),
    ]
    results: dict[str, Any] = {
        "machine": bench.machine(ROOT),
        "settings": {"runs": 3, "warmup": 1, "base_stack": "finance-prod", "crd_schemas": "/x/crds"},
        "stacks": [_case("dev", 1, 166, 2.5), _case("healthcare-prod", 2, 245, 2.9)],
        "generated": generated,
        "linearity": bench.linearity(generated),
        "linearity_render": bench.linearity(generated, "render_s"),
        "linearity_check": bench.linearity(generated, "check_s"),
        "planner": {
            "repeats": 5,
            "gpus_per_node": 8,
            "calls": 2,
            "fits": 1,
            "median_us": 25.0,
            "max_us": 40.0,
            "all_pairs_ms": 0.065,
            "pairs": [
                {"model": "Llama-3.1-8B", "gpu": "L4", "median_us": 25.0, "fits": True, "layout": "TP=1 PP=1"},
                {"model": "DeepSeek-V3", "gpu": "L4", "median_us": 40.0, "fits": False, "layout": "TP=8 PP=4"},
            ],
        },
        "tests": {
            "command": "pytest -q -p no:cacheprovider",
            "wall_s": 123.4,
            "exit_code": 0,
            "tests": 812,
            "counts": {"passed": 800, "skipped": 12},
            "summary": "800 passed, 12 skipped in 120.00s",
        },
        "load_average_end": [1.0, 1.0, 1.0],
        "wall_s": 300.0,
    }
    results["targets"] = bench.evaluate_targets(results)
    return results


def test_markdown_report_has_the_tables_and_verdicts() -> None:
    report = bench.render_markdown(_results(total_100=14.0))
    assert report.startswith("# Benchmarks\n")
    assert "Generated by `infra/tools/bench.py`" in report and "make bench" in report
    for heading in ("## Targets", "## How to read this", "## Machine", "## Shipped stacks", "## Generated stacks"):
        assert heading in report
    assert "## Capacity planner" in report and "## Test suite" in report
    assert "| healthcare-prod | 2 | 295 | 245 |" in report
    assert "| 100 models | 100 | 1450 | 1400 |" in report
    assert "**14.00**" in report
    assert "| Llama-3.1-8B | 25 |" in report and "| DeepSeek-V3 | 40 ✗ |" in report
    assert "| 812 |" in report
    assert "spec.rules is too long" in report
    assert "**yes** (`/x/crds`)" in report
    assert report.count("**PASS**") == 3


def test_targets_pass_and_miss() -> None:
    passed = {t["target"]: t["result"] for t in bench.evaluate_targets(_results(total_100=14.0))}
    missed = {t["target"]: t["result"] for t in bench.evaluate_targets(_results(total_100=30.0))}
    assert list(passed.values()) == ["PASS", "PASS", "PASS"]
    # 30 s for 1400 objects: over 15 s, and time grows 10x for 4.7x the objects.
    assert list(missed.values()) == ["PASS", "MISS", "MISS"]
    none = bench.evaluate_targets({"stacks": [], "generated": []})
    assert [t["result"] for t in none] == ["n/a", "n/a", "n/a"]


def test_linearity_of_linear_and_quadratic_growth() -> None:
    objects = {1: 200, 10: 300, 50: 800, 100: 1400}
    linear = [{"models": m, "objects": o, "total_s": 0.5 + 0.01 * o} for m, o in objects.items()]
    fit = bench.linearity(linear)
    assert fit is not None
    assert fit["low_models"] == 10 and fit["high_models"] == 100
    assert math.isclose(fit["r2"], 1.0) and math.isclose(fit["slope_ms_per_object"], 10.0)
    assert fit["factor"] < 1 and fit["close_to_linear"]
    quadratic = [{"models": m, "objects": o, "total_s": 1e-5 * o * o} for m, o in objects.items()]
    fit = bench.linearity(quadratic)
    assert fit is not None
    assert math.isclose(fit["exponent"], 2.0) and not fit["close_to_linear"]
    assert bench.linearity(linear[:1]) is None


def test_pytest_summary_is_parsed() -> None:
    output = "....s.\n=== short test summary info ===\nSKIPPED [1] x\n5 passed, 1 skipped, 2 warnings in 3.21s\n"
    assert bench.parse_pytest_summary(output) == {"passed": 5, "skipped": 1}
    assert bench.parse_pytest_summary("1 failed, 2 passed, 1 error in 0.5s") == {"failed": 1, "passed": 2, "errors": 1}
    assert bench.parse_pytest_summary("no summary") == {}


def test_command_line_defaults() -> None:
    args = bench.parser().parse_args([])
    assert args.runs == 3 and args.warmup == 1
    assert args.out == Path("docs/benchmarks.md") and args.json is None
    assert args.sizes == [1, 10, 50, 100] and not args.no_tests
    args = bench.parser().parse_args(["--runs", "5", "--no-tests", "--json", "build/b.json", "--sizes", "1,2"])
    assert args.runs == 5 and args.no_tests and args.json == Path("build/b.json") and args.sizes == [1, 2]
    with pytest.raises(SystemExit):
        bench.parser().parse_args(["--runs", "0"])
    assert FULL_PLATFORM_KEY == "privatellm:platform"
