"""Every numeric config key has one range, in one table (config.NUMBERS); the flags that bypass the config
(config.FLAG_NUMBERS) use it too; loss weights are finite and > 0; config files must be UTF-8.

Each bad value gets one line naming the key, its range and the value."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
from typer.testing import CliRunner

from imbaseg.config import Config, from_dict, load_config, parse_override
from imbaseg.errors import UserError

NAN, INF = float("nan"), float("inf")
SEED_MAX = 2**32 - 1  # numpy's limit

# (key, bad value, range as the error states it): every value the issue names, and more
BAD = [
    ("optim.lr", NAN, "> 0"),
    ("optim.lr", INF, "> 0"),
    ("optim.lr", 0.0, "> 0"),
    ("optim.lr", -0.1, "> 0"),
    ("optim.momentum", -0.5, "in [0, 1)"),
    ("optim.momentum", 1.0, "in [0, 1)"),
    ("optim.momentum", NAN, "in [0, 1)"),
    ("optim.weight_decay", -1e-4, ">= 0"),
    ("optim.weight_decay", INF, ">= 0"),
    ("optim.grad_clip", -1.0, "> 0 or null"),  # silently flipped the gradients before
    ("optim.grad_clip", 0.0, "> 0 or null"),
    ("optim.grad_clip", NAN, "> 0 or null"),
    ("sched.factor", 2.0, "in (0, 1)"),
    ("sched.factor", 1.0, "in (0, 1)"),
    ("sched.factor", 0.0, "in (0, 1)"),
    ("sched.patience", -1, ">= 0"),
    ("sched.min_lr", -1e-6, ">= 0"),
    ("sched.min_lr", NAN, ">= 0"),
    ("sched.power", 0.0, "> 0"),
    ("sched.power", -0.9, "> 0"),
    ("train.early_stopping", -1, ">= 0"),  # stopped after one epoch before
    ("train.max_train_batches", 0, ">= 1 or null"),  # trained on nothing, logging loss 0.0, before
    ("train.max_train_batches", -3, ">= 1 or null"),
    ("train.epochs", 0, ">= 1"),
    ("train.batch_size", 0, ">= 1"),
    ("train.batch_size", -2, ">= 1"),
    ("train.threshold", 0.0, "in (0, 1)"),
    ("train.threshold", 1.0, "in (0, 1)"),
    ("train.threshold", NAN, "in (0, 1)"),
    ("train.log_interval", 0, ">= 1"),
    ("seed", -1, f"in [0, {SEED_MAX}]"),
    ("seed", 12345678901234567890, f"in [0, {SEED_MAX}]"),  # a 20-digit seed crashed numpy before
    ("seed", SEED_MAX + 1, f"in [0, {SEED_MAX}]"),
    ("data.num_workers", -1, ">= 0"),
    ("data.patches_per_image", 0, ">= 1"),
    ("model.base_channels", 0, ">= 1"),
    ("data.size", [0, 64], "in [1, 16384] or null"),
    ("data.size", [64, 100000], "in [1, 16384] or null"),
    ("data.patch_size", [-8, 8], "in [1, 16384] or null"),
]


def _nested(key: str, value) -> dict:
    out: dict = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


@pytest.mark.parametrize("key,value,rng", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_every_bad_number_is_one_line_naming_key_range_and_value(key, value, rng):
    with pytest.raises(UserError) as exc:
        from_dict(_nested(key, value))
    text = str(exc.value)
    assert text.startswith(f"config key '{key}' must be {rng}, got {value}"), text
    if isinstance(value, float) and not math.isfinite(value):
        assert "NaN and infinity are never accepted" in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "key,value",
    [
        ("optim.momentum", 0.0),
        ("optim.weight_decay", 0.0),
        ("optim.grad_clip", None),
        ("optim.grad_clip", 1.0),
        ("sched.patience", 0),
        ("sched.min_lr", 0.0),
        ("train.early_stopping", 0),
        ("train.max_train_batches", None),
        ("train.max_train_batches", 1),
        ("seed", 0),
        ("seed", SEED_MAX),
        ("data.num_workers", 0),
        ("data.size", None),
        ("data.size", [1, 16384]),
    ],
)
def test_the_edges_of_each_range_are_accepted(key, value):
    from_dict(_nested(key, value))


def test_min_lr_must_stay_below_lr():
    with pytest.raises(UserError, match=r"'sched.min_lr' must be below optim.lr \(0.001\), got 0.01"):
        from_dict({"optim": {"lr": 1e-3}, "sched": {"min_lr": 1e-2}})
    with pytest.raises(UserError, match="sched.min_lr"):
        from_dict({"optim": {"lr": 1e-3}, "sched": {"min_lr": 1e-3}})


def test_every_numeric_key_has_a_range():
    """A new int or float field without an entry in NUMBERS fails here (in_channels is a choice, 1 or 3)."""
    from imbaseg.config import NUMBERS

    def numeric(tp) -> bool:
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        return any(a in (int, float) or typing.get_args(a) in ((int,), (float,)) for a in args)

    def walk(cls, prefix=""):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                yield from walk(tp, f"{prefix}{f.name}.")
            elif numeric(tp):
                yield f"{prefix}{f.name}"

    keys = set(walk(Config))
    assert keys - {"data.in_channels"} == set(NUMBERS), keys ^ set(NUMBERS)


def test_yaml_and_overrides_reach_the_same_check(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: .nan}\n")
    with pytest.raises(UserError, match="'optim.lr' must be > 0, got nan"):
        load_config(path)
    with pytest.raises(UserError, match="'optim.lr' must be > 0, got inf"):
        load_config(None, [parse_override("optim.lr=1e400")])
    with pytest.raises(UserError, match="'optim.lr' must be a finite number, got 1000"):
        load_config(None, [("optim.lr", 10**400)])  # an int too large for a float


def test_flag_numbers():
    from imbaseg.config import check_number

    assert check_number("prepare --seed", 7) == 7
    for key, value, rng in [("prepare --seed", -1, f"in [0, {SEED_MAX}]"), ("prepare --workers", 0, ">= 1"),
                            ("prepare --max-side", -1, ">= 0"), ("--max-pixels", 0, ">= 1"),
                            ("evaluate --nsd-tau", NAN, "> 0"), ("evaluate --nsd-tau", INF, "> 0")]:
        with pytest.raises(UserError) as exc:
            check_number(key, value)
        assert str(exc.value).startswith(f"{key.split()[-1]} must be {rng}, got {value}")


def _cli(*args):
    from imbaseg.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})


@pytest.mark.parametrize(
    "args,message",
    [
        (("train", "--dataset", "synthetic-polyp", "--lr", "nan", "--print-config"),
         "config key 'optim.lr' must be > 0, got nan"),
        (("train", "--dataset", "synthetic-polyp", "--seed", "12345678901234567890", "--print-config"),
         "config key 'seed' must be in [0, 4294967295], got 12345678901234567890"),
        (("train", "--dataset", "synthetic-polyp", "--set", "sched.factor=2", "--print-config"),
         "config key 'sched.factor' must be in (0, 1), got 2.0"),
        (("prepare", "synthetic-polyp", "--seed", "-1"), "--seed must be in [0, 4294967295], got -1"),
        (("prepare", "synthetic-polyp", "--workers", "0"), "--workers must be >= 1, got 0"),
        (("evaluate", "no-such-run", "--nsd-tau", "nan"), "--nsd-tau must be > 0, got nan"),
    ],
)
def test_cli_flags_that_bypass_the_config(args, message, tmp_path):
    res = _cli(*args, "--root", tmp_path) if args[0] == "prepare" else _cli(*args)
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and message in " ".join(res.output.split()), res.output
    assert not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------- loss weights


@pytest.mark.parametrize("spec", ["inf*bce", "-1*dice", "0*dice", "1e400*dice", "dice+-0.5*bce", "0.0*focal"])
def test_loss_weights_must_be_finite_and_positive(spec):
    from imbaseg.losses.compound import parse_loss_spec

    with pytest.raises(UserError, match=r"loss spec '.*': weight \S+ must be a finite number > 0"):
        parse_loss_spec(spec)


@pytest.mark.parametrize("weight", [0, -2, float("inf"), float("nan")])
def test_yaml_loss_terms_have_the_same_rule(weight):
    from imbaseg.losses.compound import normalize_term

    with pytest.raises(UserError, match="weight"):
        normalize_term({"name": "dice", "weight": weight})


def test_a_bad_loss_weight_stops_training_before_the_run_folder(tiny_root):
    from imbaseg.training.trainer import train

    cfg = from_dict({"data": {"dataset": "synthetic-polyp", "root": str(tiny_root), "size": [32, 32]},
                     "model": {"base_channels": 4}, "loss": {"name": "dice+-1*bce"},
                     "train": {"device": "cpu", "epochs": 1}})
    runs = tiny_root / "runs"
    before = sorted(runs.rglob("*")) if runs.exists() else []
    with pytest.raises(UserError, match="weight -1 must be a finite number > 0"):
        train(cfg)
    assert (sorted(runs.rglob("*")) if runs.exists() else []) == before  # no run folder was made


def test_good_loss_weights_still_parse():
    from imbaseg.losses.compound import parse_loss_spec

    assert [t["weight"] for t in parse_loss_spec("0.5*dice+1e-3*bce+2*focal")] == [0.5, 1e-3, 2.0]


# ----------------------------------------------------------------------------- encodings


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("# réglages de l'étude\ntrain: {epochs: 3}\n".encode("latin-1"))
    with pytest.raises(UserError) as exc:
        load_config(latin)
    text = str(exc.value)
    assert f"config file {latin} is not UTF-8 text (byte 0xe9 at offset 3)" in text
    assert "save it as UTF-8" in text
    binary = tmp_path / "image.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        load_config(binary)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeff# étude\ntrain: {epochs: 3}\n".encode())  # a byte-order mark is fine
    assert load_config(bom).train.epochs == 3


def test_a_study_file_that_is_not_utf8_is_one_line(tmp_path):
    from imbaseg.study.spec import load_study

    study = tmp_path / "study.yaml"
    study.write_bytes("name: d\xe9mo\n".encode("latin-1"))
    with pytest.raises(UserError, match=f"config file {study} is not UTF-8 text"):
        load_study(study)
    res = _cli("train", "--config", study, "--print-config")
    assert res.exit_code == 2 and "is not UTF-8 text" in res.output and "Traceback" not in res.output
