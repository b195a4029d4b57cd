"""scripts/gpu_check.py (make gpu-check) on a machine without a GPU: the no-GPU stop, the time limits of its
parts (real subprocesses that overrun, with a child of their own), reading the parts' output and writing
the report. What it measures needs a GPU: that runs on a lent machine."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_without_a_gpu_it_stops_at_once_with_exit_2_and_writes_nothing(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OUT="")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--work",
                           str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "no GPU here" in proc.stderr and "sees no CUDA GPU" in proc.stderr
    assert "Nothing was run or written" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()
    assert time.monotonic() - t0 < 60  # "at once": the time to import torch, nothing else


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z")  # a zombie is dead


def test_a_part_over_its_limit_is_stopped_with_its_children_and_the_next_parts_run(gc, tmp_path):
    pid_file = tmp_path / "child.pid"
    slow = gc.Part("slow", "sleeps past its limit", 1.5, py(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("started", flush=True)
        time.sleep(120)
    """))
    good = gc.Part("good", "prints its figures", 30, py("print('GPU_CHECK_JSON {\"images/s\": 123.5}')"),
                   gc.json_line)
    bad = gc.Part("bad", "exits 3", 30, py("import sys; print('it broke here'); sys.exit(3)"))
    garbled = gc.Part("garbled", "prints no result line", 30, py("print('hello')"), gc.json_line)
    logs = tmp_path / "logs"
    logs.mkdir()
    t0 = time.monotonic()
    results = gc.run_parts([slow, good, bad, garbled], 60, logs, dict(os.environ), tmp_path,
                           say=lambda *a: None)
    assert time.monotonic() - t0 < 30
    r = {x.name: x for x in results}
    assert r["slow"].status == "timeout" and "did not finish in its 2 s" in r["slow"].reason
    assert 1.5 <= r["slow"].seconds < 15 and r["slow"].returncode is not None
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the part's own child outlived the part"
    assert "started" in (logs / "slow.log").read_text()
    assert r["good"].status == "ok" and r["good"].figures == {"images/s": 123.5}
    assert r["bad"].status == "failed" and r["bad"].returncode == 3
    assert "exit code 3" in r["bad"].reason and "it broke here" in r["bad"].reason
    assert r["garbled"].status == "failed" and "could not be read" in r["garbled"].reason


def test_parts_that_the_budget_cannot_hold_are_skipped_not_started(gc, tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "MIN_PART_S", 1.0)
    marker = tmp_path / "ran"
    eat = gc.Part("eat", "uses the whole budget", 2.0, py("import time; time.sleep(30)"))
    late = gc.Part("late", "would leave a mark", 30, py(f"open({str(marker)!r}, 'w')"))
    results = gc.run_parts([eat, late], 2.5, tmp_path, dict(os.environ), tmp_path, say=lambda *a: None)
    assert [x.status for x in results] == ["timeout", "skipped"]
    assert "of the budget left" in results[1].reason and not marker.exists()


def _results(gc):
    env = {"torch": "2.11.0+cu130", "cuda": "13.0", "cudnn": 91000, "python": "3.12.3", "cpus": 16,
           "triton": "3.6.0", "nvidia_smi": "580.159.04, 1980 MHz, 700.00 W",
           "gpus": [{"name": "NVIDIA H200", "memory_gib": 139.8, "capability": "9.0", "SMs": 132}]}
    table = {"device": "cuda", "batch": [8, 1, 384, 384], "threads": 16, "rounds": 25, "clock": "wall-clock",
             "rows": [{"loss": "BCE (torch)", "variant": "F.bce", "median_ms": 0.1, "min_ms": 0.09,
                       "x_bce_median": 1.0, "x_bce_min": 1.0},
                      {"loss": "boundary-dou", "variant": "precomputed", "median_ms": 0.12, "min_ms": 0.1,
                       "x_bce_median": 1.2, "x_bce_min": 1.1}]}
    return [
        gc.Result("env", "GPU", "ok", 30, 4.0, 0, figures=env, log="env.log"),
        gc.Result("losses", "bench", "ok", 75, 40.0, 0, figures={"meta": {}, "tables": [table]},
                  log="losses.log"),
        gc.Result("train", "bench_train", "timeout", 180, 180.2, -15, "did not finish in its 180 s",
                  log="train.log"),
        gc.Result("drive", "3 epochs", "failed", 170, 12.0, 1, "exit code 1: no DRIVE found",
                  log="drive.log"),
    ]


def test_the_report_names_the_gpu_versions_figures_and_what_did_not_finish(gc, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("env", "losses", "train", "drive"):
        (logs / f"{name}.log").write_text(f"output of {name}\n")
    out = tmp_path / "out"
    report = gc.write_report(_results(gc), out, logs, time.monotonic() - 300, 470,
                             "python3 scripts/gpu_check.py", ["monai"])
    data = json.loads((out / "gpu-report.json").read_text())
    assert data == json.loads(json.dumps(report, default=str))
    assert data["env"]["gpus"][0]["name"] == "NVIDIA H200" and data["not_finished"] == ["train", "drive"]
    assert [p["status"] for p in data["parts"]] == ["ok", "ok", "timeout", "failed"]
    assert 299 <= data["total_s"] < 330
    md = (out / "gpu-report.md").read_text()
    assert "NVIDIA H200 (139.8 GiB)" in md and "torch 2.11.0+cu130, CUDA 13.0" in md
    assert "not finished: train (timeout: did not finish in its 180 s); drive (failed: exit code 1" in md
    assert "| boundary-dou | precomputed | 0.12 | 1.2 | 1.1 |" in md
    assert "| train | bench_train | timeout | 180 | 180 |" in md and "missing Python modules: monai" in md
    with tarfile.open(out / "gpu-logs.tar.gz") as tar:
        assert sorted(tar.getnames()) == [f"gpu-logs/{n}.log" for n in ("drive", "env", "losses", "train")]
        assert tar.extractfile("gpu-logs/train.log").read() == b"output of train\n"


def test_reading_the_benchmarks_output(gc):
    train = textwrap.dedent("""
        # bench_train: U-Net base 64, 288x384, batch 8, boundary-dou, 24 timed steps, 6 loader workers
        # model FLOPs per image (fwd+bwd): 655.00 GFLOP; measured peak 780.0 TFLOP/s (bfloat16 matmul 8192^3)
        | variant | images/s | x plain | waiting for data | peak GPU mem (GiB) | TFLOP/s | % of peak |
        | --- | ---: | ---: | ---: | ---: | ---: | ---: |
        | (a) plain loop (study) | 50.0 | 1.00 | 2.0% | 6.10 | 32.750 | 4.2% |
        | (c) imbaseg compiled | 210.5 | 4.21 | 1.0% | 4.00 | 137.9 | 17.7% |
    """)
    got = gc.parse_train(train)
    assert got["rows"][1] == {"variant": "(c) imbaseg compiled", "images/s": "210.5", "x plain": "4.21",
                              "waiting for data": "1.0%", "peak GPU mem (GiB)": "4.00", "TFLOP/s": "137.9",
                              "% of peak": "17.7%"}
    assert any("measured peak 780.0" in n for n in got["notes"])
    with pytest.raises(ValueError):
        gc.parse_train("Traceback ...")
    tests = ("FAILED tests/a.py::test_x - AssertionError\nSKIPPED [1] tests/b.py:3: why\n"
             "1 failed, 4 passed, 1 skipped in 9.1s")
    assert gc.parse_pytest(tests) == {"counts": {"failed": 1, "passed": 4, "skipped": 1},
                                      "failed": ["tests/a.py::test_x"], "skipped": ["tests/b.py:3: why"]}


def test_the_cuda_tests_are_found_by_their_skip_marks(gc, tmp_path):
    ids = gc.cuda_tests()
    assert "tests/losses/test_losses_distance.py::test_torch_edt_on_cuda_equals_scipy" in ids
    assert "tests/evaluation/test_inference.py::test_cuda_matches_cpu" in ids
    assert ("tests/losses/test_losses_precomputed.py::"
            "test_precomputed_on_cuda_equals_in_forward_on_cuda_and_cpu") in ids
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test_a.py").write_text(textwrap.dedent("""
        import pytest, torch
        gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="x")
        other = pytest.mark.skipif(True, reason="y")
        @gpu
        def test_named(): pass
        @pytest.mark.skipif(not torch.cuda.is_available(), reason="z")
        @pytest.mark.parametrize("a", [1])
        def test_direct(a): pass
        @other
        def test_not_cuda(): pass
        def test_plain(): pass
    """))
    (tmp_path / "test_b.py").write_text("import pytest, torch\npytestmark = pytest.mark.skipif("
                                        "not torch.cuda.is_available(), reason='w')\ndef test_all(): pass\n")
    monkey = [i.split("::")[1] for i in _relative(gc, tmp_path)]
    assert sorted(monkey) == ["test_all", "test_direct", "test_named"]


def _relative(gc, root):
    old = gc.REPO
    try:
        gc.REPO = root
        return gc.cuda_tests(root)
    finally:
        gc.REPO = old


def test_the_plan_and_the_data_it_finds(gc, tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "DRIVE").mkdir(parents=True)
    args = SimpleNamespace(data=str(data), with_figures=False, figures_epochs=5)
    parts = gc.plan(args, tmp_path / "work", "python3")
    names = ["env", "cuda-tests", "losses", "inference", "train", "drive", "losses-cpu", "export"]
    assert [p.name for p in parts] == names
    drive = next(p for p in parts if p.name == "drive")
    assert drive.argv[:2] == ["python3", str(SCRIPT)] and drive.argv[-2:] == ["--data", str(data.resolve())]
    tests = next(p for p in parts if p.name == "cuda-tests")
    assert all(i in tests.argv for i in gc.cuda_tests())
    args.with_figures = True
    assert gc.plan(args, tmp_path / "work", "python3")[-1].name == "figures"
    assert gc.find_data(str(data)) == data.resolve()
    monkeypatch.setattr(gc, "CARRY", tmp_path / "none")
    monkeypatch.setattr(gc, "REPO", tmp_path / "repo")
    assert gc.find_data(None) is None  # nothing carried, no shared/ inside or beside the checkout


def test_the_makefile_runs_the_script_without_the_venv_stamp():
    text = (REPO / "Makefile").read_text()
    assert "gpu-check:" in text and "scripts/gpu_check.py" in text
    target = text.split("\ngpu-check:", 1)[1].split("\n\n", 1)[0]
    assert "$(STAMP)" not in target.splitlines()[0]  # no pip install on a machine without a registry
