"""A non-editable install works from anywhere: ``pip install .`` (here ``--target`` a temporary
folder, without dependencies: the test's own interpreter has them) carries the configs and the
kernel sources, and ``neural3d train ssdnerf --config ssdnerf_toycars train.steps=2`` runs from
another directory, writing its data and run under that directory."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: what building the package reads (the links neural3d/_configs and neural3d/render/_csrc point
#: into configs/ and cuda/)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "neural3d", "configs", "cuda")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package installed (not editable) into a fresh folder, built from a copy of the
    sources so that the checkout gets no build/ or egg-info."""
    pytest.importorskip("setuptools", minversion="77",
                        reason="building without isolation needs setuptools>=77 installed")
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-cache-dir", "--target", str(target), str(src)],
                   check=True, cwd=tmp, capture_output=True)
    return target


def _env(target: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEURAL3D_")}
    # the installed copy first on the path: an editable install of the checkout (or of another
    # one) must not shadow it
    env.update(PYTHONPATH=str(target), NEURAL3D_BACKEND="torch", OMP_NUM_THREADS="1")
    return env


def test_installed_copy_carries_configs_and_kernel_sources(installed):
    pkg = installed / "neural3d"
    configs = sorted(p.relative_to(REPO / "configs") for p in (REPO / "configs").rglob("*.yaml"))
    assert configs and all((pkg / "_configs" / c).is_file() for c in configs)
    for f in (REPO / "cuda").iterdir():
        if f.suffix in (".cpp", ".cu", ".h"):
            assert (pkg / "render" / "_csrc" / f.name).read_bytes() == f.read_bytes()
    assert not (pkg / "_configs").is_symlink() and not (pkg / "render" / "_csrc").is_symlink()


@pytest.mark.slow
def test_train_from_another_directory_with_a_packaged_config(installed, tmp_path):
    env, cwd = _env(installed), tmp_path / "elsewhere"
    cwd.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "import neural3d, neural3d.config as c, neural3d.render.build "
         "as b; print(neural3d.__file__); print(c.find_config('ssdnerf_toycars')); "
         "print(b.source_dir())"], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    pkg = installed / "neural3d"
    assert where.stdout.split() == [str(pkg / "__init__.py"),
                                    str(pkg / "_configs" / "ssdnerf_toycars.yaml"),
                                    str(pkg / "render" / "_csrc")]
    run = subprocess.run([sys.executable, "-m", "neural3d.cli", "train", "ssdnerf", "--config",
                          "ssdnerf_toycars", "train.steps=2", "--threads", "1"],
                         cwd=cwd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    ckpt = cwd / "outputs" / "runs" / "ssdnerf_toycars" / "checkpoints" / "last.pt"
    assert ckpt.is_file() and (cwd / "outputs" / "data" / "toy_ssdnerf" / "cars_train").is_dir()
    assert "checkpoint: outputs/runs/ssdnerf_toycars/checkpoints/last.pt" in run.stdout
