"""`make bench`: offline render/check timings and peak memory, planner and test-suite time → docs/benchmarks.md.

A benchmark, never a test: nothing here asserts a time. It measures, on the machine it runs on,

- every shipped stack (`stacks/Pulumi.<stack>.yaml`, lock files excluded): the render (`run_program`) and the check
  (stack spec + policy pack + Kubernetes/CRD schema validation, `check_recording`) separately and together, the median
  of `--runs` runs after `--warmup` runs in this process, and the peak memory and cold time of one render+check in a
  fresh interpreter per stack;
- generated stacks of 1, 10, 50 and 100 models built in code from a shipped stack (`--base-stack`, finance-prod): its
  platform with `models` replaced by N small models (Llama-3.1-8B, TP=1, one replica each) and its GPU pool grown so
  that the planner places them all;
- the capacity planner alone: `plan()` for every model x GPU pair of the catalogs;
- the test suite: one `pytest -q -p no:cacheprovider` run (skip it with `--no-tests`);

and writes a Markdown report (tables, the machine described, the issue's targets marked PASS/MISS) and optionally the
raw numbers as JSON. `python -m infra.tools.bench --profile-models 100` profiles one N-model render+check with cProfile.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import datetime
import gc
import json
import math
import os
import platform
import pstats
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from infra.capacity import GPU_CATALOG, MODEL_CATALOG, PlanRequest, plan
from infra.config import FULL_PLATFORM_KEY, find_project_dir
from infra.offline import (
    Recording,
    StackConfig,
    available_stacks,
    config_from_mapping,
    load_stack_config,
    run_program,
    stack_file,
)
from infra.tools.checks import CheckReport, check_recording, spec_of

DEFAULT_RUNS = 3
DEFAULT_WARMUP = 1
DEFAULT_SIZES = (1, 10, 50, 100)
DEFAULT_BASE_STACK = "finance-prod"
DEFAULT_OUT = Path("docs/benchmarks.md")

# The generated stacks' models: the smallest catalog model the shipped stacks serve, one GPU each.
SMALL_MODEL = "Llama-3.1-8B"
SMALL_MODEL_CONTEXT = 8192
GPUS_PER_GENERATED_MODEL = 1  # TP=1, PP=1, one replica, no autoscaling

# Targets of issue 9 (stated in the report, never asserted).
TARGET_LARGEST_STACK_S = 3.0
TARGET_GENERATED_MODELS = 100
TARGET_GENERATED_S = 15.0
# "Close to linear": from 10 to 100 models the render+check time may grow at most this much faster than the number of
# rendered objects (time ratio / object ratio), i.e. the time per object may rise by at most 25 %.
LINEAR_MAX_FACTOR = 1.25
LINEAR_LOW_MODELS = 10
WARM_SLOWER_FACTOR = 1.3  # note when a warm render is this much slower than the first one in a fresh process

PLANNER_GPUS_PER_NODE = 8
PLANNER_MIN_REPEATS = 5
PACKAGES = ("pulumi", "pulumi-kubernetes", "pulumi-policy", "pydantic", "jsonschema", "kubernetes-validate")

MIB = 1024 * 1024
DASH = "\N{EN DASH}"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Stacks to measure
# --------------------------------------------------------------------------------------------------------------


def shipped_stacks(project_dir: Path) -> list[str]:
    """Every `stacks/Pulumi.<stack>.yaml` of the project, lock files excluded."""
    return available_stacks(project_dir)


def base_platform(project_dir: Path, stack: str) -> dict[str, Any]:
    """The `privatellm:platform` mapping of a shipped stack file, as written."""
    document = yaml.safe_load(stack_file(project_dir, stack).read_text()) or {}
    platform_config = (document.get("config") or {}).get(FULL_PLATFORM_KEY)
    if not isinstance(platform_config, dict):
        raise ValueError(f"stack {stack!r} has no {FULL_PLATFORM_KEY} mapping")
    return platform_config


def _node_names(existing: Sequence[str], pool: str, count: int) -> list[str]:
    """`existing` node names, extended to `count` with names in the same domain."""
    names = list(existing)[:count]
    domain = existing[0].partition(".")[2] if existing else ""
    for i in range(len(names), count):
        names.append(f"{pool}-bench-{i:03d}" + (f".{domain}" if domain else ""))
    return names


def generated_platform(base: Mapping[str, Any], models: int, model: str = SMALL_MODEL) -> dict[str, Any]:
    """`base` (a platform mapping) with `models` replaced by `models` one-GPU deployments of `model`, on a pool grown
    so that they all fit. The base's own entry for `model` (storage, integrity, priority class) is the template."""
    if models < 1:
        raise ValueError(f"models must be at least 1, got {models}")
    result = copy.deepcopy(dict(base))
    pools = result.get("node_pools") or []
    if not pools:
        raise ValueError("the base platform has no node_pools to place the generated models on")
    template: dict[str, Any] = next(
        (copy.deepcopy(m) for m in result.get("models") or [] if isinstance(m, dict) and m.get("model") == model), {}
    )
    pool = next((p for p in pools if p.get("name") == template.get("pool")), pools[0])
    width = max(3, len(str(models - 1)))
    generated = []
    for i in range(models):
        name = f"bench-{i:0{width}d}"
        entry = copy.deepcopy(template)
        # autoscaling reserves its max_replicas; revisions would deploy each model more than once
        for key in ("autoscaling", "config_path", "quantization", "revisions", "rollout"):
            entry.pop(key, None)
        entry.update(
            name=name,
            model=model,
            served_model_name=f"{model.lower()}-{name}",
            pool=pool["name"],
            max_model_len=SMALL_MODEL_CONTEXT,
            target_concurrency=1,
            tensor_parallel_size=GPUS_PER_GENERATED_MODEL,
            pipeline_parallel_size=1,
            replicas=1,
        )
        storage = entry.get("storage")
        if isinstance(storage, dict) and storage.get("existing_claim"):
            storage["existing_claim"] = f"models-{name}"
        integrity = entry.get("integrity")
        if not isinstance(integrity, dict) or integrity.get("configmap") or not integrity:
            entry["integrity"] = {"configmap": f"{name}-approved-weights"}
        generated.append(entry)
    result["models"] = generated
    gpus_per_node = int(pool["gpus_per_node"])
    nodes = max(int(pool.get("nodes", 1)), math.ceil(models * GPUS_PER_GENERATED_MODEL / gpus_per_node))
    pool["nodes"] = nodes
    onprem = pool.get("onprem")
    if isinstance(onprem, dict) and onprem.get("node_names"):
        onprem["node_names"] = _node_names(onprem["node_names"], str(pool["name"]), nodes)
    eks = pool.get("eks")
    if isinstance(eks, dict) and eks.get("max_size") is not None and int(eks["max_size"]) < nodes:
        eks["max_size"] = nodes
    return result


def generated_config(project_dir: Path, models: int, base_stack: str = DEFAULT_BASE_STACK) -> StackConfig:
    platform_config = generated_platform(base_platform(project_dir, base_stack), models)
    return config_from_mapping(f"bench-{models}-models", {FULL_PLATFORM_KEY: platform_config}, project_dir=project_dir)


def case_config(project_dir: Path, case: str) -> StackConfig:
    """`stack:NAME` (a shipped stack) or `generated:BASE:N` (N generated models on BASE)."""
    kind, _, rest = case.partition(":")
    if kind == "stack":
        return load_stack_config(project_dir, rest)
    if kind == "generated":
        base, _, count = rest.rpartition(":")
        return generated_config(project_dir, int(count), base or DEFAULT_BASE_STACK)
    raise ValueError(f"unknown case {case!r}: use stack:NAME or generated:BASE:N")


def find_crd_dir(project_dir: Path) -> Path | None:
    """Upstream CRD schemas: $PRIVATELLM_CRD_SCHEMAS, else ../shared/crds or shared/crds beside the checkout."""
    candidates = [
        os.environ.get("PRIVATELLM_CRD_SCHEMAS"),
        str(project_dir.parent / "shared" / "crds"),
        str(project_dir / "shared" / "crds"),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "index.json").is_file():
            return Path(candidate)
    return None


# --------------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------------


def render_and_check(config: StackConfig, crd_dir: Path | None) -> tuple[Recording, CheckReport, float, float]:
    """One render and one check, timed separately (seconds)."""
    start = time.perf_counter()
    recording = run_program(config)
    rendered = time.perf_counter()
    report = check_recording(recording, spec_of(config), crd_dir)
    return recording, report, rendered - start, time.perf_counter() - rendered


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit // 2 - 2] + " … " + text[-(limit // 2 - 2) :]


def failure_summaries(report: CheckReport) -> list[str]:
    """Distinct mandatory failures, one line each (policy, object, shortened message)."""
    seen = Counter(f"{r.policy} {r.resource}: {_short(r.message)}" for r in report.mandatory_failures)
    return [f"{line} (x{n})" if n > 1 else line for line, n in seen.items()]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def measure_case(
    name: str, config: StackConfig, models: int, runs: int, warmup: int, crd_dir: Path | None
) -> dict[str, Any]:
    """Median render, check and render+check time of `runs` runs after `warmup` runs, and what was rendered."""
    render_s: list[float] = []
    check_s: list[float] = []
    recording: Recording | None = None
    report: CheckReport | None = None
    try:
        for i in range(warmup + runs):
            gc.collect()
            recording, report, render, check = render_and_check(config, crd_dir)
            if i >= warmup:
                render_s.append(render)
                check_s.append(check)
    except Exception as exc:  # a broken stack is a row of the report, not the end of the benchmark
        return {"name": name, "models": models, "error": f"{type(exc).__name__}: {_short(str(exc), 400)}"}
    assert recording is not None and report is not None
    total_s = [r + c for r, c in zip(render_s, check_s, strict=True)]
    objects = len(recording.kubernetes_objects())
    total = median(total_s)
    return {
        "name": name,
        "models": models,
        "resources": len(recording.resources),
        "objects": objects,
        "charts": len(recording.charts()),
        "render_s": median(render_s),
        "check_s": median(check_s),
        "total_s": total,
        "total_min_s": min(total_s),
        "total_max_s": max(total_s),
        "ms_per_object": 1000 * total / objects if objects else float("nan"),
        "runs": {"render_s": render_s, "check_s": check_s, "total_s": total_s},
        "check_ok": report.ok,
        "mandatory_failures": len(report.mandatory_failures),
        "failures": failure_summaries(report),
    }


def max_rss_mib(usage: resource.struct_rusage) -> float:
    """ru_maxrss in MiB: kibibytes on Linux, bytes on macOS."""
    return usage.ru_maxrss / (MIB if sys.platform == "darwin" else 1024)


def _proc_status_mib(field: str) -> float | None:
    match = re.search(rf"^{field}:\s+(\d+) kB", _read("/proc/self/status"), re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def memory_now() -> dict[str, Any]:
    """This process's resident set now and at its peak (MiB).

    Linux: VmRSS and VmHWM of /proc/self/status, which belong to the address space `exec` created. Not ru_maxrss:
    on Linux a child started by fork+exec inherits its parent's high-water mark in ru_maxrss (RUSAGE_SELF, and so
    the parent's RUSAGE_CHILDREN), so a child of a 300 MiB parent reports at least 300 MiB. Elsewhere: ru_maxrss."""
    current, peak = _proc_status_mib("VmRSS"), _proc_status_mib("VmHWM")
    if peak is not None:
        return {"rss_mib": current, "peak_rss_mib": peak, "method": "VmHWM"}
    return {
        "rss_mib": None,
        "peak_rss_mib": max_rss_mib(resource.getrusage(resource.RUSAGE_SELF)),
        "method": "ru_maxrss",
    }


def memory_child(case: str, out: Path, crd_dir: Path | None) -> None:
    """In a fresh interpreter: RSS after imports, then one render+check, then the peak RSS of the process."""
    project_dir = find_project_dir()
    config = case_config(project_dir, case)
    after_imports = memory_now()
    _, _, render, check = render_and_check(config, crd_dir)
    end = memory_now()
    measured = {
        "baseline_rss_mib": after_imports["rss_mib"] or after_imports["peak_rss_mib"],
        "peak_rss_mib": end["peak_rss_mib"],
        "method": end["method"],
        "ru_maxrss_mib": max_rss_mib(resource.getrusage(resource.RUSAGE_SELF)),
        "render_s": render,
        "check_s": check,
    }
    out.write_text(json.dumps(measured))


def measure_memory(project_dir: Path, case: str, crd_dir: Path | None) -> dict[str, Any]:
    """Run `memory_child` in a fresh subprocess; its wall time is the cold render+check (interpreter start,
    imports, first run)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "memory.json"
        command = [sys.executable, "-m", "infra.tools.bench", "--memory-child", case, "--memory-out", str(out)]
        command += ["--crd-schemas", str(crd_dir)] if crd_dir is not None else ["--no-crds"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=project_dir, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0 or not out.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"error": f"exit {done.returncode}: {_short(tail[0], 300)}"}
        measured: dict[str, Any] = json.loads(out.read_text())
    measured["cold_s"] = wall
    return measured


def planner_benchmark(runs: int) -> dict[str, Any]:
    """`plan()` for every model x GPU pair of the catalogs (8 GPUs per node, the model's full context, one
    request): the median of max(runs, 5) calls per pair after one warm-up call."""
    repeats = max(runs, PLANNER_MIN_REPEATS)
    pairs: list[dict[str, Any]] = []
    for model in MODEL_CATALOG.values():
        for gpu in GPU_CATALOG.values():
            request = PlanRequest(model=model, gpu=gpu, gpus_per_node=PLANNER_GPUS_PER_NODE)
            result = plan(request)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                result = plan(request)
                times.append(time.perf_counter() - start)
            pairs.append(
                {
                    "model": model.name,
                    "gpu": gpu.name,
                    "median_us": 1e6 * median(times),
                    "fits": result.fits,
                    "layout": f"TP={result.tensor_parallel_size} PP={result.pipeline_parallel_size}",
                }
            )
    per_call = [p["median_us"] for p in pairs]
    return {
        "repeats": repeats,
        "gpus_per_node": PLANNER_GPUS_PER_NODE,
        "pairs": pairs,
        "calls": len(pairs),
        "fits": sum(1 for p in pairs if p["fits"]),
        "median_us": median(per_call),
        "max_us": max(per_call),
        "all_pairs_ms": sum(per_call) / 1000,
    }


_PYTEST_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")
_PYTEST_SUMMARY = re.compile(r"\bin [0-9.]+s\b")


def parse_pytest_summary(output: str) -> dict[str, int]:
    """Counts from pytest's last summary line (`12 passed, 1 skipped in 3.2s`)."""
    lines = [line for line in output.splitlines() if _PYTEST_SUMMARY.search(line) and _PYTEST_COUNTS.search(line)]
    if not lines:
        return {}
    counts: dict[str, int] = {}
    for number, outcome in _PYTEST_COUNTS.findall(lines[-1]):
        key = "errors" if outcome.startswith("error") else outcome
        counts[key] = counts.get(key, 0) + int(number)
    return counts


def run_test_suite(project_dir: Path) -> dict[str, Any]:
    pytest = Path(sys.executable).with_name("pytest")
    command = [str(pytest)] if pytest.is_file() else [sys.executable, "-m", "pytest"]
    command += ["-q", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=project_dir, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    counts = parse_pytest_summary(done.stdout)
    ran = sum(v for k, v in counts.items() if k != "deselected")
    last = [line for line in done.stdout.splitlines() if line.strip()][-1:] or [""]
    return {
        "command": " ".join(["pytest", *command[-3:]]),
        "wall_s": wall,
        "exit_code": done.returncode,
        "tests": ran,
        "counts": counts,
        "summary": last[0].strip("= "),
    }


# --------------------------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _meminfo_gib(text: str, key: str) -> float | None:
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / MIB if match else None


def _git(project_dir: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def machine(project_dir: Path | None = None) -> dict[str, Any]:
    """CPU, cores, memory, Python, OS, package versions, date, load average and the commit measured."""
    cpuinfo = _read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = _read("/proc/meminfo")
    os_release = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', _read("/etc/os-release"), re.MULTILINE)
    cpu_max = _read("/sys/fs/cgroup/cpu.max").split()
    cgroup_cpus = round(int(cpu_max[0]) / int(cpu_max[1]), 2) if len(cpu_max) == 2 and cpu_max[0].isdigit() else None
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    commit = _git(project_dir, "rev-parse", "--short", "HEAD") if project_dir else ""
    dirty = bool(_git(project_dir, "status", "--porcelain")) if project_dir else False
    return {
        "cpu_model": model.group(1).strip() if model else (platform.processor() or "unknown"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cgroup_cpu_limit": cgroup_cpus,
        "memory_total_gib": _meminfo_gib(meminfo, "MemTotal"),
        "memory_available_gib": _meminfo_gib(meminfo, "MemAvailable"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": (os_release.group(1) + " · " if os_release else "") + platform.platform(),
        "packages": versions,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "commit": (commit + (" (working tree with uncommitted changes)" if dirty else "")) if commit else "unknown",
    }


# --------------------------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------------------------


def linearity(points: Sequence[Mapping[str, Any]], key: str = "total_s") -> dict[str, Any] | None:
    """How time grows with rendered objects over the generated stacks: the ratio time(high)/time(low) against
    objects(high)/objects(low) (high: the most models, low: 10 models or else the second smallest), a least-squares
    line time = a + b x objects with its R², and the exponent k of time ∝ objects^k (log-log fit)."""
    good = sorted((p for p in points if "error" not in p and p.get("objects")), key=lambda p: p["models"])
    if len(good) < 2:
        return None
    high = good[-1]
    low = next(
        (p for p in good if p["models"] == LINEAR_LOW_MODELS and p is not high), good[-2] if len(good) > 2 else good[0]
    )
    time_ratio = high[key] / low[key]
    object_ratio = high["objects"] / low["objects"]
    xs = [float(p["objects"]) for p in good]
    ys = [float(p[key]) for p in good]
    slope, intercept = statistics.linear_regression(xs, ys)
    mean_y = statistics.fmean(ys)
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    exponent = statistics.linear_regression([math.log(x) for x in xs], [math.log(y) for y in ys])[0]
    factor = time_ratio / object_ratio
    return {
        "key": key,
        "low_models": low["models"],
        "high_models": high["models"],
        "time_ratio": time_ratio,
        "object_ratio": object_ratio,
        "factor": factor,
        "slope_ms_per_object": 1000 * slope,
        "intercept_s": intercept,
        "r2": 1 - ss_res / ss_tot if ss_tot else 1.0,
        "exponent": exponent,
        "close_to_linear": factor <= LINEAR_MAX_FACTOR,
    }


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def evaluate_targets(results: Mapping[str, Any]) -> list[dict[str, str]]:
    """The issue's targets against the measured medians: PASS, MISS or n/a (not measured)."""
    targets = []
    stacks = [s for s in results.get("stacks", []) if "error" not in s]
    largest = max(stacks, key=lambda s: s["objects"], default=None)
    if largest is not None:
        measured = f"{largest['name']} ({largest['objects']} objects): {largest['total_s']:.2f} s"
        cold = (largest.get("memory") or {}).get("cold_s")
        if cold is not None:
            measured += f" (a cold process, imports included: {cold:.2f} s)"
        ok: bool | None = largest["total_s"] < TARGET_LARGEST_STACK_S
    else:
        measured, ok = "not measured", None
    targets.append(
        {
            "target": f"largest shipped stack renders and checks in under {TARGET_LARGEST_STACK_S:g} s",
            "measured": measured,
            "result": _verdict(ok),
        }
    )
    generated = [g for g in results.get("generated", []) if "error" not in g]
    big = next((g for g in generated if g["models"] == TARGET_GENERATED_MODELS), None)
    if big is not None:
        measured, ok = f"{big['total_s']:.2f} s ({big['objects']} objects)", big["total_s"] < TARGET_GENERATED_S
    else:
        measured, ok = "not measured", None
    targets.append(
        {
            "target": f"{TARGET_GENERATED_MODELS} models render and check in under {TARGET_GENERATED_S:g} s",
            "measured": measured,
            "result": _verdict(ok),
        }
    )
    fit = results.get("linearity")
    if fit and fit.get("high_models") == TARGET_GENERATED_MODELS:
        measured = (
            f"time x{fit['time_ratio']:.2f} for objects x{fit['object_ratio']:.2f} from {fit['low_models']} to "
            f"{fit['high_models']} models: factor {fit['factor']:.2f}"
        )
        ok = bool(fit["close_to_linear"])
    else:
        measured, ok = "not measured", None
    targets.append(
        {
            "target": f"growth close to linear (factor ≤ {LINEAR_MAX_FACTOR:g})",
            "measured": measured,
            "result": _verdict(ok),
        }
    )
    return targets


# --------------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _s(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and math.isfinite(value) else DASH


def _memory_cells(case: Mapping[str, Any]) -> list[str]:
    memory = case.get("memory") or {}
    if not memory:
        return [DASH, DASH]
    if "error" in memory:
        return ["error", "error"]
    cold = f"{_s(memory.get('cold_s'))} ({_s(memory.get('render_s'))} + {_s(memory.get('check_s'))})"
    return [cold, f"{_s(memory.get('peak_rss_mib'), 0)} ({_s(memory.get('baseline_rss_mib'), 0)})"]


def _check_cell(case: Mapping[str, Any]) -> str:
    if case.get("check_ok"):
        return "pass"
    return f"**FAIL** ({case.get('mandatory_failures', '?')} mandatory)"


def _case_rows(cases: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for case in cases:
        label = case["name"]
        if "error" in case:
            rows.append([label, case.get("models", DASH), *[DASH] * 8, "**error**"])
            continue
        rows.append(
            [
                label,
                case["models"],
                case["resources"],
                case["objects"],
                _s(case["render_s"]),
                _s(case["check_s"]),
                f"**{_s(case['total_s'])}** ({_s(case['total_min_s'])}{DASH}{_s(case['total_max_s'])})",
                _s(case["ms_per_object"], 1),
                *_memory_cells(case),
                _check_cell(case),
            ]
        )
    return rows


CASE_HEADER = (
    "models",
    "resources",
    "objects",
    "render s",
    "check s",
    f"render+check s (min{DASH}max)",
    "ms/object",
    "cold process s (render + check)",
    "peak RSS MiB (after imports)",
    "check",
)
CASE_RIGHT = tuple(range(1, 10))


def render_markdown(results: Mapping[str, Any]) -> str:
    """The report, from the numbers alone (`results` is what `--json` writes)."""
    settings = results.get("settings", {})
    m = results.get("machine", {})
    cases = [*results.get("stacks", []), *results.get("generated", [])]
    memory_method = next((c["memory"].get("method") for c in cases if c.get("memory", {}).get("method")), None)
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by infra/tools/bench.py (`make bench`); do not edit by hand: regenerate it. -->",
        f"_Generated by `infra/tools/bench.py` on {m.get('date', '?')}. Regenerate with `make bench` "
        "(or `.venv/bin/python -m infra.tools.bench --runs 5 --out docs/benchmarks.md --json build/bench.json`; "
        "`--no-tests` skips the test-suite run). Numbers from another machine or another load are not comparable._",
        "",
        "## Targets (issue 9)",
        "",
    ]
    targets = results.get("targets") or evaluate_targets(results)
    lines += _table(
        ["target", "measured (median render+check)", "result"],
        [[t["target"], t["measured"], f"**{t['result']}**"] for t in targets],
    )
    crd = settings.get("crd_schemas")
    lines += [
        "",
        "## How to read this",
        "",
        "- **render** is `run_program` (the real program under Pulumi mocks); **check** is what `private-llm check` "
        "does after it: parse the stack spec, run every resource and stack rule of the policy pack, and validate every "
        "built-in object with kubernetes-validate and every custom resource against its upstream CRD schema. "
        "**render+check** is their sum within one run.",
        f"- Times are the **median of {settings.get('runs', '?')} runs** in one process after "
        f"{settings.get('warmup', '?')} warm-up run(s) per case (imports done, caches warm); min{DASH}max shows the "
        "spread. **cold process s** is one render+check in a fresh interpreter, interpreter start and imports "
        "included: what a single `private-llm check` costs, plus a little.",
        *_warm_vs_cold(cases),
        "- **objects** are the rendered Kubernetes objects (one manifest file each, custom resources included); "
        "**resources** counts every registered resource (components, charts, providers too). **ms/object** is "
        "render+check divided by objects.",
        "- **peak RSS** is the peak resident set of a fresh subprocess per case that does one render+check "
        + (
            "(`VmHWM` of `/proc/self/status`, read at its end; in brackets its `VmRSS` after imports, before the run). "
            "Not `resource.getrusage(...).ru_maxrss`: on Linux a fork+exec child inherits its parent's high-water mark "
            "there, so every child of the benchmark process would report at least the parent's size, and the "
            "parent's `RUSAGE_CHILDREN` is the maximum over all children so far, not one per stack. "
            if memory_method != "ru_maxrss"
            else "(`resource.getrusage(RUSAGE_SELF).ru_maxrss` at its end; `/proc/self/status` was not available, "
            "and ru_maxrss may include the parent's size inherited across fork+exec). "
        )
        + "Not tracemalloc: it sees only Python allocations (not the C memory of grpc, protobuf or pydantic-core) "
        "and slows allocation-heavy code several-fold; RSS is what a CI runner or laptop must provide.",
        "- **Generated stacks** take the platform of the base stack "
        f"(`{settings.get('base_stack', DEFAULT_BASE_STACK)}`) and replace its models with N one-GPU "
        f"{SMALL_MODEL} deployments (max_model_len {SMALL_MODEL_CONTEXT}, TP=1, one replica), growing its GPU pool "
        "so the planner places them all. **Close to linear** compares the growth of time with the growth of "
        f"objects from {LINEAR_LOW_MODELS} to {TARGET_GENERATED_MODELS} models: factor = (time ratio) / (objects "
        f"ratio), PASS when ≤ {LINEAR_MAX_FACTOR:g}; the exponent k of time ∝ objects^k over all sizes is given "
        "too (1 = linear).",
        "- Custom resources were validated against CRD schemas: "
        + (f"**yes** (`{crd}`)." if crd else "**no** (no `../shared/crds`): check times are lower than with them.")
        + f" Load average at start: {_load(m.get('load_average'))}; at end: "
        f"{_load(results.get('load_average_end'))}; on a busy machine the medians are high, the minima closer to "
        "the truth.",
        "",
        "## Machine",
        "",
    ]
    packages = m.get("packages", {})
    machine_rows = [
        ["CPU", m.get("cpu_model", "?")],
        [
            "cores",
            f"{m.get('cpu_count', '?')} (usable by this process: {m.get('cpus_usable', '?')}"
            + (f"; cgroup limit {m['cgroup_cpu_limit']:g}" if m.get("cgroup_cpu_limit") else "")
            + ")",
        ],
        ["memory", f"{_s(m.get('memory_total_gib'), 1)} GiB ({_s(m.get('memory_available_gib'), 1)} GiB available)"],
        ["Python", m.get("python", "?")],
        ["OS", m.get("os", "?")],
        ["packages", ", ".join(f"{k} {v}" for k, v in packages.items())],
        ["commit", m.get("commit", "?")],
        ["date", m.get("date", "?")],
        ["load average (1, 5, 15 min) at start", _load(m.get("load_average"))],
        ["benchmark wall time", f"{_s(results.get('wall_s'), 0)} s"],
    ]
    lines += _table(["", ""], machine_rows)
    lines += ["", "## Shipped stacks", ""]
    lines += _table(["stack", *CASE_HEADER], _case_rows(results.get("stacks", [])), CASE_RIGHT)
    lines += ["", "## Generated stacks", ""]
    lines += _table(["generated", *CASE_HEADER], _case_rows(results.get("generated", [])), CASE_RIGHT)
    lines += [""]
    for label, key in (("render+check", "linearity"), ("render", "linearity_render"), ("check", "linearity_check")):
        fit = results.get(key)
        if fit:
            lines.append(
                f"- {label}: {fit['low_models']} → {fit['high_models']} models: time x{fit['time_ratio']:.2f}, "
                f"objects x{fit['object_ratio']:.2f}, factor **{fit['factor']:.2f}**; fit time = "
                f"{fit['intercept_s']:.2f} s + {fit['slope_ms_per_object']:.2f} ms x objects (R² {fit['r2']:.3f}), "
                f"exponent k = {fit['exponent']:.2f}."
            )
    notes = [f"- {case['name']}: {failure}" for case in cases for failure in case.get("failures", [])]
    notes += [f"- {case['name']}: did not run: {case['error']}" for case in cases if "error" in case]
    notes += [
        f"- {case['name']}: memory run failed: {case['memory']['error']}"
        for case in cases
        if "error" in (case.get("memory") or {})
    ]
    if notes:
        lines += ["", "Mandatory check failures and errors seen (the times above include the failing checks):", ""]
        lines += notes
    lines += _planner_section(results.get("planner"))
    lines += _tests_section(results.get("tests"))
    return "\n".join(lines) + "\n"


def _warm_vs_cold(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    """A note when the first render in a fresh process beats the warm in-process median (it did here: from the
    second run on, the Pulumi runtime drains outstanding outputs with a loop that is quadratic in their number)."""
    slower = [
        f"{c['name']} {_s(c['render_s'])} s vs {_s(c['memory']['render_s'])} s"
        for c in cases
        if "error" not in c
        and isinstance((c.get("memory") or {}).get("render_s"), float)
        and c["render_s"] > WARM_SLOWER_FACTOR * c["memory"]["render_s"]
    ]
    if not slower:
        return []
    return [
        f"- The **warm render is slower than the first render in a fresh process** (by more than "
        f"{WARM_SLOWER_FACTOR:g}x) for: {', '.join(slower)} (warm median vs fresh). From its second run in one "
        "process the Pulumi runtime drains the outstanding outputs with `asyncio.wait(FIRST_COMPLETED)` in a loop "
        "(`pulumi/runtime/stack.py` `wait_for_rpcs`), quadratic in their number; a single `private-llm check` "
        "pays the fresh-process figure, the test suite and this benchmark the warm one.",
    ]


def _load(values: Any) -> str:
    return ", ".join(f"{v:.2f}" for v in values) if values else "unknown"


def _planner_section(planner: Mapping[str, Any] | None) -> list[str]:
    lines = ["", "## Capacity planner", ""]
    if not planner:
        return [*lines, "Not measured."]
    lines += [
        f"`plan()` for every model x GPU pair of the catalogs ({planner['calls']} pairs, "
        f"{planner['gpus_per_node']} GPUs per node, each model's full context, one request; {planner['fits']} fit): "
        f"median of {planner['repeats']} calls per pair after one warm-up. Median per call "
        f"**{planner['median_us']:.0f} µs**, slowest pair {planner['max_us']:.0f} µs, all pairs once "
        f"{planner['all_pairs_ms']:.1f} ms. Per pair (µs; ✗ = does not fit):",
        "",
    ]
    gpus = list(dict.fromkeys(p["gpu"] for p in planner["pairs"]))
    models = list(dict.fromkeys(p["model"] for p in planner["pairs"]))
    cell = {(p["model"], p["gpu"]): f"{p['median_us']:.0f}" + ("" if p["fits"] else " ✗") for p in planner["pairs"]}
    rows = [[model, *(cell.get((model, gpu), DASH) for gpu in gpus)] for model in models]
    return lines + _table(["model", *gpus], rows, tuple(range(1, len(gpus) + 1)))


def _tests_section(tests: Mapping[str, Any] | None) -> list[str]:
    lines = ["", "## Test suite", ""]
    if not tests:
        return [*lines, "Not run (`--no-tests`)."]
    counts = ", ".join(f"{v} {k}" for k, v in sorted(tests.get("counts", {}).items())) or "no summary line"
    return lines + _table(
        ["command", "wall time s", "tests", "outcome", "exit code"],
        [[f"`{tests['command']}`", _s(tests["wall_s"], 1), tests["tests"], counts, tests["exit_code"]]],
        (1, 2, 4),
    )


# --------------------------------------------------------------------------------------------------------------
# Running it all
# --------------------------------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, project_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    crd_dir = None if args.no_crds else (args.crd_schemas or find_crd_dir(project_dir))
    results: dict[str, Any] = {
        "machine": machine(project_dir),
        "settings": {
            "runs": args.runs,
            "warmup": args.warmup,
            "sizes": args.sizes,
            "base_stack": args.base_stack,
            "crd_schemas": str(crd_dir) if crd_dir else None,
        },
    }
    stacks = args.stacks or shipped_stacks(project_dir)
    results["stacks"] = []
    for stack in stacks:
        log(f"stack {stack}: {args.warmup} warm-up + {args.runs} runs")
        try:
            config = load_stack_config(project_dir, stack)
            models = len(spec_of(config).models)
        except Exception as exc:
            results["stacks"].append({"name": stack, "models": 0, "error": _short(str(exc), 400)})
            continue
        case = measure_case(stack, config, models, args.runs, args.warmup, crd_dir)
        if not args.no_memory and "error" not in case:
            log(f"stack {stack}: memory in a fresh process")
            case["memory"] = measure_memory(project_dir, f"stack:{stack}", crd_dir)
        results["stacks"].append(case)
    results["generated"] = []
    for size in args.sizes:
        log(f"generated {size} models: {args.warmup} warm-up + {args.runs} runs")
        try:
            config = generated_config(project_dir, size, args.base_stack)
        except Exception as exc:
            results["generated"].append({"name": f"{size} models", "models": size, "error": _short(str(exc), 400)})
            continue
        case = measure_case(f"{size} models", config, size, args.runs, args.warmup, crd_dir)
        if not args.no_memory and "error" not in case:
            log(f"generated {size} models: memory in a fresh process")
            case["memory"] = measure_memory(project_dir, f"generated:{args.base_stack}:{size}", crd_dir)
        results["generated"].append(case)
    results["linearity"] = linearity(results["generated"])
    results["linearity_render"] = linearity(results["generated"], "render_s")
    results["linearity_check"] = linearity(results["generated"], "check_s")
    log("capacity planner")
    results["planner"] = planner_benchmark(args.runs)
    results["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if args.no_tests:
        results["tests"] = None
    else:
        log("test suite (pytest -q -p no:cacheprovider)")
        results["tests"] = run_test_suite(project_dir)
    results["targets"] = evaluate_targets(results)
    results["wall_s"] = time.perf_counter() - started
    return results


def profile_models(project_dir: Path, models: int, base_stack: str, crd_dir: Path | None, top: int = 25) -> None:
    """cProfile one render+check of `models` generated models (after a warm-up run); top functions by cumulative
    time on stdout."""
    config = generated_config(project_dir, models, base_stack)
    render_and_check(config, crd_dir)
    profiler = cProfile.Profile()
    profiler.enable()
    render_and_check(config, crd_dir)
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(top)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated model counts, got {text!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("model counts must be positive")
    return sizes


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m infra.tools.bench",
        description="Offline render/check timings and memory per stack and for generated stacks, planner and "
        "test-suite time, written as a Markdown report.",
    )
    p.add_argument("--runs", type=_positive, default=DEFAULT_RUNS, help="measured runs per case (median; default 3)")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="warm-up runs per case (default 1)")
    p.add_argument("--no-tests", action="store_true", help="do not run the test suite")
    p.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory runs")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report (default docs/benchmarks.md)")
    p.add_argument("--json", type=Path, default=None, help="also write the raw numbers as JSON to this file")
    p.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="generated model counts (1,10,50,100)")
    p.add_argument("--base-stack", default=DEFAULT_BASE_STACK, help="stack the generated stacks start from")
    p.add_argument("--stacks", nargs="*", default=None, help="shipped stacks to measure (default: all)")
    p.add_argument("--crd-schemas", type=Path, default=None, help="CRD schema folder (default: ../shared/crds)")
    p.add_argument("--no-crds", action="store_true", help="do not validate custom resources against CRD schemas")
    p.add_argument("--profile-models", type=_positive, default=None, metavar="N", help="cProfile N models; no report")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--memory-out", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    project_dir = find_project_dir()
    if args.memory_child:
        assert args.memory_out is not None
        crd_dir = None if args.no_crds else args.crd_schemas
        memory_child(args.memory_child, args.memory_out, crd_dir)
        return 0
    if args.profile_models:
        crd_dir = None if args.no_crds else (args.crd_schemas or find_crd_dir(project_dir))
        profile_models(project_dir, args.profile_models, args.base_stack, crd_dir)
        return 0
    results = run_benchmark(args, project_dir)
    report = render_markdown(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    log(f"wrote {args.out}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        log(f"wrote {args.json}")
    for target in results["targets"]:
        log(f"{target['result']}: {target['target']} — {target['measured']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
