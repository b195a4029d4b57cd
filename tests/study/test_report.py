"""imbaseg study report against an independent recomputation from results.csv alone, written here with plain
numpy/scipy sentence by sentence from ../shared/spec/study.md (one replicate at a time, no imbaseg code);
and the report's files: reproducible, complete, and refusing or dropping cells that are not done.
"""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest
from conftest import BOOT, DATASETS, LOSSES, N_IMAGES, SEEDS
from scipy import stats as sps

from imbaseg.errors import UserError

HIGHER = {"dice": True, "iou": True, "hd95": False}

# ----------------------------------------------------------------------------- the spec, literally


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def cubes_from_results(path) -> dict[tuple[str, str], np.ndarray]:
    """(dataset, metric) -> m[L, S, n]: losses in the study's order, seeds ascending, ids sorted as text."""
    vals, ids, seeds = {}, defaultdict(set), set()
    for r in read_csv(path):
        vals[(r["dataset"], r["metric"], r["loss"], int(r["seed"]), r["id"])] = float(r["value"])
        ids[r["dataset"]].add(r["id"])
        seeds.add(int(r["seed"]))
    out = {}
    for d in DATASETS:
        for m in ("dice", "hd95"):
            out[(d, m)] = np.array(
                [
                    [[vals[(d, m, loss, s, i)] for i in sorted(ids[d])] for s in sorted(seeds)]
                    for loss in LOSSES
                ]
            )
    return out


def r12(v):
    """round(v, 12 significant digits), elementwise."""
    return np.vectorize(lambda t: float(f"{t:.12g}"))(v)


def spec_holm(p):
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for k, i in enumerate(order, start=1):
        running = max(running, min(1.0, p[i] * (len(p) - k + 1)))
        out[i] = running
    return np.array(out)


def wilcoxon(d, alternative="two-sided"):
    return 1.0 if not np.any(d) else sps.wilcoxon(d, alternative=alternative).pvalue


def effect_r(d, n, higher):
    nz = d[d != 0]
    k = nz.size
    if k == 0:
        return 0.0
    ranks = sps.rankdata(np.abs(nz))
    _, t = np.unique(np.abs(nz), return_counts=True)
    z = (ranks[nz > 0].sum() - k * (k + 1) / 4) / np.sqrt(
        k * (k + 1) * (2 * k + 1) / 24 - (t**3 - t).sum() / 48
    )
    return (z if higher else -z) / np.sqrt(n)


def min_rank(scores, better):
    """1 + the number of others strictly better (ties share the minimum rank)."""
    return np.array([1 + sum(better(o, s) for o in scores) for s in scores])


def spec_dataset(m, ref, higher, boot, seed):
    """Every number of one dataset and metric, as the spec words it."""
    n_l, n_s, n = m.shape
    rng = np.random.default_rng(seed)
    reps, meds = np.empty((n_l, boot)), np.empty((n_l, boot))
    for b in range(boot):
        s_idx = rng.integers(0, n_s, n_s)
        i_idx = rng.integers(0, n, n)
        for k in range(n_l):
            reps[k, b] = m[k][np.ix_(s_idx, i_idx)].mean()
            meds[k, b] = np.median((m[k][s_idx] - m[ref][s_idx]).mean(axis=0)[i_idx])
    better = (lambda a, b: a > b) if higher else (lambda a, b: a < b)
    mean = m.mean(axis=2).mean(axis=1)
    x = r12(m.mean(axis=1))
    out = {
        "mean": mean,
        "ci": np.percentile(reps, [2.5, 97.5], axis=1),
        "seed_sd": m.mean(axis=2).std(axis=1, ddof=1),
        "rank": min_rank(mean, better),
    }
    others = [k for k in range(n_l) if k != ref]
    out["p"] = {k: wilcoxon(x[k] - x[ref]) for k in others}
    out["p_holm"] = dict(zip(others, spec_holm([out["p"][k] for k in others]), strict=True))
    out["median_diff"] = {k: np.median(x[k] - x[ref]) for k in others}
    out["diff_ci"] = {k: np.percentile(meds[k], [2.5, 97.5]) for k in others}
    out["r"] = {k: effect_r(x[k] - x[ref], n, higher) for k in others}
    # rank-then-aggregate: per image average ranks
    per_image = np.array(
        [
            [
                1
                + sum(better(x[o, i], x[k, i]) for o in range(n_l))
                + 0.5 * (sum(x[o, i] == x[k, i] for o in range(n_l)) - 1)
                for i in range(n)
            ]
            for k in range(n_l)
        ]
    )
    out["rta_score"] = per_image.mean(axis=1)
    out["rta_rank"] = min_rank(out["rta_score"], lambda a, b: a < b)
    # significance: one-sided tests of every ordered pair, Holm over all of them
    pairs = [(a, b) for a in range(n_l) for b in range(n_l) if a != b]
    alt = "greater" if higher else "less"
    adj = spec_holm([wilcoxon(x[a] - x[b], alt) for a, b in pairs])
    out["wins"] = np.array(
        [sum(adj[j] < 0.05 for j, (a, _) in enumerate(pairs) if a == k) for k in range(n_l)]
    )
    out["sig_rank"] = min_rank(out["wins"], lambda a, b: a > b)
    # rank stability: 1,000 image bootstraps from a fresh generator, seeds kept
    rng = np.random.default_rng(seed)
    counts, taus = np.zeros((n_l, n_l)), []
    for _ in range(1000):
        idx = rng.integers(0, n, n)
        rk = min_rank(m[:, :, idx].mean(axis=2).mean(axis=1), better)
        counts[np.arange(n_l), rk - 1] += 1
        taus.append(sps.kendalltau(rk, out["rank"]).statistic)
    taus = np.array(taus)
    out["freq"], out["tau"] = counts / 1000, np.median(taus[~np.isnan(taus)])
    return out


def num(v: str) -> float:
    return float(v) if v != "" else np.nan


# ----------------------------------------------------------------------------- the comparison


@pytest.fixture(scope="module")
def recomputed(fake_report):
    cubes = cubes_from_results(fake_report.out_dir / "results.csv")
    ref = LOSSES.index("dice")
    return {key: spec_dataset(m, ref, HIGHER[key[1]], BOOT, 3) for key, m in cubes.items()}


def test_results_csv_holds_every_value_in_the_spec_order(fake_report):
    rows = read_csv(fake_report.out_dir / "results.csv")
    assert len(rows) == len(DATASETS) * len(LOSSES) * len(SEEDS) * N_IMAGES * 2
    first = [(r["dataset"], r["loss"], r["seed"], r["id"]) for r in rows[:: 2 * N_IMAGES]][:4]
    assert [f[2] for f in first[:3]] == ["7", "12", "43"]  # seeds ascending
    ids = [r["id"] for r in rows if r["metric"] == "dice"][:N_IMAGES]
    assert ids == sorted(ids) and ids[:3] == ["0", "1", "10"]  # ids sorted as text


def test_table_csv_equals_the_recomputation(fake_report, recomputed):
    rows = read_csv(fake_report.out_dir / "table.csv")
    assert [(r["dataset"], r["loss"]) for r in rows] == [(d, loss) for d in DATASETS for loss in LOSSES]
    for r in rows:
        k = LOSSES.index(r["loss"])
        assert r["reference"] == ("1" if r["loss"] == "dice" else "0")
        assert (r["n_seeds"], r["n_images"]) == (str(len(SEEDS)), str(N_IMAGES))
        for metric in ("dice", "hd95"):
            exp = recomputed[(r["dataset"], metric)]
            np.testing.assert_allclose(num(r[f"{metric}_mean"]), exp["mean"][k], rtol=1e-12)
            np.testing.assert_allclose(
                [num(r[f"{metric}_ci_low"]), num(r[f"{metric}_ci_high"])], exp["ci"][:, k], rtol=1e-12
            )
            np.testing.assert_allclose(num(r[f"{metric}_seed_sd"]), exp["seed_sd"][k], rtol=1e-9, atol=1e-15)
            assert int(r[f"{metric}_rank"]) == exp["rank"][k]
            assert r[f"{metric}_best"] == ("1" if exp["rank"][k] == 1 else "0")
            if r["loss"] == "dice":
                assert r[f"{metric}_p_holm"] == "" and r[f"{metric}_dagger"] == "0"
            else:
                np.testing.assert_allclose(num(r[f"{metric}_p_holm"]), exp["p_holm"][k], rtol=1e-12)
                assert r[f"{metric}_dagger"] == ("1" if exp["p_holm"][k] < 0.05 else "0")


def test_tests_csv_equals_the_recomputation(fake_report, recomputed):
    rows = read_csv(fake_report.out_dir / "tests.csv")
    assert len(rows) == len(DATASETS) * 2 * (len(LOSSES) - 1)
    for r in rows:
        exp, k = recomputed[(r["dataset"], r["metric"])], LOSSES.index(r["loss"])
        assert r["reference"] == "dice" and r["direction"] == ("higher" if HIGHER[r["metric"]] else "lower")
        assert int(r["n_images"]) == N_IMAGES and int(r["n_seeds"]) == len(SEEDS)
        np.testing.assert_allclose(num(r["median_diff"]), exp["median_diff"][k], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(
            [num(r["diff_ci_low"]), num(r["diff_ci_high"])], exp["diff_ci"][k], rtol=1e-12, atol=1e-15
        )
        np.testing.assert_allclose(num(r["p_value"]), exp["p"][k], rtol=1e-12)
        np.testing.assert_allclose(num(r["p_holm"]), exp["p_holm"][k], rtol=1e-12)
        np.testing.assert_allclose(num(r["effect_r"]), exp["r"][k], rtol=1e-12)


def test_ranking_csv_equals_the_recomputation(fake_report, recomputed):
    rows = read_csv(fake_report.out_dir / "ranking.csv")
    by = {(r["dataset"], r["metric"], r["method"], r["loss"]): r for r in rows}
    for (d, metric), exp in recomputed.items():
        for k, loss in enumerate(LOSSES):
            agg = by[(d, metric, "aggregate-then-rank", loss)]
            assert int(agg["rank"]) == exp["rank"][k]
            rta = by[(d, metric, "rank-then-aggregate", loss)]
            np.testing.assert_allclose(num(rta["score"]), exp["rta_score"][k], rtol=1e-12)
            assert int(rta["rank"]) == exp["rta_rank"][k]
            sig = by[(d, metric, "significance", loss)]
            assert (int(sig["score"]), int(sig["rank"])) == (exp["wins"][k], exp["sig_rank"][k])
            boot = by[(d, metric, "bootstrap", loss)]
            freq = [num(boot[f"freq_rank_{j}"]) for j in range(1, len(LOSSES) + 1)]
            np.testing.assert_array_equal(freq, exp["freq"][k])
            np.testing.assert_allclose(num(boot["kendall_tau"]), exp["tau"], rtol=1e-12)
            assert int(boot["rank"]) == exp["rank"][k]
    for metric in ("dice", "hd95"):
        mean_rank = np.mean([recomputed[(d, metric)]["rank"] for d in DATASETS], axis=0)
        want = min_rank(mean_rank, lambda a, b: a < b)
        for k, loss in enumerate(LOSSES):
            c = by[("all", metric, "consensus", loss)]
            assert num(c["score"]) == pytest.approx(mean_rank[k]) and int(c["rank"]) == want[k]
            assert c["note"] == ""


def test_the_data_exercise_ties_and_both_directions(recomputed):
    """The fake values are meant to test ties: some zero differences, and significant wins."""
    assert any(exp["wins"].max() > 0 for exp in recomputed.values())
    assert recomputed[("synthetic-polyp", "dice")]["rank"][LOSSES.index("dice")] == 1
    assert recomputed[("synthetic-polyp", "hd95")]["rank"][LOSSES.index("dice")] == 1  # lower is better


def test_cells_csv_lists_every_cell(fake_report, fake_project):
    rows = read_csv(fake_report.out_dir / "cells.csv")
    assert len(rows) == len(DATASETS) * len(LOSSES) * len(SEEDS)
    assert {r["state"] for r in rows} == {"done"}
    assert {r["n_images"] for r in rows} == {str(N_IMAGES)} and {r["seconds"] for r in rows} == {"12.5"}
    assert all(r["run_dir"].startswith("runs/") for r in rows)  # relative to the project root
    assert list(rows[0]) == ["dataset", "loss", "seed", "run_dir", "state", "seconds", "n_images"]


def test_table_md_marks_best_and_dagger(fake_report, recomputed):
    md = (fake_report.out_dir / "table.md").read_text()
    assert md == fake_report.table_md
    assert "Boundary Gaussian (σ=4)" in md and "Dice (ref.)" in md
    polyp = md.split("## Synthetic polyps")[1].split("##")[0]
    dice_row = next(line for line in polyp.splitlines() if line.startswith("| Dice (ref.)"))
    exp = recomputed[("synthetic-polyp", "dice")]
    assert f"**{exp['mean'][1]:.3f}**" in dice_row  # the best of the column in bold
    bce_row = next(line for line in polyp.splitlines() if line.startswith("| BCE"))
    assert ("†" in bce_row.split("|")[2]) == (exp["p_holm"][0] < 0.05)


# ----------------------------------------------------------------------------- reproducible


def test_same_study_gives_byte_identical_files(fake_project, fake_report, tmp_path):
    from imbaseg.study.report import write_report

    first = {
        n: (fake_report.out_dir / n).read_bytes()
        for n in ("table.csv", "tests.csv", "ranking.csv", "results.csv", "table.md", "table.tex")
    }
    again = write_report(
        fake_project["study"],
        metrics=["dice", "hd95"],
        boot=BOOT,
        seed=3,
        root=fake_project["root"],
        figures=False,
    )
    for name, data in first.items():
        assert (again.out_dir / name).read_bytes() == data, name
    other = write_report(
        fake_project["study"],
        metrics=["dice", "hd95"],
        boot=BOOT,
        seed=4,
        root=fake_project["root"],
        figures=False,
    )
    assert (other.out_dir / "table.csv").read_bytes() != first["table.csv"]  # the seed matters
    write_report(
        fake_project["study"],
        metrics=["dice", "hd95"],
        boot=BOOT,
        seed=3,
        root=fake_project["root"],
        figures=False,
    )  # leave the shared report as the fixture made it


# ----------------------------------------------------------------------------- cells that are not done


@pytest.fixture
def partial_project(tmp_path):
    """A 2 x 3 x 2 study: synthetic-vessel/bce seed 2 never ran, synthetic-vessel/boundary-gaussian seed 1
    failed, every synthetic-lesion/dice cell missing."""
    from report_helpers import fake_cell, fake_study, image_ids, synthetic_values, write_study

    from imbaseg.study.spec import cells, load_study

    path = write_study(
        tmp_path / "s.yaml",
        ("synthetic-vessel", "synthetic-lesion"),
        ("bce", "dice", "boundary-gaussian"),
        (1, 2),
        name="part",
        metrics=["dice"],
    )
    study = load_study(path)
    skip = {("synthetic-vessel", "bce", 2), ("synthetic-lesion", "dice", 1), ("synthetic-lesion", "dice", 2)}
    fake_study(study, tmp_path, n=14, skip=skip)
    failed = next(
        c
        for c in cells(study, tmp_path)
        if (c.dataset, c.loss, c.seed) == ("synthetic-vessel", "boundary-gaussian", 1)
    )
    fake_cell(failed, study, synthetic_values(0, 2, 1, 14), image_ids(14), state="failed")
    return {"root": tmp_path, "study": study, "path": path}


def test_cells_not_done_refuse_with_the_list(partial_project):
    from imbaseg.study.report import write_report

    with pytest.raises(UserError) as e:
        write_report(partial_project["study"], root=partial_project["root"], boot=50, figures=False)
    msg = str(e.value)
    assert "4 cell(s)" in msg and "--allow-missing" in msg and "imbaseg study run" in msg
    assert "synthetic-vessel / bce / seed 2: todo" in msg
    assert "synthetic-vessel / boundary-gaussian / seed 1: failed" in msg
    assert not (partial_project["root"] / "studies").exists()  # nothing written


def test_allow_missing_drops_the_loss_from_that_dataset_and_says_so(partial_project):
    from imbaseg.study.report import write_report

    res = write_report(
        partial_project["study"], root=partial_project["root"], boot=50, allow_missing=True, figures=False
    )
    table = read_csv(res.out_dir / "table.csv")
    notes = {(r["dataset"], r["loss"]): r["note"] for r in table}
    assert notes[("synthetic-vessel", "bce")] == "dropped: seed 2 todo"
    assert notes[("synthetic-vessel", "boundary-gaussian")] == "dropped: seed 1 failed"
    assert notes[("synthetic-vessel", "dice")] == "no tests: the reference was dropped"
    assert notes[("synthetic-lesion", "dice")] == "dropped: seed 1 todo; seed 2 todo"
    assert notes[("synthetic-lesion", "bce")] == ""
    kept = {(r["dataset"], r["loss"]) for r in table if r["dice_mean"]}
    assert kept == {
        ("synthetic-vessel", "dice"),
        ("synthetic-lesion", "bce"),
        ("synthetic-lesion", "boundary-gaussian"),
    }
    assert (
        "BCE dropped: seed 2 todo" in res.table_md
        and "no tests: the reference BCE was dropped" in res.table_md
    )
    assert any("Boundary Gaussian dropped (seed 1 failed)" in line for line in res.dropped)
    tests = read_csv(res.out_dir / "tests.csv")
    assert [(r["dataset"], r["loss"]) for r in tests] == [("synthetic-lesion", "boundary-gaussian")]
    results = read_csv(res.out_dir / "results.csv")
    assert {(r["dataset"], r["loss"]) for r in results} == kept  # the values the table was computed from
    cells = {(r["dataset"], r["loss"], r["seed"]): r for r in read_csv(res.out_dir / "cells.csv")}
    assert cells[("synthetic-vessel", "bce", "2")]["state"] == "todo"
    assert cells[("synthetic-vessel", "bce", "2")]["n_images"] == ""
    assert cells[("synthetic-vessel", "boundary-gaussian", "1")]["state"] == "failed"
    consensus = {r["loss"]: r for r in read_csv(res.out_dir / "ranking.csv") if r["method"] == "consensus"}
    assert consensus["dice"]["note"] == "absent from synthetic-lesion"
    assert consensus["bce"]["note"] == "absent from synthetic-vessel"


def test_a_running_cell_is_not_done(partial_project):
    """A cell whose run folder a live process holds is running: left out like any cell not done."""
    import json
    import os
    import socket

    from imbaseg.study.report import write_report
    from imbaseg.study.spec import cells
    from imbaseg.training.run_dir import RunDir

    c = next(
        c
        for c in cells(partial_project["study"], partial_project["root"])
        if (c.dataset, c.loss, c.seed) == ("synthetic-lesion", "bce", 1)
    )
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "token": "t", "what": "test"}
    RunDir(c.run_dir).lock_file.write_text(json.dumps(holder))
    with pytest.raises(UserError, match="synthetic-lesion / bce / seed 1: running"):
        write_report(partial_project["study"], root=partial_project["root"], boot=50, figures=False)
    res = write_report(
        partial_project["study"], root=partial_project["root"], boot=50, allow_missing=True, figures=False
    )
    assert "BCE dropped: seed 1 running" in res.table_md


def test_nothing_done_refuses(tmp_path):
    from report_helpers import write_study

    from imbaseg.study.report import write_report
    from imbaseg.study.spec import load_study

    study = load_study(write_study(tmp_path / "s.yaml"))
    with pytest.raises(UserError, match="nothing to report yet"):
        write_report(study, root=tmp_path, allow_missing=True, figures=False)


# ----------------------------------------------------------------------------- bad input


def test_bad_metric_and_boot(fake_project):
    from imbaseg.study.report import write_report

    with pytest.raises(UserError, match="Did you mean 'hd95'"):
        write_report(fake_project["study"], metrics=["hd59"], root=fake_project["root"], figures=False)
    for boot in (0, -5, 2.5):
        with pytest.raises(UserError, match="--boot"):
            write_report(fake_project["study"], boot=boot, root=fake_project["root"], figures=False)


def test_corrupt_per_image_names_the_file(tmp_path):
    from report_helpers import fake_study, write_study

    from imbaseg.study.report import write_report
    from imbaseg.study.spec import cells, load_study
    from imbaseg.training.run_dir import RunDir

    study = load_study(write_study(tmp_path / "s.yaml", seeds=(1,)))
    fake_study(study, tmp_path, n=5)
    csv_path = RunDir(cells(study, tmp_path)[1].run_dir).per_image_csv("test")
    text = csv_path.read_text().splitlines()
    head = text[0].split(",")
    row = text[1].split(",")
    row[head.index("dice")] = "oops"
    csv_path.write_text("\n".join([text[0], ",".join(row), *text[2:]]) + "\n")
    with pytest.raises(UserError) as e:
        write_report(study, root=tmp_path, boot=20, figures=False)
    assert str(csv_path) in str(e.value) and "dice" in str(e.value)


def test_cells_evaluated_on_different_images_refuse(tmp_path):
    from report_helpers import fake_cell, fake_study, synthetic_values, write_study

    from imbaseg.study.report import write_report
    from imbaseg.study.spec import cells, load_study

    study = load_study(write_study(tmp_path / "s.yaml", seeds=(1,)))
    fake_study(study, tmp_path, n=5)
    fake_cell(cells(study, tmp_path)[1], study, synthetic_values(0, 1, 1, 5), ["a", "b", "c", "d", "e"])
    with pytest.raises(UserError, match="different images"):
        write_report(study, root=tmp_path, boot=20, figures=False)
