"""Harbor as code, pull secrets, air-gapped charts, digest locks and the supply-chain CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from infra.catalog import write_lock
from infra.cli import app
from infra.config import StackConfigError, parse_platform
from infra.offline import OfflineError, Recording, load_stack_config, run_program
from infra.pack_config import stack_policy_config
from tests.conftest import ROOT, masked_keys
from tests.platforms import HARBOR, bank, model, render

runner = CliRunner()


def platform(profile: str = "finance", **registry: Any) -> dict[str, Any]:
    reg: dict[str, Any] = {"host": HARBOR, "harbor": {"bootstrap_registry": "bootstrap.bank.internal"}}
    reg.update(registry)
    scaled = model(
        integrity={"configmap": "llama-8b-approved"},
        autoscaling={"enabled": True, "min_replicas": 1, "max_replicas": 2},
    )
    return bank(profile, registry=reg, models=[scaled])


def of_type(rec: Recording, token: str) -> list[Any]:
    return [r for r in rec.resources if r.type == token]


def test_harbor_chart_reads_credentials_only_from_existing_secrets() -> None:
    rec = render(platform())
    [chart] = [c for c in rec.charts() if c.name == "harbor-chart"]
    values = chart.inputs["values"]
    assert values["existingSecretAdminPassword"] == "harbor-admin"
    assert values["existingSecretSecretKey"] == "harbor-secret-key"
    assert "harborAdminPassword" not in values and "secretKey" not in values
    assert values["externalURL"] == "https://harbor.bank.internal"
    assert values["trivy"]["enabled"] is True
    assert values["core"]["image"]["repository"] == "bootstrap.bank.internal/platform/goharbor/harbor-core"
    assert chart.inputs["version"] == "1.19.1"
    # The chart's inputs hold no secret at all (nothing was masked).
    assert "[secret]" not in json.dumps(chart.masked)
    secrets = {s.object_name: s for s in rec.kubernetes_objects() if s.kind == "Secret"}
    assert masked_keys(secrets["harbor-admin"]) == {"HARBOR_ADMIN_PASSWORD"}
    assert secrets["harbor-admin"].inputs["stringData"]["HARBOR_ADMIN_PASSWORD"].startswith("[generated:RandomPassword")


def test_harbor_data_volumes_are_retained_and_handed_to_the_chart() -> None:
    rec = render(platform())
    claims = {c.object_name: c for c in rec.kubernetes_objects() if c.kind == "PersistentVolumeClaim"}
    assert {"harbor-registry", "harbor-jobservice", "harbor-database", "harbor-redis", "harbor-trivy"} <= set(claims)
    assert all(claims[n].options["retainOnDelete"] for n in claims if n.startswith("harbor-"))
    [chart] = [c for c in rec.charts() if c.name == "harbor-chart"]
    pvcs = chart.inputs["values"]["persistence"]["persistentVolumeClaim"]
    assert pvcs["registry"] == {"existingClaim": "harbor-registry"}
    assert pvcs["jobservice"]["jobLog"] == {"existingClaim": "harbor-jobservice"}


def test_projects_follow_the_profile() -> None:
    rec = render(platform(profile="finance"))
    projects = {p.inputs["name"]: p.inputs for p in of_type(rec, "harbor:index/project:Project")}
    assert set(projects) == {"platform", "models", "charts"}
    for project in projects.values():
        assert project["deploymentSecurity"] == "high"
        assert project["vulnerabilityScanning"] is True
        assert project["enableContentTrustCosign"] is True
        assert project["public"] is False
    assert len(of_type(rec, "harbor:index/immutableTagRule:ImmutableTagRule")) == 3
    retention = of_type(rec, "harbor:index/retentionPolicy:RetentionPolicy")
    assert len(retention) == 3 and retention[0].inputs["rules"][0]["mostRecentlyPushed"] == 10
    baseline = render(platform(profile="baseline"))
    assert {p.inputs["deploymentSecurity"] for p in of_type(baseline, "harbor:index/project:Project")} == {"critical"}


def test_pull_only_robot_per_consumer_namespace() -> None:
    rec = render(platform())
    robots = {r.inputs["name"]: r for r in of_type(rec, "harbor:index/robotAccount:RobotAccount")}
    # Monitoring, logging and the log shipper pull from the private projects too (kube-prometheus-stack, ECK's
    # Elasticsearch and Kibana, Fluent Bit).
    consumers = {"llm-inference", "llm-operators", "gpu-operator", "llm-monitoring", "llm-logging", "llm-log-shipper"}
    assert set(robots) == {f"pull-{ns}" for ns in consumers}
    for robot in robots.values():
        accesses = [a for p in robot.inputs["permissions"] for a in p["accesses"]]
        assert {a["action"] for a in accesses} == {"pull"}
        assert {p["namespace"] for p in robot.inputs["permissions"]} == {"platform", "models"}
    pulls = [s for s in rec.kubernetes_objects() if s.kind == "Secret" and s.object_name == "registry-pull"]
    assert {s.namespace for s in pulls} == consumers
    for secret in pulls:
        assert secret.inputs["type"] == "kubernetes.io/dockerconfigjson"
        assert masked_keys(secret) == {".dockerconfigjson"}
        config = json.loads(secret.inputs["stringData"][".dockerconfigjson"])
        assert set(config["auths"]) == {"harbor.bank.internal"}
    # Every consumer uses it.
    [deployment] = [d for d in rec.kubernetes_objects() if d.kind == "Deployment" and d.namespace == "llm-inference"]
    assert deployment.inputs["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry-pull"}]
    charts = {c.name: c.inputs["values"] for c in rec.charts()}
    assert charts["keda"]["imagePullSecrets"] == [{"name": "registry-pull"}]
    assert charts["gpu-operator"]["operator"]["imagePullSecrets"] == ["registry-pull"]


def test_air_gapped_charts_come_from_the_registry_and_no_proxy_cache() -> None:
    rec = render(platform(air_gapped=True))
    charts = {c.name: c.inputs for c in rec.charts()}
    assert charts["keda"]["chart"] == "oci://harbor.bank.internal/charts/keda"
    assert "repositoryOpts" not in charts["keda"]
    assert charts["gpu-operator"]["chart"] == "oci://harbor.bank.internal/charts/gpu-operator"
    values = charts["harbor-chart"]["values"]
    assert values["trivy"]["offlineScan"] is True and values["trivy"]["skipUpdate"] is True
    with pytest.raises(StackConfigError, match=r"air_gapped: true forbids harbor\.proxy_caches"):
        parse_platform(
            platform(
                air_gapped=True,
                harbor={
                    "bootstrap_registry": "b.bank.internal",
                    "proxy_caches": [{"name": "dockerhub", "endpoint": "https://registry-1.docker.io"}],
                },
            )
        )


def test_connected_site_takes_charts_from_its_registry_when_told() -> None:
    """charts_from_registry: every chart from the site's registry, the pre-Harbor ones from the bootstrap registry
    (or the declared bootstrap charts location, whose host the pack then accepts for charts only)."""
    rec = render(platform(charts_from_registry=True))
    charts = {c.name: c.inputs for c in rec.charts()}
    assert charts["keda"]["chart"] == "oci://harbor.bank.internal/charts/keda"
    assert charts["harbor-chart"]["chart"] == "oci://bootstrap.bank.internal/charts/harbor"
    assert charts["harbor-chart"]["values"]["trivy"]["offlineScan"] is False  # still a connected site
    assert all(c.get("repositoryOpts") is None for c in charts.values())
    declared = platform(
        charts_from_registry=True,
        harbor={"bootstrap_registry": "bootstrap.bank.internal", "bootstrap_charts": "oci://charts.bank.internal/pre"},
    )
    spec = parse_platform(declared)
    config = stack_policy_config(spec)
    assert config["allowedRegistries"] == ["harbor.bank.internal", "bootstrap.bank.internal"]
    assert config["chartRegistries"] == ["harbor.bank.internal", "bootstrap.bank.internal", "charts.bank.internal"]
    assert "chartRegistries" not in stack_policy_config(parse_platform(platform(charts_from_registry=True)))
    rec = render(declared)
    assert {c.name: c.inputs["chart"] for c in rec.charts()}["harbor-chart"] == "oci://charts.bank.internal/pre/harbor"


def test_connected_site_gets_proxy_cache_projects() -> None:
    harbor = {
        "bootstrap_registry": "b.bank.internal",
        "proxy_caches": [{"name": "dockerhub", "endpoint": "https://registry-1.docker.io", "provider": "docker-hub"}],
    }
    rec = render(platform(harbor=harbor))
    [upstream] = of_type(rec, "harbor:index/registry:Registry")
    assert upstream.inputs["endpointUrl"] == "https://registry-1.docker.io"
    projects = {p.inputs["name"]: p.inputs for p in of_type(rec, "harbor:index/project:Project")}
    assert projects["proxy-dockerhub"]["registryId"] == 1


def test_replication_and_ldap_from_secure_config() -> None:
    harbor = {
        "bootstrap_registry": "b.bank.internal",
        "replication": {
            "endpoint": "https://harbor-dr.bank.internal",
            "username": "replicator",
            "password_secret": "drPassword",
        },
        "auth": {
            "mode": "ldap",
            "ldap_url": "ldaps://ldap.bank.internal",
            "ldap_base_dn": "ou=people,dc=bank,dc=internal",
            "ldap_search_dn": "cn=harbor,ou=services,dc=bank,dc=internal",
            "ldap_search_password_secret": "ldapPassword",
        },
    }
    rec = render(
        platform(harbor=harbor),
        **{"privatellm:drPassword": {"secure": "v1:x"}, "privatellm:ldapPassword": {"secure": "v1:y"}},
    )
    [dr] = of_type(rec, "harbor:index/registry:Registry")
    assert dr.masked["accessSecret"] == "[secret]"
    replications = of_type(rec, "harbor:index/replication:Replication")
    assert {r.inputs["name"] for r in replications} == {"dr-platform", "dr-models", "dr-charts"}
    assert all(r.inputs["action"] == "push" for r in replications)
    [auth] = of_type(rec, "harbor:index/configAuth:ConfigAuth")
    assert auth.inputs["authMode"] == "ldap_auth" and auth.masked["ldapSearchPassword"] == "[secret]"


def test_government_profile_requires_an_air_gapped_registry() -> None:
    with pytest.raises(StackConfigError, match=r"registry\.air_gapped must be true in the government profile"):
        parse_platform(platform(profile="government"))


def test_lock_pins_every_rendered_image(tmp_path: Path) -> None:
    project = tmp_path
    (project / "stacks").mkdir()
    (project / "Pulumi.yaml").write_text("name: private-llm\nstackConfigDir: stacks\n")
    digest = "sha256:" + hashlib.sha256(b"vllm").hexdigest()
    keda = "sha256:" + hashlib.sha256(b"keda").hexdigest()
    write_lock(project / "stacks" / "Pulumi.locked.lock.yaml", {"vllm": digest, "keda": keda})
    rec = render(platform(), project=project, stack="locked")
    [deployment] = [d for d in rec.kubernetes_objects() if d.kind == "Deployment" and d.namespace == "llm-inference"]
    image = deployment.inputs["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"harbor.bank.internal/platform/vllm/vllm-openai:v0.33.0@{digest}"
    [chart] = [c for c in rec.charts() if c.name == "keda"]
    assert chart.inputs["values"]["image"]["keda"]["tag"] == f"2.20.2@{keda}"


def test_stale_lock_fails_the_stack(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text("name: private-llm\nstackConfigDir: stacks\n")
    (tmp_path / "stacks" / "Pulumi.locked.lock.yaml").write_text(
        "images:\n  vllm:\n    reference: docker.io/vllm/vllm-openai:v0.10.0\n    digest: sha256:" + "a" * 64 + "\n"
    )
    with pytest.raises(OfflineError, match=r"Pulumi\.locked\.lock\.yaml"):
        render(platform(), project=tmp_path, stack="locked")


def test_images_list_json() -> None:
    result = runner.invoke(
        app, ["images", "list", "--stack", "finance-prod", "--format", "json", "--project-dir", str(ROOT)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    keys = {i["key"] for i in data["images"]}
    assert {"vllm", "gpu-operator", "keda", "harbor-core"} <= keys
    assert all(
        i["rendered"].startswith(("harbor.bank.internal/", "bootstrap-registry.dc1.bank.internal/"))
        for i in data["images"]
    )
    assert {c["key"] for c in data["charts"]} >= {"gpu-operator", "keda", "harbor"}


def test_models_manifest_and_verify(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    made = runner.invoke(app, ["models", "manifest", str(model)])
    assert made.exit_code == 0
    assert made.stdout == f"{hashlib.sha256(b'weights').hexdigest()}  model.safetensors\n"
    manifest = tmp_path / "approved.sha256"
    manifest.write_text(made.stdout)
    assert runner.invoke(app, ["models", "verify", str(model), "--manifest", str(manifest)]).exit_code == 0
    (model / "model.safetensors").write_bytes(b"tampered")
    bad = runner.invoke(app, ["models", "verify", str(model), "--manifest", str(manifest)])
    assert bad.exit_code == 1 and "INTEGRITY FAILURE: model.safetensors" in bad.output


def test_mirror_mode_of_the_program() -> None:
    config = load_stack_config(ROOT, "gov-airgap")
    values = dict(config.values)
    values["privatellm:mode"] = "mirror"
    values["privatellm:registryUsername"] = "robot$mirror"
    values["privatellm:registryPassword"] = "[secure:privatellm:registryPassword]"
    mirror_config = type(config)(
        stack=config.stack,
        values=values,
        secret_keys=[*config.secret_keys, "privatellm:registryPassword"],
        source=config.source,
        project_dir=config.project_dir,
    )
    rec = run_program(mirror_config)
    pushed = {r.inputs["name"] for r in rec.resources if r.type == "docker:index/registryImage:RegistryImage"}
    assert "harbor.agency.gov.internal/platform/vllm/vllm-openai:v0.33.0" in pushed
    assert not [r for r in rec.resources if r.type.startswith("kubernetes:")]
    [provider] = [r for r in rec.resources if r.type == "pulumi:providers:docker"]
    assert "[secret]" in json.dumps(provider.masked)


def test_harbor_serves_a_pki_certificate_and_the_pki_comes_from_the_bootstrap_registry() -> None:
    rec = render(platform())
    [chart] = [c for c in rec.charts() if c.name == "harbor-chart"]
    tls = chart.inputs["values"]["expose"]["tls"]
    assert tls == {"enabled": True, "certSource": "secret", "secret": {"secretName": "harbor-tls"}}
    [cert] = [r for r in rec.kubernetes_objects() if r.kind == "Certificate" and r.object_name == "harbor-tls"]
    assert cert.namespace == "llm-registry" and "harbor.bank.internal" in cert.inputs["spec"]["dnsNames"]
    [cm] = [c for c in rec.charts() if c.name == "pki-cert-manager"]
    assert cm.inputs["values"]["image"]["repository"].startswith("bootstrap.bank.internal/")
    assert "global" not in cm.inputs["values"]  # no Harbor pull secret before Harbor exists
