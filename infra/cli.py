"""The `private-llm` command: render and check a stack offline, with no cluster, credentials or Pulumi CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from infra.capacity import DEFAULT_GPU_MEMORY_UTILIZATION, CapacityError, PlanRequest, gpu_type, resolve_model
from infra.capacity import plan as capacity_plan
from infra.catalog import LockError, lock_path, write_lock
from infra.config import DEFAULT_KUBERNETES_VERSION, PlatformSpec, StackConfigError, find_project_dir
from infra.inputs import MIB, InputError, in_pseudo_filesystem, load_yaml, read_text, read_yaml
from infra.offline import (
    MAX_STACK_FILE,
    OfflineError,
    Recording,
    RenderResult,
    load_stack_config,
    run_program,
    stack_config_of,
    stack_file,
    summarize,
    write_render,
)
from infra.pack_config import stack_pack_config
from infra.placement import plan_models, stack_plans
from infra.supply.inventory import inventory_document, stack_inventory
from infra.supply.lock import lock_stack
from infra.supply.registry_client import RegistryError
from infra.tools import rollout, weights
from infra.tools.checks import CheckReport, PolicyConfigError, check_recording, spec_of
from infra.tools.doctor import format_results, run_doctor
from infra.tools.evidence import build_evidence, model_revisions, write_evidence
from infra.tools.manifests import ManifestError, check_manifests
from policies.pack import merge_pack_config, validate_pack_config

MAX_MANIFEST = 16 * MIB
"""A weight manifest lists every file of a model: a few KiB; 16 MiB is far beyond any real one."""

app = typer.Typer(
    name="private-llm",
    help=(
        "Render and check a private-llm stack offline: no cluster, no credentials, no Pulumi CLI.\n\n"
        "Examples:\n\n"
        "  private-llm render --stack dev --out build/dev\n\n"
        "  private-llm check --stack dev --crd-schemas ../shared/crds\n\n"
        "  private-llm check --stack finance-prod --format json > check.json"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error (never wrapped, so it can be searched for in CI logs) and return the exit to raise."""
    err.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True, highlight=False)
    return typer.Exit(code)


class SseMode(StrEnum):
    kms = "aws:kms"
    aes256 = "AES256"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table or json.")]
StackOption = Annotated[str, typer.Option("--stack", "-s", help="Stack name: reads stacks/Pulumi.<stack>.yaml.")]
ProjectOption = Annotated[
    Path | None,
    typer.Option("--project-dir", help="Folder holding Pulumi.yaml (default: the working directory or above)."),
]


def _render(stack: str, project_dir: Path | None, quiet: bool = False) -> tuple[Recording, object]:
    try:
        root = project_dir or find_project_dir()
        config = load_stack_config(root, stack)
        if quiet:
            recording = run_program(config)
        else:
            with err.status(f"Rendering stack [bold]{stack}[/] offline…"):
                recording = run_program(config)
        return recording, config
    except OfflineError as exc:
        cause = exc.__cause__
        raise fail(str(cause) if isinstance(cause, StackConfigError) else str(exc)) from None
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None


def _exemptions(items: list[str]) -> dict[str, str]:
    exemptions: dict[str, str] = {}
    for item in items:
        namespace, _, reason = item.partition("=")
        if not namespace.strip() or len(reason.strip()) < 10:
            raise fail(
                f"--exempt {item!r}: write NAMESPACE=REASON with the reason an auditor reads "
                "(10 characters or more), e.g. --exempt 'gpu-operator=the NVIDIA driver needs host access'"
            )
        exemptions[namespace.strip()] = reason.strip()
    return exemptions


def _policy_overrides(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        document = read_yaml(path, "--policy-config", MIB)
    except InputError as exc:
        raise fail(str(exc)) from None
    problems = validate_pack_config(document)
    if problems:
        raise fail(f"--policy-config {path} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))
    return dict(document)


def _output_dir(path: Path, flag: str) -> Path:
    """A folder the command may write into, judged before anything is rendered (and nothing created yet: a stack
    that fails writes nothing): an existing file, or a place that cannot be written, is refused."""
    if path.exists() and not path.is_dir():
        raise fail(f"{flag} {path} is a file; give a folder (it is created if missing)")
    if in_pseudo_filesystem(path):
        raise fail(f"{flag} {path}: nothing is written under /proc, /sys or /dev; give a folder")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise fail(f"{flag} {path}: {existing} is not a folder this user can write to")
    return path


def _write(recording: Recording, out_dir: Path, flag: str) -> RenderResult:
    try:
        return write_render(recording, out_dir)
    except OSError as exc:
        raise fail(f"{flag} {out_dir}: cannot write the render ({exc.strerror})") from None


def _summary_tables(recording: Recording) -> list[Table]:
    counts = summarize(recording)
    tables = []
    for title, key in (("Resources by kind", "kind"), ("Resources by component", "component")):
        table = Table(title=title, title_justify="left")
        table.add_column(key.capitalize())
        table.add_column("Count", justify="right")
        for name, count in sorted(counts[key].items()):
            table.add_row(name, str(count))
        table.add_row("[bold]total[/]", f"[bold]{sum(counts[key].values())}[/]")
        tables.append(table)
    return tables


@app.command(
    help=(
        "Run the program offline under Pulumi mocks and write what it would build.\n\n"
        "Writes OUT/manifests/<namespace or _cluster>/<Kind>-<name>.yaml (one object per file), "
        "OUT/charts/<release>.yaml (each Helm chart's inputs) and OUT/resources.json (every resource, "
        'secret values shown as "[secret]", keys kept).\n\n'
        "Example: private-llm render --stack dev --out build/dev"
    )
)
def render(
    stack: StackOption,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created; old manifests replaced).")],
    project_dir: ProjectOption = None,
) -> None:
    _output_dir(out_dir, "--out")
    recording, _ = _render(stack, project_dir)
    result = _write(recording, out_dir, "--out")
    for table in _summary_tables(recording):
        out.print(table)
    out.print(
        f"Rendered stack [bold]{stack}[/]: {len(result.manifests)} Kubernetes objects, {len(result.charts)} charts, "
        f"{len(recording.resources)} resources → {out_dir}",
        soft_wrap=True,
    )


def _report_table(report: CheckReport, show_passed: bool) -> Table:
    table = Table(title=f"Check of stack {report.stack}", title_justify="left")
    for column in ("Policy", "Resource", "Level", "Result", "Message"):
        table.add_column(column, overflow="fold")
    rows = report.results if show_passed else report.failures
    for r in sorted(rows, key=lambda r: (r.passed, r.level != "mandatory", r.policy, r.resource)):
        status = "[green]pass[/]" if r.passed else ("[red]FAIL[/]" if r.level == "mandatory" else "[yellow]warn[/]")
        table.add_row(r.policy, r.resource, r.level, status, r.message)
    return table


def _policy_table(report: CheckReport) -> Table:
    table = Table(title="Results by policy", title_justify="left")
    table.add_column("Policy")
    table.add_column("Level")
    table.add_column("Checked", justify="right")
    table.add_column("Failed", justify="right")
    per: dict[str, list[int]] = {name: [0, 0] for name, _ in report.policies}
    levels: dict[str, str] = dict(report.policies)
    for r in report.results:
        counts = per.setdefault(r.policy, [0, 0])
        counts[0] += 1
        counts[1] += 0 if r.passed else 1
        levels[r.policy] = r.level
    for policy, (checked, failed) in sorted(per.items()):
        style = "red" if failed and levels[policy] == "mandatory" else ("yellow" if failed else "green")
        shown = f"[{style}]{failed}[/]" if checked else "[dim]not applicable[/]"
        table.add_row(policy, levels[policy], str(checked), shown)
    return table


@app.command(
    help=(
        "Render, then run every policy of the pack and validate every object: built-in kinds with "
        "kubernetes-validate --strict for the stack's Kubernetes version, custom resources against the CRD "
        "schemas in --crd-schemas. Exit 1 on any mandatory violation or invalid object.\n\n"
        "Examples:\n\n"
        "  private-llm check --stack dev --crd-schemas ../shared/crds\n\n"
        "  private-llm check --stack dev --format json\n\n"
        "  helm template x chart/ > out.yaml; private-llm check --manifests out.yaml --profile finance "
        "--registry harbor.bank.internal"
    )
)
def check(
    stack: Annotated[
        str | None, typer.Option("--stack", "-s", help="Stack name: reads stacks/Pulumi.<stack>.yaml.")
    ] = None,
    manifests: Annotated[
        Path | None,
        typer.Option(
            "--manifests",
            help="Check plain Kubernetes YAML instead of a stack: a file or a folder (e.g. `helm template` output).",
        ),
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", help="With --manifests: compliance profile whose levels apply.")
    ] = "baseline",
    kubernetes_version: Annotated[
        str, typer.Option("--kubernetes-version", help="With --manifests: target Kubernetes version.")
    ] = DEFAULT_KUBERNETES_VERSION,
    registries: Annotated[
        list[str] | None,
        typer.Option("--registry", help="With --manifests: an internal registry host images may come from (repeat)."),
    ] = None,
    output_format: FormatOption = OutputFormat.table,
    crd_schemas: Annotated[
        Path | None,
        typer.Option("--crd-schemas", help="Folder of CRD schemas laid out as <group>/<Kind>_<version>.json."),
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the render to this folder.")] = None,
    show_passed: Annotated[bool, typer.Option("--show-passed", help="List passing results too.")] = False,
    exempt: Annotated[
        list[str] | None,
        typer.Option(
            "--exempt",
            help="With --manifests: NAMESPACE=REASON, a documented exception the rules skip (repeat). Stacks "
            "declare theirs in policy.exceptions.",
        ),
    ] = None,
    policy_config_file: Annotated[
        Path | None,
        typer.Option(
            "--policy-config",
            help="A --policy-pack-config document (JSON or YAML: {policy id or all: level or config}) merged over "
            "the stack's or profile's config.",
        ),
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="With --stack: write the compliance evidence (evidence.json, evidence.md, evidence.html) here.",
        ),
    ] = None,
    project_dir: ProjectOption = None,
) -> None:
    if report_dir is not None and stack is None:
        raise fail("--report needs --stack: the evidence report covers a stack (its profile, exceptions, file digest)")
    if crd_schemas is not None and not crd_schemas.is_dir():
        raise fail(f"--crd-schemas {crd_schemas} is not a folder")
    if (stack is None) == (manifests is None):
        raise fail("give either --stack S (render and check a stack) or --manifests PATH (check plain YAML)")
    if exempt and manifests is None:
        raise fail("--exempt applies to --manifests; a stack declares its exceptions in policy.exceptions")
    overrides = _policy_overrides(policy_config_file)
    for folder, flag in ((out_dir, "--out"), (report_dir, "--report")):
        if folder is not None:
            _output_dir(folder, flag)
    if manifests is not None:
        try:
            report = check_manifests(
                manifests,
                profile,
                kubernetes_version,
                registries or [],
                exempt_namespaces=_exemptions(exempt or []),
                crd_dir=crd_schemas,
                overrides=overrides,
            )
        except (ManifestError, PolicyConfigError, InputError) as exc:
            raise fail(str(exc)) from None
        subject = f"manifests {manifests}"
    else:
        assert stack is not None
        recording, config = _render(stack, project_dir, quiet=output_format == OutputFormat.json)
        if out_dir is not None:
            _write(recording, out_dir, "--out")
        spec = spec_of(config)  # type: ignore[arg-type]
        try:
            report = check_recording(recording, spec, crd_schemas, overrides)
        except PolicyConfigError as exc:
            raise fail(str(exc)) from None
        subject = f"stack [bold]{stack}[/]"
        if report_dir is not None:
            root = project_dir or find_project_dir()
            pack_config = merge_pack_config(stack_pack_config(spec), overrides)
            evidence = build_evidence(
                report, pack_config, stack_file(root, stack), root, revisions=model_revisions(recording)
            )
            try:
                written = write_evidence(evidence, report_dir)
            except OSError as exc:
                raise fail(f"--report {report_dir}: cannot write the evidence ({exc.strerror})") from None
            for path in written:
                err.print(f"wrote {path}")
    if output_format == OutputFormat.json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        out.print(_policy_table(report))
        if report.failures or show_passed:
            out.print(_report_table(report, show_passed))
        s = report.summary()
        verdict = "[bold green]PASS[/]" if report.ok else "[bold red]FAIL[/]"
        out.print(
            f"{verdict} {subject} (profile {s['profile']}, Kubernetes {s['kubernetesVersion']}): "
            f"{s['resources']} resources, {s['results']} results, {s['failedMandatory']} mandatory and "
            f"{s['failedAdvisory']} advisory failures",
            soft_wrap=True,
        )
    if not report.ok:
        raise typer.Exit(1)


PLAN_COLUMNS = (
    ("Model", "model"),
    ("GPU", "gpu"),
    ("TP", "tensor_parallel_size"),
    ("PP", "pipeline_parallel_size"),
    ("Replicas", "replicas"),
    ("GPUs", "gpus"),
    ("Nodes", "nodes"),
    ("Weights GiB/GPU", "weights_gib_per_gpu"),
    ("KV GiB/GPU", "kv_cache_gib_per_gpu"),
    ("KV tokens", "kv_cache_tokens"),
    ("Max concurrency", "max_concurrency"),
    ("Decode ms/token ≥", "decode_ms_per_token_bound"),
    ("Cold start s", "load_time_s"),
    ("Fits", "fits"),
)


def _plan_table(rows: list[dict[str, Any]], title: str) -> Table:
    """One column per model, one row per figure: readable on any terminal width."""
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for row in rows:
        table.add_column(str(row.get("model", "")), justify="right")
    for header, key in PLAN_COLUMNS[1:]:
        cells = []
        for row in rows:
            value = row.get(key, "")
            if key == "fits":
                cells.append("[green]yes[/]" if value else "[red]no[/]")
            else:
                cells.append(str(value))
        table.add_row(header, *cells)
    return table


def _print_reasons(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        for reason in row.get("reasons") or []:
            out.print(f"  {row['model']}: {reason}", soft_wrap=True, highlight=False, markup=False)
        for rejected in row.get("rejected") or []:
            out.print(f"  {row['model']}: rejected {rejected}", soft_wrap=True, highlight=False, markup=False)


@app.command(
    help=(
        "Size models with the capacity planner: TP, PP, replicas, GPUs, nodes, KV cache and bounds.\n\n"
        "For a stack (every model of stacks/Pulumi.<stack>.yaml on its pool), or what-if without a stack.\n\n"
        "Examples:\n\n"
        "  private-llm plan --stack finance-prod\n\n"
        "  private-llm plan --model Llama-3.1-70B --gpu H100-80GB-SXM --max-model-len 32768\n\n"
        "  private-llm plan --model-config ./my-finetune/config.json --gpu L40S --gpus-per-node 4 --format json"
    )
)
def plan(
    stack: Annotated[str | None, typer.Option("--stack", "-s", help="Plan every model of this stack.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Catalog model name or Hugging Face id.")] = None,
    model_config: Annotated[
        Path | None, typer.Option("--model-config", help="A Hugging Face config.json (private fine-tunes).")
    ] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="GPU type, e.g. H100-80GB-SXM, A100-80GB, L40S.")] = None,
    tensor_parallel_size: Annotated[int | None, typer.Option("--tensor-parallel-size", "-tp")] = None,
    pipeline_parallel_size: Annotated[int | None, typer.Option("--pipeline-parallel-size", "-pp")] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option("--gpu-memory-utilization")] = None,
    max_model_len: Annotated[int | None, typer.Option("--max-model-len")] = None,
    quantization: Annotated[str | None, typer.Option("--quantization", help="fp8, int8, awq or gptq.")] = None,
    kv_cache_dtype: Annotated[str, typer.Option("--kv-cache-dtype", help="auto or fp8.")] = "auto",
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node")] = 8,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Concurrent max-length requests to hold.")] = 1,
    output_format: FormatOption = OutputFormat.table,
    project_dir: ProjectOption = None,
) -> None:
    rows: list[dict[str, Any]] = []
    if stack:
        if model or model_config or gpu:
            raise fail("--stack plans the stack's own models; leave out --model, --model-config and --gpu")
        root = project_dir or find_project_dir()
        try:
            spec = spec_of(load_stack_config(root, stack))
        except (OfflineError, StackConfigError) as exc:
            raise fail(str(exc)) from None
        for name, result, problems in stack_plans(spec, root):
            if result is None:
                rows.append({"model": name, "fits": False, "reasons": problems})
            else:
                rows.append({**result.to_json(), "model": name, "model_facts": result.model})
        title = f"Capacity plan of stack {stack}"
    else:
        if not gpu or not (model or model_config):
            raise fail("give --stack S, or --gpu and one of --model / --model-config for a what-if plan")
        try:
            request = PlanRequest(
                model=resolve_model(model, model_config),
                gpu=gpu_type(gpu),
                gpus_per_node=gpus_per_node,
                max_model_len=max_model_len,
                target_concurrency=concurrency,
                quantization=quantization,
                kv_cache_dtype=kv_cache_dtype,
                gpu_memory_utilization=gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION,
                tensor_parallel_size=tensor_parallel_size,
                pipeline_parallel_size=pipeline_parallel_size,
            )
        except CapacityError as exc:
            raise fail(str(exc)) from None
        rows.append(capacity_plan(request).to_json())
        title = "What-if capacity plan"
    if output_format == OutputFormat.json:
        document: Any = rows if stack else rows[0]
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    out.print(_plan_table(rows, title))
    _print_reasons(rows)
    if stack:
        _print_pools(spec, root)
    if not all(r.get("fits") for r in rows):
        raise typer.Exit(1)


def _print_pools(spec: PlatformSpec, root: Path) -> None:
    """What each pool holds once every model (and every revision) is placed: the replicas deployed, not the
    planner's suggestion, with autoscaling maxima."""
    try:
        placed = plan_models(spec, root)
    except StackConfigError as exc:
        for problem in exc.problems:
            out.print(f"  {problem}", soft_wrap=True, highlight=False, markup=False)
        return
    for pool in spec.node_pools:
        members = [p for p in placed if p.pool.name == pool.name]
        if not members:
            continue
        parts = ", ".join(f"{p.spec.name} {p.reserved_gpus}" for p in members)
        used = sum(p.reserved_gpus for p in members)
        out.print(
            f"pool {pool.name}: {used} of {pool.total_gpus} GPUs held at most ({parts})",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


@app.command(
    help=(
        "Read-only pre-flight of a stack against the real environment: Kubernetes API, the nodes of every GPU pool "
        "(Ready, allocatable GPUs, GPU product and driver labels from GPU Feature Discovery), storage classes, and "
        "for EKS pools the subnets, instance-type offerings and the model bucket. Exit 1 on any failure.\n\n"
        "Uses the stack's kubeconfig/context and the ambient AWS credentials.\n\n"
        "Examples:\n\n"
        "  private-llm doctor --stack finance-prod\n\n"
        "  private-llm doctor --stack eks-prod --format json"
    )
)
def doctor(
    stack: StackOption,
    output_format: FormatOption = OutputFormat.table,
    project_dir: ProjectOption = None,
) -> None:
    root = project_dir or find_project_dir()
    try:
        spec = spec_of(load_stack_config(root, stack))
    except (OfflineError, StackConfigError) as exc:
        raise fail(str(exc)) from None
    checks = run_doctor(spec)
    result = format_results(checks)
    if output_format == OutputFormat.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        table = Table(title=f"Pre-flight of stack {stack}", title_justify="left")
        for column in ("Check", "Target", "Result", "Found", "Fix"):
            table.add_column(column, overflow="fold")
        for c in checks:
            table.add_row(c.check, c.target, "[green]pass[/]" if c.passed else "[red]FAIL[/]", c.message, c.fix)
        out.print(table)
        summary = result["summary"]
        out.print(f"{summary['passed']} passed, {summary['failed']} failed", soft_wrap=True)
    if not result["summary"]["ok"]:
        raise typer.Exit(1)


@app.command(
    "policy-config",
    help=(
        "Print the policy pack config of a stack (target Kubernetes version, documented exemptions such as the GPU "
        "Operator namespace) for the real engine, so that `pulumi preview --policy-pack policies` reaches the same "
        "verdicts as `private-llm check`.\n\n"
        "Example:\n\n"
        "  private-llm policy-config --stack finance-prod > policy-config.json\n\n"
        "  pulumi preview --stack finance-prod --policy-pack policies --policy-pack-config policy-config.json"
    ),
)
def policy_config_command(stack: StackOption, project_dir: ProjectOption = None) -> None:
    root = project_dir or find_project_dir()
    try:
        spec = spec_of(load_stack_config(root, stack))
    except (OfflineError, StackConfigError) as exc:
        raise fail(str(exc)) from None
    document = stack_pack_config(spec)
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")


images_app = typer.Typer(help="Images and charts a stack needs: list them, lock their digests.", no_args_is_help=True)
models_app = typer.Typer(
    help="Model weights: manifests, verification, upload to the model store.", no_args_is_help=True
)
app.add_typer(images_app, name="images")
app.add_typer(models_app, name="models")


def _spec(stack: str, project_dir: Path | None) -> tuple[Any, Path]:
    root = project_dir or find_project_dir()
    try:
        return spec_of(load_stack_config(root, stack)), root
    except (OfflineError, StackConfigError) as exc:
        raise fail(str(exc)) from None


@images_app.command(
    "list",
    help=(
        "Every image (upstream reference, the reference the cluster pulls, digest when locked) and every chart "
        "(upstream and air-gapped oci:// reference) of a stack.\n\n"
        "Example: private-llm images list --stack finance-prod"
    ),
)
def images_list(
    stack: StackOption,
    output_format: FormatOption = OutputFormat.table,
    project_dir: ProjectOption = None,
) -> None:
    spec, root = _spec(stack, project_dir)
    try:
        images, charts = stack_inventory(spec, root, stack)
    except (LockError, StackConfigError) as exc:
        raise fail(str(exc)) from None
    if output_format == OutputFormat.json:
        sys.stdout.write(json.dumps(inventory_document(images, charts), indent=2) + "\n")
        return
    table = Table(title=f"Images of stack {stack}", title_justify="left")
    for column in ("Image", "Upstream", "Pulled as"):
        table.add_column(column, overflow="fold")
    for image in images:
        table.add_row(image.key, image.upstream, image.rendered)
    out.print(table)
    charts_table = Table(title=f"Charts of stack {stack}", title_justify="left")
    for column in ("Chart", "Version", "Upstream", "Air-gapped reference"):
        charts_table.add_column(column, overflow="fold")
    for chart in charts:
        charts_table.add_row(chart.key, chart.version, chart.upstream, chart.reference)
    out.print(charts_table)


@images_app.command(
    "lock",
    help=(
        "Resolve the digest of every image of a stack in the customer's registry and write "
        "stacks/Pulumi.<stack>.lock.yaml; rendered images are then digest-pinned. Credentials from "
        "PRIVATELLM_REGISTRY_USERNAME / PRIVATELLM_REGISTRY_PASSWORD.\n\n"
        "Example: private-llm images lock --stack finance-prod --ca-file /etc/pki/bank-root.pem"
    ),
)
def images_lock(
    stack: StackOption,
    registry_url: Annotated[
        str | None, typer.Option("--registry-url", help="Registry API base URL (default https://<registry.host>).")
    ] = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA bundle that signs the registry.")] = None,
    bootstrap_registry_url: Annotated[
        str | None,
        typer.Option(
            "--bootstrap-registry-url",
            help="With a managed Harbor: the bootstrap registry's API base URL, where Harbor's and the PKI's images "
            "are pulled from (default $PRIVATELLM_BOOTSTRAP_REGISTRY_URL, else "
            "https://<registry.harbor.bootstrap_registry>).",
        ),
    ] = None,
    project_dir: ProjectOption = None,
) -> None:
    spec, root = _spec(stack, project_dir)
    user, password = os.environ.get("PRIVATELLM_REGISTRY_USERNAME"), os.environ.get("PRIVATELLM_REGISTRY_PASSWORD")
    auth = (user, password) if user and password else None
    try:
        digests = lock_stack(
            spec,
            root,
            registry_url,
            auth,
            ca_file=str(ca_file) if ca_file else None,
            bootstrap_url=bootstrap_registry_url,
        )
    except (RegistryError, StackConfigError) as exc:
        raise fail(str(exc)) from None
    path = lock_path(root, stack)
    write_lock(path, digests)
    out.print(f"locked {len(digests)} images → {path}", soft_wrap=True)


@models_app.command(
    "manifest",
    help=(
        "Print the sha256sum manifest of a model folder.\n\n"
        "Example: private-llm models manifest ./Llama-3.1-8B-Instruct > sha256sums"
    ),
)
def models_manifest(model_dir: Annotated[Path, typer.Argument(help="Model folder.")]) -> None:
    try:
        sys.stdout.write(weights.compute_manifest(model_dir))
    except weights.WeightsError as exc:
        raise fail(str(exc)) from None


@models_app.command(
    "verify",
    help=(
        "Check a model folder against an approved sha256sum manifest (the same check the init container runs). "
        "Exit 1 on any mismatch, missing or unlisted weight file.\n\n"
        "Example: private-llm models verify ./Llama-3.1-8B-Instruct --manifest approved.sha256"
    ),
)
def models_verify(
    model_dir: Annotated[Path, typer.Argument(help="Model folder.")],
    manifest: Annotated[Path, typer.Option("--manifest", help="sha256sum-format manifest.")],
) -> None:
    try:
        problems = weights.verify_dir(model_dir, read_text(manifest, "--manifest", MAX_MANIFEST))
    except (OSError, weights.WeightsError, InputError) as exc:
        raise fail(str(exc)) from None
    for problem in problems:
        err.print(problem, soft_wrap=True, highlight=False, markup=False)
    if problems:
        raise typer.Exit(1)
    out.print(f"{model_dir}: every file matches {manifest}", soft_wrap=True)


@models_app.command(
    "upload",
    help=(
        "Upload a model folder and its manifest to the model's S3-compatible store (server-side encryption, "
        "multipart, manifest written last; refuses to overwrite a different manifest). Credentials from the "
        "standard AWS variables.\n\n"
        "Example: private-llm models upload ./Llama-3.3-70B-Instruct --stack finance-prod --model llama-3-3-70b"
    ),
)
def models_upload(
    model_dir: Annotated[Path, typer.Argument(help="Model folder.")],
    stack: StackOption,
    model: Annotated[str, typer.Option("--model", help="Model name in the stack (its storage must be s3).")],
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Approved manifest (default: computed).")] = None,
    sse: Annotated[SseMode, typer.Option("--sse", help="aws:kms or AES256.")] = SseMode.kms,
    kms_key: Annotated[str | None, typer.Option("--kms-key", help="KMS key id for aws:kms.")] = None,
    project_dir: ProjectOption = None,
) -> None:
    spec, _ = _spec(stack, project_dir)
    try:
        target = weights.s3_target(spec, model)
        client = weights.s3_client_for(spec, model)
        with weights.rich_progress(err, f"uploading {model}") as progress:
            result = weights.upload_model(
                model_dir,
                target.bucket,
                target.prefix,
                client,
                manifest_text=read_text(manifest, "--manifest", MAX_MANIFEST) if manifest else None,
                sse="aws:kms" if sse == SseMode.kms else "AES256",
                kms_key_id=kms_key,
                progress=progress,
            )
    except (OSError, weights.WeightsError, InputError) as exc:
        raise fail(str(exc)) from None
    out.print(
        f"{result.uri}: {len(result.uploaded)} files uploaded ({result.bytes_uploaded} bytes), "
        f"{len(result.skipped)} already there, manifest {'written' if result.manifest_written else 'unchanged'}",
        soft_wrap=True,
    )


rollout_app = typer.Typer(
    help="Canary and A/B rollouts between model revisions: gate checks, and changes that are safe to apply.",
    no_args_is_help=True,
)
app.add_typer(rollout_app, name="rollout")
VERDICT_STYLE = {"pass": "green", "hold": "yellow", "fail": "bold red"}


@rollout_app.command(
    "check",
    help=(
        "Judge a model's candidate revision against its stable one over the gate's window (models[].rollout.gate): "
        "warm-up, sample size, error ratio, TTFT and inter-token latency p95 from Prometheus, and with "
        "--elasticsearch the gateway's 5xx answers per revision from the audit log. Prints pass, hold or fail per "
        "gate and the next weight. Exit 0 on pass or hold, 1 on fail, 2 when it cannot check.\n\n"
        "Credentials come from the environment, never flags: PROMETHEUS_TOKEN (bearer), ELASTICSEARCH_API_KEY or "
        "ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD.\n\n"
        "Example: private-llm rollout check --stack finance-prod --model llama-3-1-8b "
        "--prometheus https://prometheus.monitoring.svc:9090 --ca-file ca.crt"
    ),
)
def rollout_check(
    stack: StackOption,
    model: Annotated[str, typer.Option("--model", help="Model name in the stack (or its served name).")],
    prometheus: Annotated[str, typer.Option("--prometheus", help="Prometheus URL (its HTTP API).")],
    elasticsearch: Annotated[
        str | None, typer.Option("--elasticsearch", help="Elasticsearch URL: also judge the audit log's 5xx.")
    ] = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA bundle for https (the platform CA).")] = None,
    output_format: FormatOption = OutputFormat.table,
    project_dir: ProjectOption = None,
) -> None:
    spec, root = _spec(stack, project_dir)
    try:
        if ca_file is not None:
            read_text(ca_file, "--ca-file", MIB)
        token = os.environ.get("PROMETHEUS_TOKEN")
        metrics = rollout.Prometheus(
            rollout.HttpSource(prometheus, "Prometheus", ca_file, {"Authorization": f"Bearer {token}"} if token else {})
        )
        audit = None
        if elasticsearch is not None:
            headers, auth = rollout.audit_credentials(os.environ)
            audit = rollout.AuditLog(rollout.HttpSource(elasticsearch, "Elasticsearch", ca_file, headers, auth))
        report = rollout.check_rollout(spec, root, model, metrics, audit)
    except (rollout.RolloutError, InputError, StackConfigError) as exc:
        raise fail(str(exc)) from None
    if output_format == OutputFormat.json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        weights_text = ", ".join(f"{k} {v}%" for k, v in report.weights.items())
        out.print(f"{report.model} ({report.served_model_name}): {weights_text}", soft_wrap=True, highlight=False)
        if report.gates:
            table = Table(
                title=f"Candidate {report.candidate} against {report.stable}", title_justify="left", highlight=False
            )
            for column in ("Gate", "Verdict", "Measured", "Limit", "Detail"):
                table.add_column(column, overflow="fold")
            for g in report.gates:
                table.add_row(g.gate, f"[{VERDICT_STYLE[g.verdict]}]{g.verdict}[/]", g.measured, g.limit, g.detail)
            out.print(table)
        out.print(
            Text("verdict: ")
            + Text(report.verdict, style=VERDICT_STYLE[report.verdict])
            + Text(f"; next weight of {report.candidate or report.stable}: {report.next_weight}"),
            soft_wrap=True,
            highlight=False,
        )
        out.print(f"next: {report.next_step}", soft_wrap=True, highlight=False, markup=False)
    if report.verdict == "fail":
        raise typer.Exit(1)


@rollout_app.command(
    "diff",
    help=(
        "Compare a stack file with an earlier version of it (a file, or the same path at a git revision) and refuse "
        "a change that removes a revision still taking traffic: lower its weight to 0, apply, then remove it. "
        "Prints every revision's weight before and after. Exit 1 when refused.\n\n"
        "Examples:\n\n"
        "  private-llm rollout diff --stack finance-prod --base-ref origin/main\n\n"
        "  private-llm rollout diff --stack finance-prod --base previous/Pulumi.finance-prod.yaml"
    ),
)
def rollout_diff(
    stack: StackOption,
    base: Annotated[Path | None, typer.Option("--base", help="The earlier stack file.")] = None,
    base_ref: Annotated[
        str | None, typer.Option("--base-ref", help="A git revision holding the earlier stack file (same path).")
    ] = None,
    output_format: FormatOption = OutputFormat.table,
    project_dir: ProjectOption = None,
) -> None:
    if (base is None) == (base_ref is None):
        raise fail("give one of --base FILE or --base-ref REVISION (the earlier version of the stack file)")
    after, root = _spec(stack, project_dir)
    try:
        if base is not None:
            text, where = read_text(base, "--base", MAX_STACK_FILE), str(base)
        else:
            assert base_ref is not None
            text, where = git_show(root, base_ref, stack_file(root, stack))
        before = spec_of(stack_config_of(stack, load_yaml(text, where), where))
    except (OfflineError, StackConfigError, InputError) as exc:
        raise fail(str(exc)) from None
    problems = rollout.removal_problems(before, after)
    rows = rollout.weight_changes(before, after)
    if output_format == OutputFormat.json:
        document = {"base": where, "revisions": rows, "problems": problems, "ok": not problems}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        table = Table(title=f"Revision weights of stack {stack}: {where} → now", title_justify="left")
        for column in ("Model", "Revision", "Before", "After"):
            table.add_column(column)
        for row in rows:
            cell = {k: "-" if row[k] is None else str(row[k]) for k in ("before", "after")}
            table.add_row(row["model"], row["revision"], cell["before"], cell["after"])
        out.print(table if rows else "no model has revisions before or after")
        for problem in problems:
            err.print(Text("refused: ", style="bold red") + Text(problem), soft_wrap=True, highlight=False)
    if problems:
        raise typer.Exit(1)


def git_show(root: Path, revision: str, path: Path) -> tuple[str, str]:
    """The text of `path` (inside the repository at `root`) at a git revision."""
    if not re.fullmatch(r"[A-Za-z0-9_./@^~{}-]{1,200}", revision) or revision.startswith("-"):
        raise InputError(f"--base-ref {revision!r} is not a git revision (a branch, tag or commit)")
    try:
        top = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
        relative = path.resolve().relative_to(Path(top).resolve()).as_posix()
        shown = subprocess.run(
            ["git", "-C", top, "show", f"{revision}:{relative}"], capture_output=True, check=False, timeout=60
        )
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError):
        raise InputError(f"--base-ref: {root} is not inside a git repository (give --base FILE)") from None
    where = f"{revision}:{relative}"
    if shown.returncode != 0:
        raise InputError(f"--base-ref: git has no {where} (fetch the revision, or give --base FILE)")
    if len(shown.stdout) > MAX_STACK_FILE:
        raise InputError(f"{where} is larger than {MAX_STACK_FILE // MIB} MiB")
    try:
        return shown.stdout.decode("utf-8"), where
    except UnicodeDecodeError:
        raise InputError(f"{where} is not UTF-8 text") from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
