"""The installed package is whole: a wheel built from the checkout, installed outside it, finds the study's
presets (configs/ ships inside the package) and refuses to fall back to the defaults when one is gone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip wheel`` on a copy of the sources (the checkout gets no build/ or egg-info), then
    ``pip install --target``: the folder to put on PYTHONPATH."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "imbaseg", src / "imbaseg", symlinks=True, ignore=ignore)  # configs stays a link
    shutil.copytree(REPO / "configs", src / "configs", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"), str(src)],
                   check=True, capture_output=True, text=True, cwd=work)
    (wheel,) = (work / "dist").glob("imbaseg-*.whl")
    target = work / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, cwd=work)
    return target


def run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "IMBASEG_HOME"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def test_the_installed_package_is_imported_not_the_checkout(installed, tmp_path):
    out = run(installed, "-c", "import imbaseg; print(imbaseg.__file__)", cwd=tmp_path)
    assert Path(out.stdout.strip()).is_relative_to(installed), out.stdout + out.stderr
    assert sorted(p.name for p in (installed / "imbaseg" / "configs").glob("*.yaml")) == sorted(
        p.name for p in (REPO / "configs").glob("*.yaml")
    )


def test_train_cvc_uses_the_study_preset_from_an_empty_folder(installed, tmp_path):
    out = run(installed, "-m", "imbaseg", "train", "--dataset", "cvc", "--print-config", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first == f"# settings from the preset {installed / 'imbaseg' / 'configs' / 'cvc.yaml'}"
    cfg = yaml.safe_load(out.stdout)
    assert cfg["data"]["size"] == [288, 384] and cfg["train"]["monitor"] == "val_dice"
    assert cfg["loss"] == {"name": "boundary-gaussian", "params": {"sigma": 4}, "terms": None,
                           "sync_stats": True}
    # without --print-config it starts training and stops at once: the dataset is not prepared here
    out = run(installed, "-m", "imbaseg", "train", "--dataset", "cvc", "--device", "cpu", cwd=tmp_path)
    assert out.returncode == 2 and "settings from the preset cvc.yaml" in out.stdout
    assert "dataset 'cvc' is not prepared" in out.stderr and not (tmp_path / "runs").exists()


def test_a_preset_missing_from_the_install_is_an_error(installed, tmp_path):
    broken = tmp_path / "site"
    shutil.copytree(installed, broken)
    (broken / "imbaseg" / "configs" / "drive.yaml").unlink()
    out = run(broken, "-m", "imbaseg", "train", "--dataset", "drive", "--print-config", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "the preset drive.yaml for dataset 'drive' is missing" in " ".join(out.stderr.split())
    shutil.rmtree(broken / "imbaseg" / "configs")
    out = run(broken, "-m", "imbaseg", "train", "--dataset", "cvc", "--print-config", cwd=tmp_path)
    assert out.returncode == 2 and "missing from this installation" in " ".join(out.stderr.split())
