"""Every values document the program renders names only keys the pinned chart has upstream.

Helm ignores a misspelt key without a word, so a value that never reaches the chart looks set in review and does
nothing. The upstream default values of every pinned chart (and of the subcharts the platform configures) are test
data in ../shared/chart-values (`index.json` says where each file came from): a key of ours must exist there, in the
chart's values.schema.json where it has one, or under a map the chart documents as free-form (`FREE_FORM` below,
each with its reason). Where a schema exists, the merged values validate against it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from infra.catalog import CHARTS
from infra.offline import Recording, available_stacks, load_stack_config, run_program
from infra.tools.schemas import definition_validator
from tests.conftest import ROOT, required, shared_folder

STACKS = available_stacks(ROOT)

# Catalog key → its folder in ../shared/chart-values (the catalog's chart name is the upstream chart's name).
FOLDERS = {key: key for key in CHARTS}

GPU_OPERATOR_TEMPLATES = "NVIDIA/gpu-operator v26.7.0 deployments/gpu-operator/templates"
FREE_FORM: dict[str, dict[str, str]] = {
    "envoy-gateway": {
        "config.envoyGateway": (
            "the EnvoyGateway configuration (gateway.envoyproxy.io/v1alpha1 EnvoyGateway), written as given into the "
            "envoy-gateway-config ConfigMap: its fields are Envoy Gateway's API, not the chart's"
        ),
    },
    "kube-prometheus-stack/grafana": {
        "grafana.ini": "Grafana's own configuration file (section.key as in Grafana's documentation), rendered as INI",
    },
}
"""Per chart: value paths (dotted, from the chart's own values) under which the chart takes any key, with the
reason."""

READ_BUT_NOT_DEFAULTED: dict[str, dict[str, str]] = {
    "gpu-operator": {
        "operator.version": f"{GPU_OPERATOR_TEMPLATES}/_helpers.tpl: .Values.operator.version | default AppVersion",
        "validator.version": f"{GPU_OPERATOR_TEMPLATES}/clusterpolicy.yaml: .Values.validator.version | default",
        "dcgmExporter.imagePullSecrets": f"{GPU_OPERATOR_TEMPLATES}/clusterpolicy.yaml, gpucluster.yaml",
    },
    "kube-prometheus-stack/grafana": {
        "sidecar.skipTlsVerify": (
            "grafana-community/helm-charts grafana-12.11.1 charts/grafana/templates/_pod.tpl: the default of "
            "sidecar.{alerts,datasources,dashboards,notifiers}.skipTlsVerify"
        ),
    },
}
"""Per chart: keys the chart's templates read that its values.yaml leaves out (or has only as a comment), with the
template that reads them (read in the upstream repository at the pinned tag)."""

KUBERNETES_TYPED: dict[str, dict[str, str]] = {
    "ai-gateway": {
        "controller.securityContext": "SecurityContext",
        "controller.podSecurityContext": "PodSecurityContext",
    },
    "eck-operator": {"securityContext": "SecurityContext", "podSecurityContext": "PodSecurityContext"},
    "keda": {
        **{f"securityContext.{c}": "SecurityContext" for c in ("operator", "metricServer", "webhooks")},
        **{f"podSecurityContext.{c}": "PodSecurityContext" for c in ("operator", "metricServer", "webhooks")},
    },
    "kube-prometheus-stack/grafana": {"livenessProbe": "Probe", "readinessProbe": "Probe"},
}
"""Per chart: value paths the chart renders as given into a Kubernetes object field (`toYaml` into the pod or
container): checked against that Kubernetes type's strict schema (io.k8s.api.core.v1.<type>) instead."""


def chart_values_dir() -> Path | None:
    return shared_folder("PRIVATELLM_CHART_VALUES", "chart-values")


@pytest.fixture(scope="module")
def upstream() -> Path:
    return required(
        chart_values_dir(), "upstream chart values not found", "../shared/chart-values or $PRIVATELLM_CHART_VALUES"
    )


@cache
def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


@cache
def _schema(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def subcharts(folder: Path) -> dict[str, Path]:
    """Values key → folder of each subchart we have defaults for (the dependency's alias, else its name)."""
    chart = _yaml(folder / "Chart.yaml") or {}
    out = {}
    for dep in chart.get("dependencies") or []:
        sub = folder / "charts" / dep["name"]
        if (sub / "values.yaml").is_file():
            out[dep.get("alias") or dep["name"]] = sub
    return out


def resolve(schema: Any, root: Any) -> Any:
    """`schema` with its local `$ref`s followed (values.schema.json files define every part under `$defs`)."""
    while isinstance(schema, Mapping) and str(schema.get("$ref", "")).startswith("#/"):
        node = root
        for part in str(schema["$ref"])[2:].split("/"):
            node = node[part]
        schema = node
    return schema


@dataclass(frozen=True)
class Chart:
    """What the walk knows of one chart: its defaults, its schema, its documented exceptions."""

    key: str
    defaults: Mapping[str, Any]
    schema: Any
    free_form: Mapping[str, str]
    read: Mapping[str, str]
    typed: Mapping[str, str]


def unknown_keys(chart: Chart, values: Any, defaults: Any, schema: Any, path: str = "") -> Iterator[str]:
    if not isinstance(values, Mapping):
        return
    schema = resolve(schema, chart.schema)
    declared = schema.get("properties") or {} if isinstance(schema, Mapping) else {}
    for key, value in values.items():
        where = f"{path}.{key}" if path else str(key)
        if where in chart.free_form or where in chart.read:
            continue
        if where in chart.typed:
            validator = definition_validator("1.33", f"io.k8s.api.core.v1.{chart.typed[where]}")
            yield from (f"{where}: {e.message} (Kubernetes {chart.typed[where]})" for e in validator.iter_errors(value))
            continue
        sub_schema = declared.get(key)
        if isinstance(defaults, Mapping) and key in defaults:
            default = defaults[key]
            if isinstance(value, Mapping) and isinstance(default, Mapping) and default:
                yield from unknown_keys(chart, value, default, sub_schema, where)
            elif isinstance(value, Mapping) and default not in (None, {}) and not isinstance(default, Mapping):
                yield f"{where} (upstream {type(default).__name__} {default!r}, ours a map)"
        elif sub_schema is not None:
            yield from unknown_keys(chart, value, None, sub_schema, where)
        else:
            yield where


def chart_problems(
    folder: Path, values: Mapping[str, Any], key: str, prefix: str = "", parent_defaults: Any = None
) -> list[str]:
    """Unknown keys in `values` for the chart in `folder` (a subchart also knows the keys its parent's values set
    for it under its alias), then schema errors of the merged values where the chart has a values.schema.json."""
    defaults = deep_merge(copy.deepcopy(_yaml(folder / "values.yaml") or {}), parent_defaults or {})
    chart = Chart(
        key,
        defaults,
        _schema(folder / "values.schema.json"),
        FREE_FORM.get(key, {}),
        READ_BUT_NOT_DEFAULTED.get(key, {}),
        KUBERNETES_TYPED.get(key, {}),
    )
    subs = subcharts(folder)
    own = {k: v for k, v in values.items() if k not in subs}
    problems = [f"{key}: {prefix}{p}" for p in unknown_keys(chart, own, defaults, chart.schema)]
    for alias, sub in subs.items():
        if isinstance(values.get(alias), Mapping):
            problems += chart_problems(sub, values[alias], f"{key}/{alias}", f"{prefix}{alias}.", defaults.get(alias))
    if chart.schema is not None:
        merged = deep_merge(copy.deepcopy(dict(defaults)), own)
        for error in jsonschema.Draft7Validator(chart.schema).iter_errors(merged):
            at = ".".join(str(p) for p in error.absolute_path)
            problems.append(f"{key}: {prefix}{at}: {error.message} (values.schema.json)")
    return problems


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def catalog_key(resource_chart: str) -> str:
    name = resource_chart.rstrip("/").rsplit("/", 1)[-1]
    return next(k for k, ref in CHARTS.items() if ref.name == name)


@cache
def rendered(stack: str) -> Recording:
    return run_program(load_stack_config(ROOT, stack))


@pytest.mark.parametrize("stack", STACKS)
def test_every_values_key_exists_upstream(stack: str, upstream: Path) -> None:
    problems = []
    for chart in rendered(stack).charts():
        key = catalog_key(str(chart.inputs["chart"]))
        problems += chart_problems(upstream / FOLDERS[key], chart.inputs.get("values") or {}, key)
    assert problems == []


def lookup(node: Any, path: str) -> Any:
    """The value at a dotted path; a key may itself hold dots (Grafana's `grafana.ini`)."""
    if not isinstance(node, Mapping):
        return None
    if path in node:
        return node[path]
    for i, char in enumerate(path):
        if char == "." and path[:i] in node:
            found = lookup(node[path[:i]], path[i + 1 :])
            if found is not None:
                return found
    return None


def all_values(upstream: Path) -> list[tuple[str, Mapping[str, Any]]]:
    """(catalog key, values) of every chart release of every shipped stack."""
    out = []
    for stack in STACKS:
        for chart in rendered(stack).charts():
            out.append((catalog_key(str(chart.inputs["chart"])), chart.inputs.get("values") or {}))
    return out


@pytest.mark.parametrize("key", sorted(CHARTS))
def test_a_misspelt_key_is_caught(key: str, upstream: Path) -> None:
    """The walk can fail: one wrong key at the top of each chart's values, and one inside a map the chart has."""
    [values, *_] = [v for k, v in all_values(upstream) if k == key] or [{}]
    wrong = {**copy.deepcopy(dict(values)), "replicaCuont": 2}
    nested = next((k for k, v in values.items() if isinstance(v, Mapping) and v), None)
    if nested is not None and f"{nested}" not in FREE_FORM.get(key, {}) and nested not in KUBERNETES_TYPED.get(key, {}):
        wrong[nested] = {**wrong[nested], "enabeld": True}
    problems = chart_problems(upstream / FOLDERS[key], wrong, key)
    assert f"{key}: replicaCuont" in problems or any("replicaCuont" in p for p in problems), problems
    if nested is not None and wrong[nested].get("enabeld"):
        assert any(p.endswith(f"{nested}.enabeld") or "enabeld" in p for p in problems), problems


def test_typed_and_schema_values_are_checked(upstream: Path) -> None:
    keda = chart_problems(
        upstream / "keda", {"securityContext": {"operator": {"runAsNonRoot": True, "readOnlyRootFs": True}}}, "keda"
    )
    assert keda == [
        "keda: securityContext.operator: Additional properties are not allowed ('readOnlyRootFs' was "
        "unexpected) (Kubernetes SecurityContext)"
    ]
    cert_manager = chart_problems(upstream / "cert-manager", {"image": {"tagg": "v1"}}, "cert-manager")
    assert any("image.tagg" in p for p in cert_manager), cert_manager
    assert any("values.schema.json" in p for p in cert_manager), cert_manager
    grafana = chart_problems(
        upstream / "kube-prometheus-stack", {"grafana": {"sidecar": {"dashbaords": {}}}}, "kube-prometheus-stack"
    )
    assert grafana == ["kube-prometheus-stack/grafana: grafana.sidecar.dashbaords"]


def test_every_documented_exception_is_still_needed(upstream: Path) -> None:
    """An exception no rendered value uses, or whose key upstream now has, is stale: remove it."""
    used: set[tuple[str, str]] = set()
    for key, values in all_values(upstream):
        for table in (FREE_FORM, READ_BUT_NOT_DEFAULTED, KUBERNETES_TYPED):
            for chart, paths in table.items():
                chart_key, _, alias = chart.partition("/")
                if chart_key != key:
                    continue
                part: Any = values.get(alias) if alias else values
                used |= {(chart, path) for path in paths if lookup(part, path) is not None}
    declared = {
        (c, p) for table in (FREE_FORM, READ_BUT_NOT_DEFAULTED, KUBERNETES_TYPED) for c, ps in table.items() for p in ps
    }
    assert declared - used == set()
    for chart, paths in READ_BUT_NOT_DEFAULTED.items():
        chart_key, _, alias = chart.partition("/")
        folder = upstream / FOLDERS[chart_key] / ("charts/" + alias if alias else "")
        defaults = _yaml(folder / "values.yaml")
        for path in paths:
            assert lookup(defaults, path) is None, f"{chart}: {path} has an upstream default now"


def test_pins_are_the_upstream_versions(upstream: Path) -> None:
    """Every catalog chart has its upstream defaults at the pinned version (index.json records the tag)."""
    index = {c["key"]: c for c in json.loads((upstream / "index.json").read_text())["charts"]}
    for key, ref in CHARTS.items():
        entry = index[FOLDERS[key]]
        assert (entry["chart"], entry["version"]) == (ref.name, ref.version), key
        assert entry["tag"] and entry["commit"], key
        assert (upstream / FOLDERS[key] / "values.yaml").is_file(), key
