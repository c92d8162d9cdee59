"""The package as users install it: a wheel and an sdist built from this tree, the wheel installed into a
fresh virtual environment, and the demo run from there (issue 17). Slow-ish (a venv and its dependencies),
so it runs once, against the whole test bed's machine, with pip's cache."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str | Path, cwd: Path | None = None, timeout: float = 900) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")})
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", out, REPO)
    return out


def test_wheel_and_sdist_carry_what_runs_and_render(dist: Path) -> None:
    import zipfile

    wheel = next(dist.glob("wgmagic-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "wgmagic/demo/quickstart.ipynb" in names and "wgmagic/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)
    _run(sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir())


def test_the_wheel_in_a_fresh_venv_runs_the_demo(dist: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0 and not Path("/usr/lib/postgresql").exists():
        pytest.skip("the demo needs Debian's postgresql")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    wheel = next(dist.glob("wgmagic-*.whl"))
    _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    from wgmagic import __version__

    assert _run(env_dir / "bin" / "wgmagic", "--version").split() == ["wgmagic", __version__]
    assert "usage: wgmagic" in _run(python, "-m", "wgmagic", "--help")
    work = tmp_path / "elsewhere"  # not the checkout: nothing may come from the source tree
    work.mkdir()
    out = _run(env_dir / "bin" / "wgmagic", "demo", "--headless", "--output-dir", work / "demo", cwd=work)
    assert "demo: executed quickstart.ipynb" in out
    assert (work / "demo" / "quickstart.html").stat().st_size > 10_000


def test_the_sdist_installs(dist: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=True).create(env_dir)
    sdist = next(dist.glob("wgmagic-*.tar.gz"))
    _run(env_dir / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
         sdist)
    out = _run(env_dir / "bin" / "python", "-c", "import importlib.resources as r, wgmagic; "
               "print(wgmagic.__version__, (r.files('wgmagic.demo') / 'quickstart.ipynb').is_file())", cwd=tmp_path)
    assert out.split()[1] == "True"
