"""Links in notifications point where the server really is: `make run`'s PORT, or SITE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


def site_url(settings_module: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SITE_URL", "PORT", "COSTCONTROL_RUN_URL") and not k.startswith("DJANGO_")
    }
    clean.update({"DJANGO_SETTINGS_MODULE": settings_module, **env})
    code = "import django; django.setup(); from django.conf import settings; print(settings.SITE_URL)"
    return subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=clean, capture_output=True, text=True)


def test_make_run_links_to_the_port_it_serves():
    dry_run = subprocess.run(["make", "-pn", "run", "PORT=8123"], cwd=BASE_DIR, capture_output=True, text=True)
    [exported] = [line for line in dry_run.stdout.splitlines() if line.startswith("COSTCONTROL_RUN_URL")]
    assert exported.endswith("= http://127.0.0.1:8123")
    # honcho gives the worker PORT=8223: its links still name the web's port.
    worker = site_url("costcontrol.settings.local", PORT="8223", COSTCONTROL_RUN_URL="http://127.0.0.1:8123")
    assert worker.stdout.strip() == "http://127.0.0.1:8123"
    assert site_url("costcontrol.settings.local").stdout.strip() == "http://127.0.0.1:8000"
    given = site_url(
        "costcontrol.settings.local", COSTCONTROL_RUN_URL="http://127.0.0.1:8123", SITE_URL="https://cc.example.com"
    )
    assert given.stdout.strip() == "https://cc.example.com"


def test_production_requires_the_site_url():
    production = {"DJANGO_SECRET_KEY": "x" * 50, "DJANGO_ALLOWED_HOSTS": "cc.example.com"}
    missing = site_url("costcontrol.settings.production", **production)
    assert missing.returncode != 0 and "SITE_URL" in missing.stderr
    given = site_url("costcontrol.settings.production", **production, SITE_URL="https://cc.example.com")
    assert given.stdout.strip() == "https://cc.example.com", given.stderr
