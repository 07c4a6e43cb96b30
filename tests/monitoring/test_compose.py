"""docker/: the compose stack, its image and its start scripts, checked as far as this machine allows.

`docker compose config` (or Debian's docker-compose 1.29) validates the file where one is installed;
without either, the structure is still checked here (services, health checks, volumes, secrets, files).
Nothing here builds the image or starts a container: that needs a Docker daemon.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
SERVICES = {"postgres", "redis", "migrate", "web", "worker", "beat", "gpu-sampler", "proxy", "prometheus",
            "alertmanager", "grafana"}  # fmt: skip
ROLES = {"migrate", "web", "worker", "beat", "gpu-sampler"}


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yml").read_text())


def test_the_stack_has_every_service_with_a_health_check_and_a_restart_policy():
    services = compose()["services"]

    assert set(services) == SERVICES
    for name, service in services.items():
        if name == "migrate":  # one-shot: the others wait for it to complete
            assert service["restart"] == "no"
            continue
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
    assert services["gpu-sampler"]["profiles"] == ["gpu"]


def test_the_app_roles_share_one_image_and_start_through_their_script():
    services = compose()["services"]

    for role in ROLES:
        service = services[role]
        assert service["image"] == "costcontrol:local", role
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, role
        assert service["command"] == [f"docker/start/{role}"], role
        assert service["env_file"] == ".env"
        assert service["environment"]["DJANGO_SETTINGS_MODULE"] == "costcontrol.settings.production"
        assert service["environment"]["METRICS_BEARER_TOKEN_FILE"] == "/run/secrets/metrics_token"
    for role in ROLES - {"migrate"}:
        assert services[role]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, role


def test_every_named_volume_is_declared_and_every_mounted_file_exists():
    stack = compose()
    declared = set(stack["volumes"])
    used = set()
    for name, service in stack["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), (name, source)
            else:
                used.add(source)
    assert used == declared
    assert {"postgres-data", "prometheus-data", "grafana-data", "alertmanager-data"} <= declared
    assert stack["secrets"]["metrics_token"]["file"] == "./secrets/metrics_token"
    assert (DOCKER / "secrets" / ".gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]


def test_every_variable_the_stack_needs_is_in_the_env_example():
    text = (DOCKER / "compose.yml").read_text()
    needed = set(re.findall(r"\$\{(\w+)(?::?[-?][^}]*)?\}", text))
    example = {
        line.split("=", 1)[0]
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }

    assert needed <= example, needed - example
    assert {"DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"} <= example
    assert "web" in next(
        line for line in (DOCKER / ".env.example").read_text().splitlines() if line.startswith("DJANGO_ALLOWED_HOSTS=")
    )


def test_the_start_scripts_are_strict_and_exec_their_process():
    scripts = {path.name: path for path in (DOCKER / "start").iterdir()}

    assert set(scripts) == ROLES
    for name, path in scripts.items():
        lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        assert path.read_text().startswith("#!/usr/bin/env bash\n"), name
        assert lines[0] == "set -o errexit -o pipefail -o nounset", name
        assert lines[-1].startswith("exec ") or lines[-2].startswith("exec "), name
        assert os.access(path, os.X_OK), name
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_the_image_installs_the_production_requirements_and_runs_as_a_user():
    dockerfile = (DOCKER / "Dockerfile").read_text()

    assert "pip install -r requirements/prod.txt" in dockerfile
    assert re.search(r"^USER app$", dockerfile, re.MULTILINE)
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "docker/secrets", ".env"} <= set(ignored)


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.skipif(_compose_command() is None, reason="neither `docker compose` nor docker-compose is installed")
def test_docker_compose_config_validates_the_file(tmp_path):
    # A copy, with its .env and secret made from the examples: the checkout's are the user's.
    repo = tmp_path / "repo"
    shutil.copytree(DOCKER, repo / "docker", ignore=shutil.ignore_patterns(".env", "metrics_token"))
    shutil.copy(repo / "docker" / ".env.example", repo / "docker" / ".env")
    (repo / "docker" / "secrets" / "metrics_token").write_text("test-token\n")
    command = _compose_command()
    assert command is not None
    text = (repo / "docker" / "compose.yml").read_text()
    if command == ["docker-compose"]:  # 1.29 (Debian) predates the top-level `name`
        text = re.sub(r"^name: .*\n", "", text, flags=re.MULTILINE)
    result = subprocess.run(
        [*command, "--project-directory", str(repo / "docker"), "-f", "-", "config"],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo / "docker",
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) >= SERVICES - {"gpu-sampler"}
    assert "costcontrol:change-me@postgres:5432" in resolved["services"]["web"]["environment"]["DATABASE_URL"]
