"""make gpu-check: everything the GPU still owes imbaseg, in one prepared call of at most 8 minutes.

On a lent GPU machine (the `device` tool's `run`), from the repository root, ONE call gives every number:

    make gpu-carry          # here, first: ../shared/data's DRIVE and CVC/ISIC samples -> .gpu-carry/
    run(command="python3 scripts/gpu_check.py --with-figures", carry=[".gpu-carry"], timeout_s=600)

- `python3` there is the machine image's Python: it holds torch (CUDA build) and every package imbaseg
  needs, and the machine reaches no package registry, so there is no venv to build. `.venv/` here is
  ignored by git and does not travel (nor would it run there: another Python). imbaseg runs from the
  checkout (PYTHONPATH), not installed. `make gpu-check` is the same command with `.venv/bin/python`
  when it exists, else `python3`; the call above names `python3` so that it needs no `make` there.
- `.gpu-carry/data/` mirrors ../shared/data (DRIVE, samples/CVC-ClinicDB, samples/ISIC2018), which does
  not travel by itself: only a `shared/` inside the checkout does. 39 MB; with the tracked tree (~9 MB)
  well under the 64 MiB that a call may carry.
- The report lands in $OUT (else .gpu-work/): gpu-report.json, gpu-report.md, gpu-logs.tar.gz (each
  part's full output) and, with --with-figures, gpu-figures.tar.gz: four files, within the 8 that come back.

Parts, in this order, each a subprocess with its own time limit inside one overall budget (--budget,
470 s: 8 minutes less start-up and report); a part that fails or runs out of time is killed (its
whole process group) and reported, and the next part starts:
  env         GPU name, memory, driver, torch / CUDA / cuDNN versions
  cuda-tests  pytest on every test that skips without CUDA (found by reading the tests' skip marks)
  losses      bench_losses.py on CUDA: every loss's ratio to BCE, the boundary losses with the on-device
              EDT (in forward), with the loader's precomputed inputs, and torch.compile'd
  inference   whole-image and sliding-window images/s at DRIVE size (584x565), fp32 and AMP
  train       bench_train.py: the study's plain loop vs imbaseg eager vs compiled, U-Net base 64 at
              288x384: images/s, data-wait share, peak memory, achieved TFLOP/s and MFU
  drive       DRIVE prepared into .gpu-work/, then `imbaseg train` for 3 epochs at full resolution with
              --compile: seconds per epoch, images/s, losses, validation Dice, peak memory
  losses-cpu  bench_losses.py on ONE CPU thread (process CPU time) for the study's losses: the CPU
              ratios measured on a quiet machine
  export      bench_export.py on CUDA: `imbaseg export`'s graphs (U-Net base 64, resized and native) against
              predict on the run folder: agreement and s/image (onnxruntime on the CPU without its CUDA
              provider)
  figures     (--with-figures) make_figures --profile study with the time left (--figures-epochs caps)
Without a GPU it stops at once: a message, exit code 2, nothing written. Exit 0 once the report is
written (a failed part is in the report, not in the exit code); 1 if the check itself breaks.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 470.0  # the whole check: the 8 minutes less interpreter start-up and the report
MIN_PART_S = 15.0  # a part with less time than this left is skipped, not started
JSON_TAG = "GPU_CHECK_JSON "  # the line an internal part prints its figures on
CARRY = REPO / ".gpu-carry" / "data"
WORK = REPO / ".gpu-work"
NEEDED_MODULES = ("torch", "numpy", "scipy", "yaml", "typer", "rich", "pandas", "matplotlib", "PIL",
                  "tifffile", "timm", "skimage", "pytest")


@dataclass
class Part:
    """One step: ``argv`` run from the repository root; ``parse(output, work)`` -> its figures."""

    name: str
    what: str
    limit_s: float
    argv: list[str]
    parse: object = None  # callable(text, work) -> dict, or None (no figures)


@dataclass
class Result:
    name: str
    what: str
    status: str  # ok | failed | timeout | skipped
    limit_s: float
    seconds: float = 0.0
    returncode: int | None = None
    reason: str = ""
    figures: dict = field(default_factory=dict)
    log: str = ""


# ------------------------------------------------------------------ running parts


def _stop_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, to the part's own process group (its loader workers and compilers too)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_part(part: Part, deadline: float, logs: Path, env: dict, work: Path) -> Result:
    """Run ``part`` with ``min(limit, time left)``; never raises for what the part does."""
    left = deadline - time.monotonic()
    res = Result(part.name, part.what, "skipped", round(part.limit_s, 1))
    if left < MIN_PART_S:
        res.reason = f"not started: {max(left, 0):.0f} s of the budget left (under {MIN_PART_S:.0f} s)"
        return res
    limit = min(part.limit_s, left)
    res.limit_s = round(limit, 1)
    log = logs / f"{part.name}.log"
    res.log = log.name
    t0 = time.monotonic()
    with open(log, "w") as out:
        out.write(f"$ {' '.join(part.argv)}\n")
        out.flush()
        proc = subprocess.Popen(part.argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            res.status = "timeout"
            res.reason = f"did not finish in its {limit:.0f} s and was stopped"
    res.seconds = round(time.monotonic() - t0, 1)
    res.returncode = proc.returncode
    text = log.read_text(errors="replace")
    if res.status != "timeout":
        res.status = "ok" if proc.returncode == 0 else "failed"
        if proc.returncode:
            res.reason = f"exit code {proc.returncode}: {_tail(text, 6)}"
    if part.parse is not None:
        try:
            res.figures = part.parse(text, work) or {}
        except Exception as exc:  # a part's output we cannot read is reported, never fatal
            if res.status == "ok":
                res.status, res.reason = "failed", f"its output could not be read: {exc!r}"
    return res


def run_parts(parts: list[Part], budget_s: float, logs: Path, env: dict, work: Path,
              say=print) -> list[Result]:
    """Each part in turn, all inside ``budget_s`` seconds."""
    deadline = time.monotonic() + budget_s
    results = []
    for part in parts:
        say(f"[gpu-check] {part.name}: {part.what} (limit {part.limit_s:.0f} s)")
        res = run_part(part, deadline, logs, env, work)
        say(f"[gpu-check] {part.name}: {res.status} in {res.seconds:.0f} s {res.reason[:200]}")
        results.append(res)
    return results


# ------------------------------------------------------------------ reading the parts' output


def json_line(text: str, work: Path | None = None) -> dict:
    """The figures an internal part printed on its last ``GPU_CHECK_JSON`` line."""
    lines = [ln for ln in text.splitlines() if ln.startswith(JSON_TAG)]
    if not lines:
        raise ValueError("no result line")
    return json.loads(lines[-1][len(JSON_TAG):])


def markdown_tables(text: str) -> list[list[dict]]:
    """Every Markdown table in ``text`` as a list of {header: cell} rows."""
    tables, rows, header = [], [], None
    for line in text.splitlines() + [""]:
        row = line.strip()
        cells = [c.strip() for c in row.strip("|").split("|")] if row.startswith("|") else None
        if cells is None:
            if header and rows:
                tables.append(rows)
            rows, header = [], None
        elif header is None:
            header = cells
        elif not all(re.fullmatch(r":?-+:?", c) for c in cells):
            rows.append(dict(zip(header, cells, strict=False)))
    return tables


def parse_pytest(text: str, work: Path | None = None) -> dict:
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", text)
    counts = {k: int(n) for n, k in found}
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
    skipped = re.findall(r"^SKIPPED \[\d+\] (.+)$", text, re.M)
    return {"counts": counts, "failed": failed, "skipped": skipped[:20]}


def parse_train(text: str, work: Path | None = None) -> dict:
    tables = markdown_tables(text)
    if not tables:
        raise ValueError("no results table")
    notes = [ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("# ")]
    return {"rows": tables[-1], "notes": notes}


def parse_losses_json(name: str):
    def parse(text: str, work: Path) -> dict:
        data = json.loads((work / name).read_text())
        return {"meta": data["meta"], "tables": data["tables"]}

    return parse


# ------------------------------------------------------------------ which tests need CUDA


def _is_cuda_skip(node: ast.AST) -> bool:
    """``pytest.mark.skipif(not torch.cuda.is_available(), ...)`` (any spelling of that condition)."""
    if not (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("mark.skipif") and node.args):
        return False
    return "cuda.is_available" in ast.unparse(node.args[0])


def cuda_tests(tests: Path = REPO / "tests") -> list[str]:
    """Node ids of the tests that skip without CUDA: decorated with such a skipif, directly or through a
    module-level name bound to one (``cuda = pytest.mark.skipif(...)`` then ``@cuda``)."""
    ids = []
    for path in sorted(tests.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        marks = {t.id for n in tree.body if isinstance(n, ast.Assign) and _is_cuda_skip(n.value)
                 for t in n.targets if isinstance(t, ast.Name)}
        module_skip = any(isinstance(n, ast.Assign) and _is_cuda_skip(n.value)
                          and any(getattr(t, "id", "") == "pytestmark" for t in n.targets) for n in tree.body)
        for node in tree.body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test")):
                continue
            decorated = any(_is_cuda_skip(d) or (isinstance(d, ast.Name) and d.id in marks)
                            for d in node.decorator_list)
            if decorated or module_skip:
                ids.append(f"{path.relative_to(REPO)}::{node.name}")
    return ids


# ------------------------------------------------------------------ data the machine gets carried


def find_data(explicit: str | None = None) -> Path | None:
    """A folder laid out like ../shared/data (DRIVE/, samples/): --data, .gpu-carry/data, shared/data
    inside the checkout, ../shared/data; None when none holds DRIVE."""
    candidates = [Path(explicit)] if explicit else []
    candidates += [CARRY, REPO / "shared" / "data", REPO.parent / "shared" / "data"]
    for c in candidates:
        if (c / "DRIVE").is_dir():
            return c.resolve()
    return None


# ------------------------------------------------------------------ the plan


def plan(args, work: Path, py: str) -> list[Part]:
    me = [py, str(Path(__file__).resolve())]
    data = find_data(args.data)
    with_data = ["--data", str(data)] if data else []
    tests = cuda_tests()
    parts = [
        Part("env", "GPU, driver, torch/CUDA/cuDNN versions", 30, me + ["--part", "env"], json_line),
        Part("cuda-tests", f"pytest on the {len(tests)} tests that skip without CUDA", 90,
             [py, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", *tests], parse_pytest),
        Part("losses", "bench_losses.py on CUDA (ratio to BCE: in forward, precomputed, compiled)", 150,
             [py, "tests/benchmarks/bench_losses.py", "--device", "cuda", "--repeats", "25", "--compile",
              "--json", str(work / "losses-cuda.json")], parse_losses_json("losses-cuda.json")),
        Part("inference", "Predictor images/s at DRIVE size (584x565), fp32 and AMP", 60,
             me + ["--part", "inference"] + with_data, json_line),
        Part("train", "bench_train.py: plain loop vs eager vs compiled, U-Net base 64, 288x384", 180,
             [py, "tests/benchmarks/bench_train.py", "--device", "cuda", "--steps", "24", "--warmup", "4"],
             parse_train),
        Part("drive", "DRIVE, 3 epochs at full resolution with --compile", 170,
             me + ["--part", "drive", "--work", str(work)] + with_data, json_line),
        Part("losses-cpu", "bench_losses.py on one CPU thread, process CPU time (the study's losses)", 60,
             [py, "tests/benchmarks/bench_losses.py", "--device", "cpu", "--threads", "1", "--cpu-clock",
              "--losses", "bce,dynamit-batch,boundary-gaussian,dou,boundary-dou",
              "--json", str(work / "losses-cpu.json")], parse_losses_json("losses-cpu.json")),
        Part("export", "bench_export.py on CUDA: exported U-Net base 64 (TorchScript, onnxruntime)",
             90, [py, "tests/benchmarks/bench_export.py", "--device", "cuda", "--rounds", "3"], parse_train),
    ]
    if args.with_figures:
        parts.append(Part("figures", "make_figures --profile study, with the time left", 600,
                          me + ["--part", "figures", "--work", str(work), "--figures-epochs",
                                str(args.figures_epochs)] + with_data,
                          json_line))
    return parts


# ------------------------------------------------------------------ internal parts (run as subprocesses)


def part_env(args) -> dict:
    import platform

    import torch

    info = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "cpus": os.cpu_count(),
            "gpus": []}
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        info["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                             "capability": f"{p.major}.{p.minor}", "SMs": p.multi_processor_count})
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"not available: {exc}"
    return info


def _drive_image(data: Path | None):
    """A real DRIVE test fundus when carried, else bench_inference's own choice (noise if absent)."""
    import bench_inference as bi

    path = data / "DRIVE" / "test" / "images" / "01_test.tif" if data else None
    if path is not None and path.is_file():
        from imbaseg.data.io import read_image

        return read_image(path), str(path.relative_to(data))
    image = bi.drive_image()
    return image, "bench_inference.drive_image()"


def part_inference(args) -> dict:
    import torch

    sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
    import bench_inference as bi

    from imbaseg.models import create_model

    torch.manual_seed(0)
    model = create_model("unet", in_channels=3, base_channels=8 if args.smoke else 64).eval()
    image, source = _drive_image(find_data(args.data))
    rows = []
    for amp in (False, True):
        rounds = 1 if args.smoke else 10
        for label, name, t, ratio in bi.bench_device(model, image, torch.device(args.device), amp, args.smoke,
                                                     rounds):
            rows.append({"device": label, "path": name, "s/image": round(t, 5), "images/s": round(1 / t, 2),
                         "x time of whole": round(ratio, 2)})
    return {"image": f"{image.shape[0]}x{image.shape[1]} ({source})", "rows": rows}


def part_drive(args) -> dict:
    """DRIVE prepared into the work folder, then `imbaseg train` (the CLI, in this process) for 3 epochs at
    full resolution with --compile; the run's history and the peak GPU memory."""
    import csv

    import torch

    from imbaseg.data.prepare import prepare_dataset

    data = find_data(args.data)
    if data is None:
        raise SystemExit("no DRIVE found: run `make gpu-carry` here and name .gpu-carry in the call's carry")
    root = Path(args.work) / "drive"
    t0 = time.perf_counter()
    prepare_dataset("drive", root=root, source=data / "DRIVE")
    prepare_s = time.perf_counter() - t0
    sys.argv = ["imbaseg", "train", "--config", str(REPO / "configs" / "drive.yaml"), "--root", str(root),
                "--epochs", "3", "--compile", "--device", args.device, "--name", "gpu-check",
                "--set", "data.size=null", "--set", f"data.num_workers={min(8, os.cpu_count() or 1)}"]
    if args.smoke:  # a CPU-sized run of the same path, to test this script where there is no GPU
        sys.argv += ["--epochs", "1", "--no-compile", "--set", "model.base_channels=4",
                     "--set", "train.max_train_batches=2", "--set", "data.num_workers=0"]
    from imbaseg.cli.main import run as cli

    t0 = time.perf_counter()
    try:
        cli()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    train_s = time.perf_counter() - t0
    histories = sorted((root / "runs").glob("drive/*/gpu-check/history.csv"))
    epochs = list(csv.DictReader(open(histories[-1]))) if histories else []
    n_train = sum(1 for ln in open(root / "data" / "prepared" / "drive" / "manifest.csv") if ",train," in ln)
    if args.smoke:
        n_train = min(n_train, 2 * 2)  # max_train_batches x batch size
    for row in epochs:
        seconds = float(row["seconds"])
        row["images/s (epoch incl. validation)"] = round(n_train / seconds, 2) if seconds else None
    return {"exit_code": code, "prepare_s": round(prepare_s, 1), "train_s": round(train_s, 1),
            "command": "imbaseg " + " ".join(sys.argv[1:]), "train_images": n_train,
            "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "rows": epochs}


def part_figures(args) -> dict:
    from imbaseg.viz import make_figures as mf

    data = find_data(args.data)
    work = Path(args.work)
    b = mf.make_figures(work / "figures-work", work / "figures-study", args.figures_epochs,
                        shared=data or mf.SHARED_DATA, profile="study", device="cuda", prepared_root=REPO)
    return {"budget": mf.budget_markdown(b), "figures": [str(p) for p in b.figures]}


INTERNAL = {"env": part_env, "inference": part_inference, "drive": part_drive, "figures": part_figures}


# ------------------------------------------------------------------ the report


def md_table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(no rows)"]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |")
    return out


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.3f}".rstrip("0").rstrip(".")
    return str(v).replace("|", "/")


def render_figures(res: Result) -> list[str]:
    f = res.figures
    if not f:
        return []
    out = []
    for table in f.get("tables", []):
        out += [f"{table['device'].upper()}, batch {'x'.join(map(str, table['batch']))}, {table['threads']} "
                f"thread(s), {table['rounds']} interleaved rounds, {table['clock']}:", ""]
        out += md_table([{k: r[k] for k in ("loss", "variant", "median_ms", "x_bce_median", "x_bce_min")}
                         for r in table["rows"]]) + [""]
    if "counts" in f:
        out.append("Counts: " + ", ".join(f"{n} {k}" for k, n in f["counts"].items()))
        out += [f"- FAILED {t}" for t in f.get("failed", [])] + [""]
    if "budget" in f:
        out += [f["budget"], ""]
    if "rows" in f:
        out += md_table(f["rows"]) + [""]
    shown = ("tables", "counts", "failed", "skipped", "budget", "rows")
    rest = {k: v for k, v in f.items() if k not in shown}
    if rest:
        out += ["```", json.dumps(rest, indent=1, default=str), "```", ""]
    return out


def report_markdown(report: dict) -> str:
    gpu = report.get("env") or {}
    names = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in gpu.get("gpus", [])) or "unknown"
    lines = [
        "# imbaseg GPU check", "",
        f"- GPU: {names}; driver/nvidia-smi: {gpu.get('nvidia_smi', '?')}",
        f"- torch {gpu.get('torch', '?')}, CUDA {gpu.get('cuda', '?')}, cuDNN {gpu.get('cudnn', '?')}, "
        f"triton {gpu.get('triton', '?')}, Python {gpu.get('python', '?')}, {gpu.get('cpus', '?')} CPUs",
        f"- {report['created']}; {report['total_s']:.0f} s of a {report['budget_s']:.0f} s budget; "
        f"command: `{report['command']}`",
    ]
    if report["missing_modules"]:
        lines.append(f"- missing Python modules: {', '.join(report['missing_modules'])}")
    unfinished = [p for p in report["parts"] if p["status"] != "ok"]
    lines.append("- not finished: " + ("; ".join(f"{p['name']} ({p['status']}: {p['reason'][:160]})"
                                               for p in unfinished) or "none"))
    lines += ["", "| part | what | status | seconds | limit (s) |", "| --- | --- | --- | ---: | ---: |"]
    lines += [f"| {p['name']} | {p['what']} | {p['status']} | {p['seconds']:.0f} | {p['limit_s']:.0f} |"
              for p in report["parts"]]
    for p in report["parts"]:
        lines += ["", f"## {p['name']}: {p['status']}", "", p["what"] + ".", ""]
        if p["reason"]:
            lines += ["```", p["reason"], "```", ""]
        lines += render_figures(Result(**p))
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: list[Result], out: Path, logs: Path, started: float, budget_s: float,
                 command: str, missing: list[str]) -> dict:
    env = next((r.figures for r in results if r.name == "env" and r.status == "ok"), {})
    report = {"created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command, "budget_s": budget_s,
              "total_s": round(time.monotonic() - started, 1), "env": env, "missing_modules": missing,
              "not_finished": [r.name for r in results if r.status != "ok"],
              "parts": [asdict(r) for r in results]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu-report.md").write_text(report_markdown(report))
    with tarfile.open(out / "gpu-logs.tar.gz", "w:gz") as tar:
        for log in sorted(logs.glob("*.log")):
            tar.add(log, arcname=f"gpu-logs/{log.name}")
    return report


# ------------------------------------------------------------------ main


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the check (None when it can)."""
    try:
        import torch
    except ImportError as exc:
        return f"torch is not importable with {sys.executable} ({exc})"
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return f"torch {torch.__version__} ({build}) sees no CUDA GPU"
    return None


def missing_modules() -> list[str]:
    import importlib.util

    return [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]


def child_env(work: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", TORCHINDUCTOR_CACHE_DIR=str(work / "inductor-cache"))
    return env


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT") or str(WORK), help="report folder (default $OUT)")
    p.add_argument("--work", default=str(WORK), help="scratch folder for data, runs and benchmark output")
    p.add_argument("--data", default=None, help="a folder laid out like ../shared/data (default: looked up)")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all parts together")
    p.add_argument("--parts", default=None, help="comma-separated parts to run (default: all)")
    p.add_argument("--with-figures", action="store_true", help="end with make_figures --profile study")
    p.add_argument("--figures-epochs", type=int, default=5, help="epochs per run of the study figures")
    p.add_argument("--part", choices=sorted(INTERNAL), help=argparse.SUPPRESS)  # internal: run one part
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # internal parts: cpu to test here
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # internal parts: CPU-sized
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.part:  # a subprocess of the check: print the figures on one tagged line
        print(JSON_TAG + json.dumps(INTERNAL[args.part](args), default=str), flush=True)
        return 0
    reason = no_gpu_reason()
    if reason:
        print(f"gpu-check: no GPU here: {reason}. Nothing was run or written. Run it on a machine with a "
              "CUDA GPU (see scripts/gpu_check.py's docstring for the one call).", file=sys.stderr)
        return 2
    started = time.monotonic()
    out, work = Path(args.out), Path(args.work)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    missing = missing_modules()
    if missing:
        print(f"[gpu-check] warning: missing Python modules {missing}; the parts that need them will fail")
    parts = plan(args, work, sys.executable)
    if args.parts:
        wanted = {s.strip() for s in args.parts.split(",")}
        parts = [p for p in parts if p.name in wanted]
    results = run_parts(parts, args.budget, logs, child_env(work), work)
    out.mkdir(parents=True, exist_ok=True)
    figures = work / "figures-study"
    if figures.is_dir():
        with tarfile.open(out / "gpu-figures.tar.gz", "w:gz") as tar:
            tar.add(figures, arcname="figures-study")
    command = " ".join([sys.executable, str(Path(__file__).relative_to(REPO)), *(argv or sys.argv[1:])])
    report = write_report(results, out, logs, started, args.budget, command, missing)
    print(report_markdown(report))
    print(f"[gpu-check] wrote {out / 'gpu-report.json'}, {out / 'gpu-report.md'}, {out / 'gpu-logs.tar.gz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
