"""deploy/systemd units and bin/install_systemd_units.sh (run for real, into a temporary prefix)."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

REPO = Path(settings.BASE_DIR)
SCRIPT = REPO / "bin" / "install_systemd_units.sh"
UNITS = ("costcontrol-web", "costcontrol-worker", "costcontrol-beat", "costcontrol-gpu-tracker")
ENABLED = ("costcontrol-web.service", "costcontrol-worker.service", "costcontrol-beat.service")
USER = getpass.getuser()


def install(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path} if path is not None else None
    return subprocess.run(
        ["bash", str(SCRIPT), "--user", USER, *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.fixture
def installed(tmp_path) -> dict[str, str]:
    result = install("--prefix", str(tmp_path), "--dry-run", "--env-file", "/etc/costcontrol/test.env")
    assert result.returncode == 0, result.stderr
    return {name: (tmp_path / f"{name}.service").read_text() for name in UNITS}


def directives(unit: str) -> list[tuple[str, str]]:
    pairs = []
    for line in unit.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    return pairs


def test_every_unit_restarts_on_failure_as_the_chosen_user_in_the_app_directory(installed):
    for name, unit in installed.items():
        found = directives(unit)
        assert ("Restart", "on-failure") in found, name
        assert ("User", USER) in found, name
        assert ("WorkingDirectory", str(REPO)) in found, name
        assert ("EnvironmentFile", "/etc/costcontrol/test.env") in found, name
        assert ("Environment", "DJANGO_SETTINGS_MODULE=costcontrol.settings.production") in found, name
        assert ("WantedBy", "multi-user.target") in found, name
        assert "@" not in unit.replace("${", ""), f"{name}: a placeholder was left"


def test_the_units_run_gunicorn_celery_worker_celery_beat_and_track_gpu_usage(installed):
    exec_start = {name: dict(directives(unit))["ExecStart"] for name, unit in installed.items()}

    assert exec_start["costcontrol-web"].startswith(f"{REPO}/.venv/bin/gunicorn costcontrol.wsgi:application ")
    assert "runserver" not in "".join(exec_start.values())
    assert exec_start["costcontrol-worker"] == f"{REPO}/.venv/bin/celery -A costcontrol worker --loglevel=INFO"
    assert exec_start["costcontrol-beat"].startswith(f"{REPO}/.venv/bin/celery -A costcontrol beat ")
    assert "django_celery_beat.schedulers:DatabaseScheduler" in exec_start["costcontrol-beat"]
    assert exec_start["costcontrol-gpu-tracker"] == f"{REPO}/.venv/bin/python {REPO}/manage.py track_gpu_usage"
    # NVML needs the GPU device nodes.
    assert "PrivateDevices" not in dict(directives(installed["costcontrol-gpu-tracker"]))


def test_gunicorn_is_pinned_in_the_production_requirements():
    pins = (REPO / "requirements" / "prod.txt").read_text()
    assert any(line.startswith("gunicorn==") for line in pins.splitlines())


def test_the_installed_units_pass_systemd_analyze_verify(installed, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    result = subprocess.run(
        [analyze, "verify", *(str(tmp_path / f"{name}.service") for name in UNITS)],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify reports unknown keys and bad values as messages with exit 0, missing executables with 1.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def fake_systemctl_path(tmp_path: Path, *, with_systemctl: bool) -> tuple[str, Path]:
    """A PATH of the few tools the script uses, plus a systemctl that records its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "sed", "grep", "stat", "id", "mkdir", "chmod", "mv", "head", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    calls = tmp_path / "systemctl-calls"
    if with_systemctl:
        systemctl = bin_dir / "systemctl"
        systemctl.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
        systemctl.chmod(0o755)
    return str(bin_dir), calls


def test_a_dry_run_writes_only_into_the_prefix_and_runs_no_systemctl(tmp_path):
    path, calls = fake_systemctl_path(tmp_path, with_systemctl=True)
    prefix = tmp_path / "units"

    result = install("--prefix", str(prefix), "--dry-run", path=path)

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in prefix.iterdir()) == sorted(f"{name}.service" for name in UNITS)
    assert not calls.exists()
    assert f"dry run: would run: systemctl enable {' '.join(ENABLED)}" in result.stdout


def test_a_dry_run_without_a_prefix_writes_nothing():
    result = install("--dry-run")

    assert result.returncode == 0, result.stderr
    assert "would install /etc/systemd/system/costcontrol-web.service" in result.stdout
    assert "installed" not in result.stdout


@pytest.mark.parametrize(
    ("args", "enabled"), [((), ENABLED), (("--gpu-tracker",), (*ENABLED, "costcontrol-gpu-tracker.service"))]
)
def test_without_dry_run_it_reloads_systemd_and_enables_the_units(tmp_path, args, enabled):
    path, calls = fake_systemctl_path(tmp_path, with_systemctl=True)

    result = install("--prefix", str(tmp_path / "units"), *args, path=path)

    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == ["daemon-reload", f"enable {' '.join(enabled)}"]


def test_without_systemctl_it_writes_the_units_and_enables_nothing(tmp_path):
    path, _ = fake_systemctl_path(tmp_path, with_systemctl=False)

    result = install("--prefix", str(tmp_path / "units"), path=path)

    assert result.returncode == 0, result.stderr
    assert "systemctl not found: units written, nothing enabled" in result.stdout
    assert len(list((tmp_path / "units").iterdir())) == len(UNITS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--user", "no-such-user-costcontrol"), "no such user"),
        (("--app-dir", "/nonexistent/costcontrol"), "is not a directory"),
        (("--env-file", "relative.env"), "must be an absolute path"),
        (("--bogus",), "unknown option --bogus"),
    ],
)
def test_it_refuses_bad_options_and_writes_nothing(tmp_path, args, message):
    prefix = tmp_path / "units"

    result = install("--prefix", str(prefix), "--dry-run", *args)

    assert result.returncode == 2
    assert message in result.stderr
    assert not prefix.exists()
