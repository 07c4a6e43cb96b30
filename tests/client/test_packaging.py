"""The client installs on its own and imports without Django, openai, anthropic or litellm."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from .conftest import CLIENT_PROJECT


def _builds_offline() -> bool:
    """setuptools, plus wheel where setuptools is older than 70.1 (which has bdist_wheel built in)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    major_minor = tuple(int(part) for part in setuptools.__version__.split(".")[:2])
    return major_minor >= (70, 1) or importlib.util.find_spec("wheel") is not None


HEAVY = "heavy = sorted({'django', 'openai', 'anthropic', 'litellm', 'httpx', 'requests'} & set(sys.modules))\nassert not heavy, heavy\n"


def test_importing_the_client_pulls_in_neither_django_nor_the_provider_sdks():
    program = f"import sys\nsys.path.insert(0, {str(CLIENT_PROJECT)!r})\nimport costcontrol_client\n{HEAVY}"

    done = subprocess.run([sys.executable, "-I", "-c", program], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not _builds_offline(), reason="needs setuptools>=70.1, or wheel, to build without an index")
def test_the_package_installs_alone_and_imports_in_an_isolated_interpreter(tmp_path):
    source = tmp_path / "src"
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    shutil.copytree(CLIENT_PROJECT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",  # offline: the venv's own setuptools
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    program = (
        "import sys\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        "import costcontrol_client as cc\n"
        "assert cc.__file__.startswith(sys.path[0]), cc.__file__\n"
        f"{HEAVY}"
        "print(cc.__version__, cc.Client.__name__)\n"
    )

    # -I: no PYTHONPATH, no user site, no current directory: only the installed copy can be found.
    done = subprocess.run([sys.executable, "-I", "-c", program], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.1.0", "Client"]
    assert (target / "costcontrol_client" / "py.typed").exists()
