"""Typed config: defaults, YAML, dotted overrides and the errors users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from imbaseg.config import Config, from_dict, load_config, parse_override, save_config
from imbaseg.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_study_settings():
    cfg = Config()
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (
        "sgd",
        0.1,
        0.9,
        1e-4,
    )
    assert (cfg.sched.name, cfg.sched.factor, cfg.sched.patience) == ("plateau", 0.1, 10)
    assert (cfg.train.early_stopping, cfg.train.epochs, cfg.train.threshold, cfg.seed) == (20, 400, 0.5, 42)
    assert cfg.model.base_channels == 64


# (file, dataset, size, batch, monitor)
STUDY = [
    ("cvc.yaml", "cvc", [288, 384], 2, "val_dice"),
    ("drive.yaml", "drive", [512, 512], 2, "val_loss"),
    ("isic.yaml", "isic2018", [384, 384], 4, "val_loss"),
]


@pytest.mark.parametrize("name,dataset,size,batch,monitor", STUDY)
def test_study_configs(name, dataset, size, batch, monitor):
    cfg = load_config(CONFIGS / name)
    assert cfg.data.dataset == dataset and cfg.data.size == size
    assert cfg.train.batch_size == batch and cfg.train.monitor == monitor
    assert (cfg.optim.lr, cfg.sched.patience, cfg.train.early_stopping, cfg.train.epochs) == (
        0.1,
        10,
        20,
        400,
    )


def test_cvc_uses_boundary_gaussian_sigma_4():
    cfg = load_config(CONFIGS / "cvc.yaml")
    assert cfg.loss.name == "boundary-gaussian" and cfg.loss.params == {"sigma": 4}
    assert cfg.monitor_mode == "max"


def test_every_config_file_loads():
    """Training configs load as configs; study files (study-*.yaml) load as studies."""
    from imbaseg.study.spec import load_study

    paths = sorted(CONFIGS.glob("*.yaml"))
    assert len([p for p in paths if not p.name.startswith("study-")]) >= 5
    for path in paths:
        if path.name.startswith("study-"):
            assert load_study(path).name
        else:
            load_config(path)


@pytest.mark.parametrize(
    "data,message",
    [
        ({"trian": {"epochs": 3}}, "unknown config key 'trian'. Did you mean 'train'?"),
        ({"train": {"epoch": 3}}, "unknown config key 'train.epoch'. Did you mean 'train.epochs'?"),
        ({"train": {"epochs": "ten"}}, "config key 'train.epochs' must be an integer"),
        ({"train": {"amp": "yes"}}, "config key 'train.amp' must be true or false"),
        ({"optim": {"lr": "fast"}}, "config key 'optim.lr' must be a number"),
        (
            {"train": {"monitor": "val_dise"}},
            "bad value 'val_dise' for 'train.monitor'. Did you mean 'val_dice'?",
        ),
        ({"optim": {"name": "adam"}}, "Did you mean 'adamw'?"),
        ({"train": {"epochs": 0}}, "config key 'train.epochs' must be >= 1, got 0"),
        ({"data": {"size": [128]}}, "'data.size' must be two positive integers"),
        ({"train": 5}, "config section 'train' must be a mapping"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(UserError) as exc:
        from_dict(data)
    assert message in str(exc.value)


def test_ints_widen_to_float_and_lists_are_checked():
    cfg = from_dict({"optim": {"lr": 1}, "data": {"size": [64, 96]}})
    assert isinstance(cfg.optim.lr, float) and cfg.data.size == [64, 96]
    with pytest.raises(UserError, match=r"data.size\[1\]"):
        from_dict({"data": {"size": [64, "x"]}})


@pytest.mark.parametrize(
    "text,expected",
    [
        ("train.epochs=3", ("train.epochs", 3)),
        ("optim.lr=1e-3", ("optim.lr", 1e-3)),
        ("data.size=[64, 64]", ("data.size", [64, 64])),
        ("train.amp=false", ("train.amp", False)),
        ("name=my run", ("name", "my run")),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_override_errors():
    with pytest.raises(UserError, match="key.sub=value"):
        parse_override("train.epochs")
    with pytest.raises(UserError, match="Did you mean 'train.batch_size'"):
        load_config(None, [parse_override("train.batchsize=4")])


def test_overrides_reach_free_form_mappings(tmp_path):
    cfg = load_config(CONFIGS / "cvc.yaml", [("loss.params.sigma", 6), ("data.augment.hflip", 0.5)])
    assert cfg.loss.params == {"sigma": 6}
    assert cfg.data.augment == {"hflip": 0.5}


def test_yaml_errors(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(UserError, match="must hold a mapping"):
        load_config(scalar)


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(
        CONFIGS / "isic.yaml", [("train.epochs", 7), ("loss.terms", [{"name": "dice", "weight": 0.5}])]
    )
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert again.loss_label == "0.5*dice"


def test_every_default_carries_its_reason():
    """Each field line in config.py has a trailing comment (the reason for the default)."""
    import inspect

    import imbaseg.config as mod

    for cls in (
        mod.DataConfig,
        mod.ModelConfig,
        mod.LossConfig,
        mod.OptimConfig,
        mod.SchedConfig,
        mod.TrainConfig,
    ):
        for line in inspect.getsource(cls).splitlines()[2:]:
            if ":" in line and "=" in line and not line.strip().startswith(("#", "def", '"')):
                assert "#" in line, f"{cls.__name__}: no reason given for `{line.strip()}`"
