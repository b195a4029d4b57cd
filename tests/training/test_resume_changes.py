"""What ``--resume`` does with changed keys (imbaseg/training/resume.py): the table of cases, then end to end.

Each row trains a schedule for 2 epochs under the old config, saves the optimizer and scheduler, restores
them under the new config at epoch 2 (as the trainer does) and records the lr of the epochs after. The
expected values are the schedules' formulas written out by hand: c(e, n) = (1 + cos(pi e / n)) / 2,
p(e, n) = (1 - e / n) ** 0.9.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from test_trainer import read_history, tiny_cfg

from imbaseg.config import from_dict, load_config
from imbaseg.errors import UserError
from imbaseg.optim import build_optimizer, build_scheduler
from imbaseg.training import resume as R
from imbaseg.training.trainer import TrainerCallbacks, train


def c(e, n):
    return (1 + math.cos(math.pi * e / n)) / 2


def p(e, n):
    return (1 - e / n) ** 0.9


BASE = {"optim": {"name": "adamw", "lr": 0.1, "weight_decay": 1e-4}, "sched": {"name": "cosine"},
        "train": {"epochs": 4}}
PLATEAU = {"sched": {"name": "plateau", "patience": 1, "factor": 0.1}}


def cfg_of(*updates):
    d = {k: dict(v) for k, v in BASE.items()}
    for u in updates:
        for k, v in u.items():
            d.setdefault(k, {}).update(v)
    return from_dict(d)


def step(sched, cfg, value):
    if sched is not None:
        sched.step(value) if cfg.sched.name == "plateau" else sched.step()


def run_schedule(old, new, done=2, values=(1.0,) * 8):
    """lrs of the epochs after ``done``: trained under ``old``, restored under ``new``. ``values``: the
    monitored value per epoch (plateau)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = build_optimizer(old, model.parameters())
    sched = build_scheduler(old, opt)
    for e in range(done):
        model(torch.randn(4, 3)).pow(2).mean().backward()
        opt.step()
        step(sched, old, values[e])
    saved_opt = copy.deepcopy(opt.state_dict())  # as read back from last.pt: no tensor shared with ``opt``
    saved_sched = sched.state_dict() if sched is not None else None

    before = copy.deepcopy(saved_opt)  # loading aliases the saved tensors, which the steps below then change
    fresh = build_optimizer(new, model.parameters())
    note = R.restore_optimizer(fresh, saved_opt, old.optim.name, new.optim.name)
    sched = R.restore_schedule(fresh, new, old.to_dict(), saved_sched, R.saved_lrs(saved_opt), done)
    restored = copy.deepcopy(fresh.state_dict())
    lrs = []
    for e in range(done, new.train.epochs):
        lrs.append(fresh.param_groups[0]["lr"])
        fresh.step()
        step(sched, new, values[e])
    return lrs, restored, before, note


CASES = [  # (id, old config, new config, lrs of epochs 3 and 4)
    ("unchanged cosine continues", cfg_of(), cfg_of(), [0.1 * c(2, 4), 0.1 * c(3, 4)]),
    ("cosine 2 -> 4 epochs: a 4-epoch cosine from epoch 3", cfg_of({"train": {"epochs": 2}}), cfg_of(),
     [0.1 * c(2, 4), 0.1 * c(3, 4)]),
    ("poly 2 -> 4 epochs", cfg_of({"sched": {"name": "poly"}, "train": {"epochs": 2}}),
     cfg_of({"sched": {"name": "poly"}}), [0.1 * p(2, 4), 0.1 * p(3, 4)]),
    ("new lr: cosine continues at new lr x factor", cfg_of(), cfg_of({"optim": {"lr": 0.01}}),
     [0.01 * c(2, 4), 0.01 * c(3, 4)]),
    ("new lr without a schedule", cfg_of({"sched": {"name": "none"}}),
     cfg_of({"sched": {"name": "none"}, "optim": {"lr": 0.01}}), [0.01, 0.01]),
    ("cosine -> poly from the current epoch", cfg_of(), cfg_of({"sched": {"name": "poly"}}),
     [0.1 * p(2, 4), 0.1 * p(3, 4)]),
    ("cosine -> plateau starts at optim.lr", cfg_of(), cfg_of(PLATEAU), [0.1, 0.1]),
    ("min_lr change re-floors the cosine", cfg_of(), cfg_of({"sched": {"min_lr": 0.05}}),
     [0.05 + 0.05 * c(2, 4), 0.05 + 0.05 * c(3, 4)]),
]


@pytest.mark.parametrize("old,new,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_schedule_after_a_changed_resume(old, new, expected):
    lrs, *_ = run_schedule(old, new)
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_unchanged_plateau_keeps_its_reduced_lr_and_counters():
    # patience 1, factor 0.1, value never improving: reduced after epochs 3 and 5 (bad epochs 2 > 1)
    cfg = cfg_of(PLATEAU, {"train": {"epochs": 6}})
    straight, *_ = run_schedule(cfg, cfg, done=0)
    resumed, *_ = run_schedule(cfg, cfg, done=3)
    assert straight == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.001])
    assert resumed == pytest.approx(straight[3:])


def test_plateau_with_a_new_lr_restarts_from_it_with_its_counters():
    old = cfg_of(PLATEAU, {"train": {"epochs": 6}})
    lrs, *_ = run_schedule(old, cfg_of(PLATEAU, {"train": {"epochs": 6}, "optim": {"lr": 0.5}}), done=3)
    assert lrs == pytest.approx([0.5, 0.5, 0.05])  # the bad-epoch counter carried on: reduced after epoch 5


def test_a_new_optimizer_type_starts_fresh_and_says_so():
    lrs, restored, saved, note = run_schedule(cfg_of(), cfg_of({"optim": {"name": "sgd", "momentum": 0.9}}))
    assert restored["state"] == {} and "nesterov" in restored["param_groups"][0]  # an SGD, no AdamW moments
    assert "optim.name changed (adamw -> sgd)" in note and "fresh" in note
    assert lrs == pytest.approx([0.1 * c(2, 4), 0.1 * c(3, 4)])


def test_other_optimizer_keys_apply_and_the_state_is_kept():
    _, restored, saved, note = run_schedule(cfg_of(), cfg_of({"optim": {"weight_decay": 0.05}}))
    assert note is None and restored["param_groups"][0]["weight_decay"] == 0.05
    state = restored["state"]
    assert torch.equal(state[0]["exp_avg"], saved["state"][0]["exp_avg"]) and state[0]["step"] == 2


def test_changed_keys_and_frozen_ones():
    old, new = cfg_of().to_dict(), cfg_of({"optim": {"lr": 0.01}, "train": {"epochs": 8}}).to_dict()
    assert R.changed_keys(old, new) == [("optim.lr", 0.1, 0.01), ("train.epochs", 4, 8)]
    assert R.describe(R.changed_keys(old, new)) == "optim.lr 0.1 -> 0.01, train.epochs 4 -> 8"
    match = r"train.monitor cannot change on --resume of RUN \(val_loss -> val_dice"
    with pytest.raises(UserError, match=match):
        R.check_changes([("train.monitor", "val_loss", "val_dice")], "RUN")


# ----------------------------------------------------------------------------- end to end


def test_extending_a_cosine_run_stretches_its_schedule(tiny_root):
    lr0 = 3e-3
    short = tiny_cfg(tiny_root, name="ext-cosine", sched={"name": "cosine"},
                     train={"epochs": 2, "max_train_batches": 1})
    run = train(short).run_dir
    said = []
    longer = tiny_cfg(tiny_root, name="ext-cosine", sched={"name": "cosine"},
                      train={"epochs": 4, "max_train_batches": 1})
    train(longer, resume=run, callbacks=TrainerCallbacks(on_message=lambda text, level: said.append(text)))
    lrs = [float(r["lr"]) for r in read_history(run)]
    # the report of the old behaviour: 0, 0.0015, 0.003, 0.0015 after the resume
    assert lrs == pytest.approx([lr0, lr0 * c(1, 2), lr0 * c(2, 4), lr0 * c(3, 4)], rel=1e-12)
    assert load_config(run / "config.yaml").train.epochs == 4
    log = (run / "train.log").read_text()
    assert "resume with changed keys: train.epochs 2 -> 4" in log
    assert any(s.startswith("schedule: lr 0.0015 for epoch 3 (cosine over 4 epochs)") for s in said), said


def test_switching_the_optimizer_on_resume(tiny_root):
    cfg = tiny_cfg(tiny_root, name="ext-sgd", train={"epochs": 1, "max_train_batches": 1})
    run = train(cfg).run_dir
    said = []
    sgd = tiny_cfg(tiny_root, name="ext-sgd", optim={"name": "sgd", "lr": 0.01, "momentum": 0.9},
                   train={"epochs": 2, "max_train_batches": 1})
    cb = TrainerCallbacks(on_message=lambda text, level: said.append(text))
    result = train(sgd, resume=run, callbacks=cb)
    assert result.stopped == "completed" and len(read_history(run)) == 2
    assert float(read_history(run)[1]["lr"]) == pytest.approx(0.01)
    assert any("optim.name changed (adamw -> sgd)" in s for s in said)
    assert load_config(run / "config.yaml").optim.name == "sgd"
