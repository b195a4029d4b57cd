"""Typed configuration: dataclasses with reasoned defaults, YAML load/save, dotted overrides.

Every user mistake (unknown key, wrong type, bad value) raises ``UserError`` naming the key and,
where there is one, the closest valid key. ``Config`` defaults are the study's common settings
(configs/cvc.yaml etc. only override what differs).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imbaseg.errors import UserError, suggestion
from imbaseg.optim import OPTIMIZERS, SCHEDULES


@dataclass
class DataConfig:
    dataset: str = "synthetic-polyp"  # a dataset under data/prepared/ (synthetic-* prepare themselves)
    root: str | None = None  # project root holding data/; None means $IMBASEG_HOME or the current directory
    size: list[int] | None = None  # [H, W] training size; None keeps the prepared images' own size
    in_channels: int = 3  # 3 = RGB (grey images are replicated), 1 = luminance
    patch_size: list[int] | None = None  # [h, w] random training crops (DRIVE on CPU); None = whole images
    patches_per_image: int = 1  # crops per image per epoch (with patch_size): more steps per decoded image
    num_workers: int = 0  # loader processes; 0 loads in the main process (fastest for tiny CPU runs)
    augment: dict[str, Any] = field(default_factory=dict)  # transforms keys; {} = the study's set


@dataclass
class ModelConfig:
    name: str = "unet"  # "unet" (the study's U-Net) or "timm-unet" (any timm encoder)
    base_channels: int = 64  # the study's U-Net width
    encoder: str = "resnet34"  # timm-unet only: any timm model with features_only support
    pretrained: bool = False  # timm-unet only: downloading weights needs the internet, so it is opt-in


@dataclass
class LossConfig:
    name: str = "bce"  # a registry name or a compound like "boundary-gaussian(sigma=4)+0.5*dou"
    params: dict[str, Any] = field(default_factory=dict)  # parameters of a single named loss
    terms: list[dict[str, Any]] | None = None  # YAML compound form: [{name, weight, params}]; overrides name
    sync_stats: bool = True  # multi-GPU: all-reduce the batch counts so statistics match one big batch


@dataclass
class OptimConfig:
    name: str = "sgd"  # the study used SGD; "adamw" is the common alternative
    lr: float = 0.1  # the study's initial learning rate for SGD
    momentum: float = 0.9  # SGD momentum, as in the study
    weight_decay: float = 1e-4  # the study's L2 regularisation
    grad_clip: float | None = None  # max global grad norm; None disables clipping


@dataclass
class SchedConfig:
    name: str = "plateau"  # the study's ReduceLROnPlateau; also "cosine", "poly", "none"
    factor: float = 0.1  # plateau: multiply the lr by this when the monitor stalls
    patience: int = 10  # plateau: epochs without improvement before reducing the lr
    min_lr: float = 0.0  # floor for every schedule
    power: float = 0.9  # poly: lr = lr0 * (1 - epoch/epochs)^power (nnU-Net's choice)


@dataclass
class TrainConfig:
    epochs: int = 400  # the study's upper bound; early stopping usually ends sooner
    batch_size: int = 2  # the study's batch for CVC and DRIVE
    early_stopping: int = 20  # epochs without improvement of the monitor before stopping; 0 disables
    monitor: str = "val_loss"  # or "val_dice": the value that picks best.pt and drives the schedule
    threshold: float = 0.5  # probability threshold for the validation Dice
    device: str = "auto"  # "auto" = cuda, then mps, then cpu
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler); off on CPU
    compile: bool = False  # torch.compile the model (falls back to eager when compilation fails)
    channels_last: bool = True  # faster convolutions on CUDA; ignored on CPU, where it is slower
    deterministic: bool = False  # deterministic kernels and loaders, for bit-exact resume
    log_interval: int = 20  # steps between host syncs of the running loss (and the NaN check)
    max_train_batches: int | None = None  # cap per epoch, for smoke runs; None uses the whole split
    trackers: list[str] = field(default_factory=list)  # "tensorboard", "mlflow" (extras); [] = none
    image_grid_every: int = 10  # epochs between TensorBoard's validation image grids (0 = none): one forward
    # of 4 val images, but ~90 KB of event file at 128x128, ~0.8 MB at 512x512: a 400-epoch run stays < 32 MB


@dataclass
class Config:
    name: str | None = None  # run folder name; None uses a timestamp
    seed: int = 42  # the study's seed
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def loss_label(self) -> str:
        """The loss as one string, for folder names and tables."""
        if self.loss.terms:
            return "+".join(
                (f"{t.get('weight', 1.0)}*" if t.get("weight", 1.0) != 1.0 else "") + str(t.get("name"))
                for t in self.loss.terms
            )
        if self.loss.params:
            args = ",".join(f"{k}={v}" for k, v in self.loss.params.items())
            return f"{self.loss.name}({args})"
        return self.loss.name

    @property
    def monitor_mode(self) -> str:
        return "max" if self.train.monitor.endswith("dice") else "min"


MONITORS = ("val_loss", "val_dice")
SEED_MAX = 2**32 - 1  # numpy's limit: np.random.seed and default_rng refuse larger seeds


@dataclass(frozen=True)
class Range:
    """The numbers a key accepts: ``lo``..``hi`` (None = unbounded), each end open or closed; NaN and
    infinities are never accepted; ``null`` also allows None (the key's "off" value)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    null: bool = False

    def __contains__(self, value: Any) -> bool:
        if value is None:
            return self.null
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def __str__(self) -> str:
        lo, hi = _num(self.lo), _num(self.hi)
        if self.lo is not None and self.hi is not None:
            text = f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{'>' if self.lo_open else '>='} {lo}"
        else:
            text = f"{'<' if self.hi_open else '<='} {hi}"
        return text + (" or null" if self.null else "")


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# Every numeric config key and its range: the one table `validate` checks (lists: each element).
NUMBERS: dict[str, Range] = {
    "seed": Range(0, SEED_MAX),
    "data.size": Range(1, 16384, null=True),
    "data.patch_size": Range(1, 16384, null=True),
    "data.patches_per_image": Range(1),
    "data.num_workers": Range(0),
    "model.base_channels": Range(1),
    "optim.lr": Range(0, lo_open=True),
    "optim.momentum": Range(0, 1, hi_open=True),  # 1 never decays: the velocity grows without bound
    "optim.weight_decay": Range(0),
    "optim.grad_clip": Range(0, lo_open=True, null=True),  # a negative norm would flip the gradients
    "sched.factor": Range(0, 1, lo_open=True, hi_open=True),  # a "reduction" must reduce
    "sched.patience": Range(0),
    "sched.min_lr": Range(0),  # and below optim.lr (checked in validate)
    "sched.power": Range(0, lo_open=True),
    "train.epochs": Range(1),
    "train.batch_size": Range(1),
    "train.early_stopping": Range(0),  # 0 disables it
    "train.threshold": Range(0, 1, lo_open=True, hi_open=True),
    "train.log_interval": Range(1),
    "train.max_train_batches": Range(1, null=True),  # 0 batches would train on nothing
    "train.image_grid_every": Range(0),  # 0 = no image grid
}

# Numbers given as command-line flags that never pass through a config, checked the same way.
FLAG_NUMBERS: dict[str, Range] = {
    "prepare --seed": NUMBERS["seed"],
    "prepare --workers": Range(1),
    "prepare --max-side": Range(0),  # 0 = never shrink
    "--max-pixels": Range(1),
    "evaluate --nsd-tau": Range(0, lo_open=True),
}


def _value_text(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_number(key: str, value: Any) -> Any:
    """``value`` when it lies in the range of ``key`` (a key of NUMBERS or FLAG_NUMBERS), else a
    UserError naming the key, its range and the value."""
    if key in NUMBERS:
        rng, what = NUMBERS[key], f"config key '{key}'"
    else:
        rng, what = FLAG_NUMBERS[key], key.rsplit(" ", 1)[-1]
    if isinstance(value, (list, tuple)):  # [H, W]: each element, never None
        ok = all(v is not None and v in rng for v in value)
    else:
        ok = value in rng
    if not ok:
        finite = all(not isinstance(v, float) or math.isfinite(v) for v in (value if isinstance(
            value, (list, tuple)) else [value]))
        note = "" if finite else " (NaN and infinity are never accepted)"
        raise UserError(f"{what} must be {rng}, got {_value_text(value)}{note}")
    return value


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


# ----------------------------------------------------------------------------- type checking


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError as exc:
                errors.append(exc)
        raise errors[0] if errors else UserError(f"config key '{key}' cannot be null")
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int beyond 1e308
                raise UserError(f"config key '{key}' must be a finite number, got {value}") from None
        raise UserError(f"config key '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"config key '{key}' must be a string, got {value!r}")
    return value


def _build(cls, data: dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise UserError(f"config section '{prefix.rstrip('.') or 'root'}' must be a mapping, got {data!r}")
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in hints:
            valid = [f"{prefix}{k}" for k in hints]
            raise UserError(
                f"unknown config key '{full}'.{suggestion(full, valid)} Valid keys: {', '.join(valid)}."
            )
        tp = hints[key]
        if _is_dataclass_type(tp):
            kwargs[key] = _build(tp, value or {}, f"{full}.")
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("params", "augment"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def validate(cfg: Config) -> Config:
    """Check values that types alone cannot (choices and ranges)."""
    t = cfg.train
    checks = [
        (t.monitor in MONITORS, "train.monitor", t.monitor, MONITORS),
        (cfg.optim.name in OPTIMIZERS, "optim.name", cfg.optim.name, tuple(OPTIMIZERS)),
        (cfg.sched.name in SCHEDULES, "sched.name", cfg.sched.name, tuple(SCHEDULES)),
    ]
    for ok, key, value, choices in checks:
        if not ok:
            raise UserError(
                f"bad value '{value}' for '{key}'.{suggestion(value, choices)} "
                f"Choose one of: {', '.join(choices)}."
            )
    for key, value in (("data.size", cfg.data.size), ("data.patch_size", cfg.data.patch_size)):
        if value is not None and len(value) != 2:
            raise UserError(f"config key '{key}' must be two positive integers [H, W], got {value}")
    for key in NUMBERS:
        check_number(key, _get(cfg, key))
    if cfg.sched.min_lr >= cfg.optim.lr:
        raise UserError(
            f"config key 'sched.min_lr' must be below optim.lr ({cfg.optim.lr:g}), got {cfg.sched.min_lr:g}"
        )
    if cfg.data.in_channels not in (1, 3):
        raise UserError(f"config key 'data.in_channels' must be 1 or 3, got {cfg.data.in_channels}")
    # the trackers' registry lives with them (training imports config, so not at the top)
    from imbaseg.training.trackers import check_trackers

    check_trackers(cfg.train.trackers)
    return cfg


def add_trackers(cfg: Config, names) -> Config:
    """``cfg`` with ``names`` (``--tracker``, repeatable) added to ``train.trackers`` once each, validated."""
    cfg.train.trackers = list(dict.fromkeys([*cfg.train.trackers, *names]))
    return validate(cfg)


def from_dict(data: dict[str, Any]) -> Config:
    """A validated Config from a (possibly partial) nested dict."""
    return validate(_build(Config, data or {}, ""))


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=3"`` -> ``("train.epochs", 3)``; the value is parsed as YAML."""
    if "=" not in text:
        raise UserError(f"bad --set '{text}': write it as key.sub=value, e.g. --set train.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"bad --set '{text}': the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; users mean a number
        try:
            value = float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "+inf") else value
        except ValueError:
            pass
    return key, value


def nest(key: str, value: Any) -> dict[str, Any]:
    """``("a.b.c", 1)`` -> ``{"a": {"b": {"c": 1}}}``."""
    out: dict[str, Any] = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _set_dotted(data: dict, key: str, value: Any) -> dict:
    parts = key.split(".")
    # "loss.params.sigma=4" and "data.augment.hflip=0.5" reach inside free-form mappings
    for free in ("params", "augment"):
        if free in parts[:-1]:
            i = parts.index(free)
            head = ".".join(parts[: i + 1])
            inner = _get_dotted(data, head) or {}
            inner = dict(inner)
            inner[".".join(parts[i + 1 :])] = value
            return _merge(data, nest(head, inner))
    return _merge(data, nest(key, value))


def _get_dotted(data: dict, key: str):
    cur: Any = data
    for part in key.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file of mappings (a config or a study file) as a dict; UserError naming the file for a
    missing file, text that is not UTF-8, bad YAML or a top level that is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}. Pass an existing YAML file, e.g. configs/cvc.yaml")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark (Windows editors) is fine
    except UnicodeDecodeError as exc:
        raise UserError(
            f"config file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}): save it as UTF-8 (e.g. iconv -f latin1 -t utf-8) or pass the right file"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"config file {path} is not valid YAML{where}: fix the syntax") from exc
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections (data:, model:, train:, ...)")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    base: dict[str, Any] | None = None,
) -> Config:
    """Defaults <- ``base`` dict <- YAML file <- dotted ``overrides``, validated."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = _merge(data, read_yaml(path))
    for key, value in overrides or []:
        data = _set_dotted(data, key, value)
    return from_dict(data)


def dump_config(cfg: Config) -> str:
    """The config as YAML, sections in their declared order (the text of a run's config.yaml)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    from imbaseg.paths import atomic_write_text

    atomic_write_text(path, dump_config(cfg))


# ----------------------------------------------------------------------------- presets and resolution

# The study's settings per dataset: `--dataset X` without `--config` starts from these files, which
# ship inside the installed package (imbaseg/configs, a link to the repository's configs/).
PRESETS = {
    "cvc": "cvc.yaml",
    "drive": "drive.yaml",
    "isic2018": "isic.yaml",
    "synthetic-polyp": "synthetic.yaml",
}


def configs_dir() -> Path:
    """The shipped configs: ``imbaseg/configs`` (in a checkout a link to the repository's ``configs/``).

    UserError when it is missing (a broken install), never a silent fallback to the defaults.
    """
    here = Path(__file__).resolve()
    for folder in (here.parent / "configs", here.parents[1] / "configs"):
        if (folder / "cvc.yaml").is_file():
            return folder
    raise UserError(
        "the study's config files (cvc.yaml, drive.yaml, ...) are missing from this installation; "
        "reinstall imbaseg or pass --config FILE"
    )


def preset_name(dataset: str) -> str | None:
    """The preset file name for ``dataset`` (aliases resolved), or None when it has none."""
    from imbaseg.paths import dataset_key

    return PRESETS.get(dataset_key(dataset))


def preset_for(dataset: str) -> Path | None:
    """The preset YAML of ``dataset``; None for datasets without one (folder, synthetic-vessel, ...).

    A dataset that has a preset whose file cannot be found is a UserError, never silent defaults.
    """
    name = preset_name(dataset)
    if name is None:
        return None
    path = configs_dir() / name
    if not path.is_file():
        raise UserError(f"the preset {name} for dataset '{dataset}' is missing from {path.parent}; "
                        "reinstall imbaseg or pass --config FILE")
    return path


def shipped_config(name: str) -> Path:
    """A config shipped with imbaseg by file name (``study-demo.yaml``); UserError listing them otherwise."""
    folder = configs_dir()
    path = folder / name
    if path.is_file():
        return path
    choices = sorted(p.name for p in folder.glob("*.yaml"))
    raise UserError(f"no shipped config '{name}'.{suggestion(name, choices)} Shipped: {', '.join(choices)}.")


# the CLI flags of `imbaseg train` and the config keys they set
FLAG_KEYS = {
    "dataset": "data.dataset",
    "root": "data.root",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "optim.lr",
    "model": "model.name",
    "encoder": "model.encoder",
    "device": "train.device",
    "seed": "seed",
    "name": "name",
    "deterministic": "train.deterministic",
    "compile": "train.compile",
}


def flag_overrides(**flags: Any) -> list[tuple[str, Any]]:
    """The common flags as dotted config overrides (only those given, i.e. not None)."""
    unknown = [k for k in flags if k not in FLAG_KEYS]
    if unknown:
        raise ValueError(f"unknown flag(s) {unknown}")
    out = [(FLAG_KEYS[k], v) for k, v in flags.items() if v is not None]
    if flags.get("encoder") is not None and flags.get("model") is None:
        out.append(("model.name", "timm-unet"))
    return out


def loss_overrides(loss: str | None = None, loss_params=()) -> list[tuple[str, Any]]:
    """``--loss`` replaces the loss (name, params and terms); ``--loss-param k=v`` sets one parameter."""
    out: list[tuple[str, Any]] = []
    if loss is not None:
        out += [("loss.name", loss), ("loss.terms", None), ("loss.params", {})]
    params = {}
    for item in loss_params:
        if "=" not in item:
            raise UserError(f"bad --loss-param '{item}': write it as key=value, e.g. --loss-param sigma=4")
        key, value = parse_override(item)
        params[key] = value
    if params:
        out.append(("loss.params", params))
    return out


def resolve_config(
    config: str | Path | None = None,
    dataset: str | None = None,
    loss: str | None = None,
    loss_params: list[str] | tuple[str, ...] = (),
    sets: list[str] | tuple[str, ...] = (),
    flags: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> tuple[Config, Path | None]:
    """The config of a run, and the preset file used (or None).

    Defaults <- ``base`` (a resumed run's config) or ``config`` file or the dataset's preset
    <- ``flags`` <- ``loss``/``loss_params`` <- ``sets`` (``key.sub=value`` strings).
    """
    overrides = flag_overrides(dataset=dataset, **(flags or {}))
    overrides += loss_overrides(loss, loss_params)
    overrides += [parse_override(s) for s in sets]
    if base is not None:
        if config is not None:
            raise UserError(
                "--resume takes the config from the run folder; drop --config (use --set to change keys)"
            )
        return load_config(None, overrides, base=base), None
    preset = preset_for(dataset) if config is None and dataset is not None else None
    return load_config(config or preset, overrides), preset
