"""Stack files built in tests: one bank with an H100 pool and an 8B model, the parts each test varies given as
keyword arguments, and the offline render of such a platform."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from components.gateway import GatewayModel, GatewayTenant, LlmGatewayArgs
from infra.offline import Recording, config_from_mapping, run_program
from tests.conftest import ROOT

HARBOR = "harbor.bank.internal"
H100_POOL: dict[str, Any] = {
    "name": "h100",
    "gpu": "H100-80GB-SXM",
    "gpus_per_node": 8,
    "nodes": 2,
    "onprem": {"node_names": ["a", "b"]},
}
PREINSTALLED_DRIVER: dict[str, Any] = {"driver": "preinstalled", "driver_version": "580.95.05"}
LLAMA_8B: dict[str, Any] = {"name": "llama-8b", "model": "Llama-3.1-8B", "pool": "h100", "max_model_len": 8192}


def bank(profile: str = "finance", **kw: Any) -> dict[str, Any]:
    """`privatellm:platform` of the bank: registry harbor.bank.internal, the H100 pool with a preinstalled driver, one
    Llama-3.1-8B; every top-level key in `kw` replaces the default."""
    doc: dict[str, Any] = {
        "name": "bank",
        "profile": profile,
        "registry": {"host": HARBOR},
        "node_pools": [copy.deepcopy(H100_POOL)],
        "gpu_operator": dict(PREINSTALLED_DRIVER),
        "models": [dict(LLAMA_8B)],
    }
    doc.update(kw)
    return doc


def model(**kw: Any) -> dict[str, Any]:
    """The 8B model with the given keys added or replaced."""
    return {**LLAMA_8B, **kw}


def render(doc: dict[str, Any], project: Path = ROOT, stack: str = "test", **config: Any) -> Recording:
    """The offline render of `doc` as stack `stack` of `project`, with extra config keys (`privatellm:…`)."""
    return run_program(config_from_mapping(stack, {"privatellm:platform": doc, **config}, project_dir=project))


def gateway_args(models: list[GatewayModel], tenants: list[GatewayTenant] | None = None, **kw: Any) -> LlmGatewayArgs:
    """The bank's gateway component arguments for `models` (tenant `qa` unless given)."""
    return LlmGatewayArgs(
        namespace="llm-gateway",
        instance="bank",
        hostname="llm.bank.internal",
        tls_secret="gateway-tls",
        client_certificate_secret="gateway-client-tls",
        ca_configmap="bank-platform-ca",
        models=models,
        tenants=tenants or [GatewayTenant(name="qa", requests_per_minute=60, tokens_per_minute=1000)],
        rotation_days=30,
        **kw,
    )
