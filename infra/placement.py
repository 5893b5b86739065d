"""From the stack's `models` to sized, validated placements on its GPU pools.

`plan_models` resolves every model (catalog or config.json), finds its GPU pool, runs the capacity planner and
places the models on their pools. Every problem — an unknown model or pool, a model that does not fit, more GPUs
than the pool has, a forbidden vLLM flag, a missing integrity manifest where the profile requires one — is
collected and raised as one StackConfigError before any resource is registered."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pulumi

from components.assets.verify_weights import parse_manifest
from components.vllm import (
    check_extra_args,
)
from infra.capacity import CapacityError, Plan, PlanRequest, gpu_type, plan, resolve_model
from infra.capacity.models import ModelSpec as ModelFacts
from infra.catalog import DEFAULT_DRIVER_VERSION
from infra.config import (
    FULL_PLATFORM_KEY,
    GpuPoolSpec,
    ModelDeploymentSpec,
    PlatformSpec,
    RevisionSpec,
    StackConfigError,
)
from infra.features import runs_gpu_operator
from infra.gpu_stack import driver_problem, instance_problem, mig_problem
from infra.inputs import MIB, InputError, read_text
from infra.profiles import PROFILE_SETTINGS

DEFAULT_BANDWIDTH_GBPS = {"pvc": 1.0, "s3": 2.0}


@dataclass(frozen=True)
class PlacedModel:
    """A model with its facts, its pool and the plan the deployment follows."""

    index: int
    spec: ModelDeploymentSpec
    """What is deployed: with revisions, the model as this revision deploys it (`ModelDeploymentSpec.revision`)."""
    facts: ModelFacts
    pool: GpuPoolSpec
    plan: Plan
    replicas: int
    integrity_manifest: str | None
    revision: RevisionSpec | None = None
    """The revision this is, when the model has revisions."""
    model_name: str = ""
    """The stack's name of the model (its revisions' objects are `<model>-<revision>`)."""

    @property
    def gpus_per_replica(self) -> int:
        return self.plan.tensor_parallel_size * self.plan.pipeline_parallel_size

    @property
    def reserved_gpus(self) -> int:
        """GPUs the model may hold at most (autoscaling maximum included)."""
        most = self.replicas
        if self.spec.autoscaling.enabled and self.spec.autoscaling.max_replicas:
            most = max(most, self.spec.autoscaling.max_replicas)
        return most * self.gpus_per_replica

    @property
    def weight_bytes(self) -> int:
        return int(self.plan.weights_gib_per_gpu * self.gpus_per_replica * 2**30)


def _path(i: int, field: str) -> str:
    return f"{FULL_PLATFORM_KEY}.models[{i}].{field}"


MAX_WEIGHT_MANIFEST = 16 * MIB
"""A weight manifest lists every file of a model: a few KiB; 16 MiB is far beyond any real one."""


def _read_manifest(
    model: ModelDeploymentSpec, path: Callable[[str], str], project_dir: Path, problems: list[str]
) -> str | None:
    integrity = model.integrity
    if integrity is None or integrity.configmap:
        return None
    if integrity.sha256:
        text = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(integrity.sha256.items()))
    else:
        file = project_dir / str(integrity.manifest_file)
        try:
            text = read_text(file, path("integrity.manifest_file"), MAX_WEIGHT_MANIFEST)
        except InputError as exc:
            problems.append(str(exc))
            return None
    try:
        parse_manifest(text)
    except ValueError as exc:
        problems.append(f"{path('integrity')}: {exc}")
        return None
    return text


def plan_models(spec: PlatformSpec, project_dir: Path) -> list[PlacedModel]:
    problems: list[str] = []
    if spec.models and spec.registry is None:
        problems.append(
            f"{FULL_PLATFORM_KEY}.registry is not set: every image is pulled through your registry; "
            "add registry: {host: harbor.example.internal}"
        )
    elif runs_gpu_operator(spec) and spec.registry is None:
        problems.append(
            f"{FULL_PLATFORM_KEY}.registry is not set, but node_pools with gpu_operator.enabled: true install the "
            "NVIDIA GPU Operator, whose images are pulled through your registry; add registry: "
            "{host: harbor.example.internal}, or set gpu_operator.enabled: false if the nodes' GPU software is "
            "managed outside the platform"
        )
    pools: dict[str, GpuPoolSpec] = {}
    for i, pool in enumerate(spec.node_pools):
        if pool.name in pools:
            problems.append(f"{FULL_PLATFORM_KEY}.node_pools[{i}].name={pool.name!r} is used twice")
        pools[pool.name] = pool
        problems.extend(pool_problems(spec, i, pool))
    problems.extend(driver_problems(spec))
    names: dict[str, str] = {}
    served: dict[str, int] = {}
    placed: list[PlacedModel] = []
    for i, model in enumerate(spec.models):
        if model.served_name in served and served[model.served_name] != i:
            problems.append(f"{_path(i, 'served_model_name')}={model.served_name!r} is served by another model")
        served[model.served_name] = i
        units = [(None, model)] if not model.revisions else [(r, model.revision(r)) for r in model.revisions]
        for j, (revision, unit) in enumerate(units):
            where = _path(i, "name") if revision is None else _path(i, f"revisions[{j}]")
            if unit.name in names and revision is None:
                problems.append(f"{where}={unit.name!r} is used by another model")
            elif unit.name in names:
                problems.append(
                    f"{where}: its objects would be named {unit.name!r}, already those of {names[unit.name]}; "
                    "give the revision another name"
                )
            names.setdefault(unit.name, where)

            def path(field: str, i: int = i, j: int = j, revision: RevisionSpec | None = revision) -> str:
                overridden = revision is not None and field.split(".")[0] in revision.overrides()
                return _path(i, f"revisions[{j}].{field}" if overridden else field)

            found = _place(spec, i, unit, pools, project_dir, problems, path)
            if found is not None:
                placed.append(dataclasses.replace(found, revision=revision, model_name=model.name))
    # Place the models on their pools: together they may not need more GPUs than the pool has.
    used: dict[str, int] = defaultdict(int)
    for p in placed:
        used[p.pool.name] += p.reserved_gpus
        if p.spec.autoscaling.enabled and p.spec.autoscaling.max_replicas is None:
            problems.append(f"{_path(p.index, 'autoscaling.max_replicas')} is required when autoscaling is enabled")
    for name, gpus in used.items():
        pool = pools[name]
        if gpus > pool.total_gpus:
            detail = ", ".join(
                f"{p.spec.name} {p.reserved_gpus} ({p.reserved_gpus // p.gpus_per_replica} x {p.gpus_per_replica} GPUs)"
                for p in placed
                if p.pool.name == name
            )
            revisions = any(p.revision is not None for p in placed if p.pool.name == name)
            fix = (
                "add nodes, lower replicas, or remove a revision whose weight is 0 (every revision of a model holds "
                "its GPUs at once)"
                if revisions
                else "add nodes or lower replicas"
            )
            problems.append(
                f"node pool {name!r} has {pool.total_gpus} GPUs ({pool.nodes} nodes x {pool.gpus_per_node} {pool.gpu}) "
                f"but its models need {gpus}: {detail}; {fix}"
            )
    if problems:
        raise StackConfigError(problems, pulumi.get_stack() if _in_pulumi() else None)
    return placed


def _place(
    spec: PlatformSpec,
    i: int,
    model: ModelDeploymentSpec,
    pools: Mapping[str, GpuPoolSpec],
    project_dir: Path,
    problems: list[str],
    path: Callable[[str], str],
) -> PlacedModel | None:
    """One deployment (a model, or one revision of it) sized on its pool; problems named by `path(field)`."""
    found_pool = pools.get(model.pool)
    if found_pool is None:
        known = ", ".join(sorted(pools)) or "none defined"
        problems.append(f"{path('pool')}={model.pool!r} is not a node pool of this stack (pools: {known})")
    if PROFILE_SETTINGS[spec.profile].integrity_required and model.integrity is None:
        problems.append(
            f"{path('integrity')} is required by the {spec.profile} profile: give the SHA-256 manifest "
            "of the approved weights (manifest_file or sha256)"
        )
    for problem in check_extra_args(model.extra_args, model.trust_remote_code):
        problems.append(f"{path('extra_args')}: {problem}")
    manifest = _read_manifest(model, path, project_dir, problems)
    try:
        config_path = project_dir / model.config_path if model.config_path else None
        facts = resolve_model(model.model, config_path)
    except CapacityError as exc:
        problems.append(f"{path('model' if model.model else 'config_path')}: {exc}")
        return None
    if found_pool is None:
        return None
    pool = found_pool
    if pool.partitioned:
        problems.append(
            f"{path('pool')}={pool.name!r} partitions its GPUs (MIG or time-slicing); vLLM models are sized "
            "on whole GPUs: serve them from a pool without partitioning"
        )
        return None
    try:
        result = plan(plan_request(model, facts, pool))
    except CapacityError as exc:
        problems.append(f"{FULL_PLATFORM_KEY}.models[{i}]: {exc}")
        return None
    if not result.fits:
        where = f"{model.name}: {facts.name} on {pool.gpu} x{pool.gpus_per_node}/node"
        detail = "; ".join(result.reasons)
        if result.rejected:
            detail += f" (smallest layout rejected: {result.rejected[0]})"
        problems.append(f"{FULL_PLATFORM_KEY}.models[{i}] ({where}): {detail}")
        return None
    return PlacedModel(i, model, facts, pool, result, model.replicas or result.replicas, manifest)


def pool_problems(spec: PlatformSpec, i: int, pool: GpuPoolSpec) -> list[str]:
    """What is wrong with one node pool: GPU type, stated memory, MIG profile, EKS instance types, driver."""
    where = f"{FULL_PLATFORM_KEY}.node_pools[{i}]"
    try:
        gpu = gpu_type(pool.gpu)
    except CapacityError as exc:
        return [f"{where}.gpu={pool.gpu!r}: {exc}"]
    problems = []
    if pool.gpu_memory_gib is not None and abs(pool.gpu_memory_gib - gpu.memory_gib) > 0.03 * gpu.memory_gib:
        problems.append(
            f"{where}.gpu_memory_gib={pool.gpu_memory_gib} does not match {gpu.name} ({gpu.memory_gib} GiB visible to "
            "CUDA); check the GPU type or the figure"
        )
    if pool.mig.strategy != "none":
        problem = mig_problem(gpu.name, pool.mig.profile)
        if problem:
            problems.append(f"{where}.mig: {problem}")
    if pool.eks is not None:
        for j, instance in enumerate(pool.eks.instance_types):
            problem = instance_problem(instance, gpu.name, pool.gpus_per_node)
            if problem:
                problems.append(f"{where}.eks.instance_types[{j}]: {problem}")
    return problems


def driver_problems(spec: PlatformSpec) -> list[str]:
    """The GPU driver (installed by the operator, or pre-installed) must run the pinned vLLM image."""
    if not spec.node_pools:
        return []
    operator = spec.gpu_operator
    if operator.driver == "preinstalled" and not operator.driver_version:
        return [
            f"{FULL_PLATFORM_KEY}.gpu_operator.driver_version is required with driver: preinstalled (the version "
            "installed on the nodes, e.g. 580.95.05), so that it can be checked against the vLLM image"
        ]
    problem = driver_problem(operator.driver_version or DEFAULT_DRIVER_VERSION)
    return [f"{FULL_PLATFORM_KEY}.gpu_operator.driver_version: {problem}"] if problem else []


def plan_request(model: ModelDeploymentSpec, facts: ModelFacts, pool: GpuPoolSpec) -> PlanRequest:
    """The planner's question for one model of the stack on its pool."""
    storage = model.storage
    return PlanRequest(
        model=facts,
        gpu=gpu_type(pool.gpu),
        gpus_per_node=pool.gpus_per_node,
        max_model_len=model.max_model_len,
        target_concurrency=model.target_concurrency,
        quantization=model.quantization,
        kv_cache_dtype=model.kv_cache_dtype,
        gpu_memory_utilization=model.gpu_memory_utilization,
        tensor_parallel_size=model.tensor_parallel_size,
        pipeline_parallel_size=model.pipeline_parallel_size,
        pool_gpus=pool.total_gpus,
        max_num_seqs=model.max_num_seqs,
        storage_gbps=storage.bandwidth_gbps or DEFAULT_BANDWIDTH_GBPS[storage.type],
    )


def stack_plans(spec: PlatformSpec, project_dir: Path) -> list[tuple[str, Plan | None, list[str]]]:
    """(model name, plan or None, problems) for every model of a stack, without raising: for `private-llm plan`."""
    pools = {p.name: p for p in spec.node_pools}
    out: list[tuple[str, Plan | None, list[str]]] = []
    for i, stack_model in enumerate(spec.models):
        # A model with revisions is planned per revision (each is deployed, and holds its GPUs, on its own).
        units = [stack_model.revision(r) for r in stack_model.revisions] or [stack_model]
        for model in units:
            pool = pools.get(model.pool)
            if pool is None:
                out.append((model.name, None, [f"{_path(i, 'pool')}={model.pool!r} is not a node pool of this stack"]))
                continue
            try:
                config_path = project_dir / model.config_path if model.config_path else None
                facts = resolve_model(model.model, config_path)
                out.append((model.name, plan(plan_request(model, facts, pool)), []))
            except CapacityError as exc:
                out.append((model.name, None, [str(exc)]))
    return out


def _in_pulumi() -> bool:
    try:
        pulumi.get_stack()
    except Exception:
        return False
    return True


def free_gpus(placed: list[PlacedModel], pool: GpuPoolSpec) -> int:
    return pool.total_gpus - sum(p.reserved_gpus for p in placed if p.pool.name == pool.name)
