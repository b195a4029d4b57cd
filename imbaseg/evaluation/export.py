"""``imbaseg export``: a trained run as one ONNX or TorchScript graph with the preprocessing inside.

The graph (``ExportGraph``) maps an image batch to masks at the input's own size, doing what ``predict``
does for a run folder (``imbaseg.evaluation.inference.Predictor``):

    image (N, H, W, 3) uint8 (or float32 with --dtype float32), any N, H, W
    -> (N, 3, H, W) float; luminance (rounded, as ``to_channels``) when the run trained on 1 channel
    -> resized to the training size (``data.size``) with antialiased bilinear, rounded and clipped to
       0..255 as ``imbaseg.data.resize`` does (float input: not rounded); no resize without ``data.size``
    -> per-image z-score over channels and pixels (std floored at 1e-6, ``imbaseg.data.dataset.zscore``)
    -> padded to the network's multiple (``imbaseg.models.unet.pad_to_multiple``, from shapes only)
    -> the network, its logits cropped back, sigmoid
    -> resized back to (H, W) (antialiased bilinear), clipped to [0, 1]
    -> (N, H, W) uint8 mask 0/255 (``p >= threshold``; a temperature T moves the threshold as
       ``imbaseg.evaluation.calibrate.scaled_threshold`` does), or float32 probabilities with
       ``probabilities=True`` (scaled by T: ``sigmoid(logit(p) / T)``).

How: the network is traced (``torch.jit.trace``) at a padded size, where its own padding is a no-op,
and the wrapper is scripted (``torch.jit.script``), so the padding amounts are computed at run time from
the input's shape. That TorchScript module is the ``.pt`` export; ONNX is exported from it by torch's
TorchScript-based exporter with dynamic N, H, W. (The dynamo exporter specialises the model's
shape-dependent padding to the example's size: measured, it returned wrong masks at other sizes.)
In ONNX the antialiased resize is two products with weight matrices built in the graph from the sizes
(``resize_matrices``), not ONNX ``Resize``: onnxruntime's ``Resize`` with ``antialias=1`` (opset 18) differs
from torch's by up to 0.004 grey levels (``exclude_outside=1``; 5 to 15 without it), which flips values
rounded to uint8. The products reproduce torch to float32 rounding, in any opset from 11.

Not in the graph: sliding windows. A run trained on patches (``data.patch_size``) is predicted in
windows, so it is refused; a run trained at native size is run on the whole image at any size, where
``predict`` on the run folder switches to windows above ``MAX_WHOLE_PIXELS``. Flip TTA is not included.

The model file carries its description (the sidecar JSON's content) inside: ONNX metadata ``imbaseg``,
TorchScript extra file ``imbaseg.json``; ``read_exported`` reads it back (``predict`` uses it).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from imbaseg.errors import UserError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}  # format -> file suffix
DTYPES = ("uint8", "float32")
MIN_ONNX_OPSET = 11  # Round (the uint8 resize's rounding) exists from opset 11
DEFAULT_OPSET = 17  # any of 11..20 gives the same graph; 17 is read by every current runtime
METADATA_KEY = "imbaseg"  # ONNX metadata_props key, and the TorchScript extra file's stem
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as imbaseg.data.dataset.to_channels


# ----------------------------------------------------------------------------- the graph

def _graph_class():
    """``ExportGraph``, defined on first use."""
    from imbaseg.data.dataset import STD_FLOOR

    class ExportGraph(torch.nn.Module):
        """Image batch (N, H, W, 3) -> masks (N, H, W) uint8 0/255 or probabilities float32 (module doc).

        net: the network traced at a multiple of ``multiple`` (its own padding then does nothing).
        size: the training size (H, W), or None. threshold: on the unscaled probabilities.
        """

        # constants: TorchScript compiles the branches on them away (ONNX gets no If for them)
        __constants__ = ["multiple", "grey", "resize", "size_h", "size_w", "round_input", "threshold",
                         "probabilities", "temperature", "std_floor", "matrix_resize"]

        def __init__(self, net, multiple: int, in_channels: int, size, round_input: bool,
                     threshold: float, probabilities: bool, temperature: float, matrix_resize: bool):
            super().__init__()
            self.net = net
            self.matrix_resize = bool(matrix_resize)
            self.multiple = int(multiple)
            self.grey = in_channels == 1
            self.resize = bool(size)
            self.size_h, self.size_w = (int(size[0]), int(size[1])) if size else (0, 0)
            self.round_input = bool(round_input)
            self.threshold = float(threshold)
            self.probabilities = bool(probabilities)
            self.temperature = float(temperature)  # 1.0: none
            self.std_floor = float(STD_FLOOR)
            self.register_buffer("luma", torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1))

        def _resize(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
            if self.matrix_resize:
                return resize_matrices(x, h, w)
            return torch.ops.aten._upsample_bilinear2d_aa(x, [h, w], False, None, None)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            h, w = image.shape[1], image.shape[2]
            x = image.permute(0, 3, 1, 2).float()
            if self.grey:
                x = (x * self.luma).sum(dim=1, keepdim=True)
                if self.round_input:
                    x = x.round().clamp(0.0, 255.0)
            if self.resize:
                x = self._resize(x, self.size_h, self.size_w)
                if self.round_input:
                    x = x.round().clamp(0.0, 255.0)
            mean = x.mean(dim=[1, 2, 3], keepdim=True)
            std = x.std(dim=[1, 2, 3], keepdim=True, unbiased=False).clamp_min(self.std_floor)
            x = (x - mean) / std
            hh, ww = x.shape[2], x.shape[3]
            p = torch.sigmoid(self.net(pad_like_model(x, self.multiple))[:, :, :hh, :ww])
            if self.resize:
                p = self._resize(p, h, w).clamp(0.0, 1.0)
            p = p[:, 0]
            if self.probabilities:
                if self.temperature != 1.0:
                    q = p.clamp(1e-6, 1.0 - 1e-6)
                    p = torch.sigmoid((torch.log(q) - torch.log1p(-q)) / self.temperature)
                return p
            return (p >= self.threshold).to(torch.uint8) * 255

    return ExportGraph


def pad_like_model(x, multiple: int):
    """(N, C, H, W) -> padded as ``imbaseg.models.unet.pad_to_multiple`` pads (a test checks they agree at
    every size), written with one constant ``F.pad`` mode per branch: TorchScript turns a mode held in a
    variable into branches that the ONNX exporter cannot type."""
    h, w = x.shape[2], x.shape[3]
    ph = max((h + multiple - 1) // multiple * multiple, 2 * multiple) - h
    pw = max((w + multiple - 1) // multiple * multiple, 2 * multiple) - w
    if ph < h and pw < w:
        return F.pad(x, [0, pw, 0, ph], mode="reflect")
    return F.pad(x, [0, pw, 0, ph], mode="constant", value=0.0)


def resize_weights(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) float32: torch's antialiased bilinear resize along one axis as a matrix
    (``align_corners=False``; aten's ``_compute_indices_weights_aa``): output i is centred at
    ``c = s (i + 0.5)``, s = n_in / n_out; input j weighs ``max(0, 1 - |j - c + 0.5| / max(s, 1))``,
    the row normalised to sum 1 (so weights are renormalised at the borders). Shrinking, the triangle
    widens to the scale (antialiasing); enlarging, it is plain bilinear; n_in == n_out: the identity."""
    scale = torch.ones(1, dtype=torch.float32, device=like.device) * (float(n_in) / float(n_out))
    invscale = 1.0 / scale.clamp(min=1.0)
    center = scale * (torch.arange(n_out, dtype=torch.float32, device=like.device) + 0.5)
    j = torch.arange(n_in, dtype=torch.float32, device=like.device)
    w = (1.0 - ((j[None, :] - center[:, None] + 0.5) * invscale).abs()).clamp(min=0.0)
    return w / w.sum(dim=1, keepdim=True)


def resize_matrices(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, h, w): ``F.interpolate(bilinear, antialias=True)`` as two matrix products,
    for ONNX: onnxruntime's own antialiased ``Resize`` (opset 18, ``exclude_outside=1``) differs from torch's
    by up to 0.004 grey levels when shrinking 584x565 to 288x384, which flips 32 of the 331,776 values that
    are then rounded to uint8 (measured; the products agree to float32 rounding)."""
    rows = resize_weights(x.shape[2], h, x)
    cols = resize_weights(x.shape[3], w, x)
    return torch.matmul(torch.matmul(rows, x), cols.t())


# ----------------------------------------------------------------------------- checks

def check_format(fmt: str) -> str:
    from imbaseg.errors import suggestion

    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'.{suggestion(fmt, list(FORMATS))} "
                        f"Choose one of: {', '.join(FORMATS)}.")
    return fmt


def check_opset(opset: int | None) -> int:
    """The ONNX opset to write: ``opset`` or the default; UserError for one that the installed onnx or
    torch's exporter does not write."""
    import onnx
    from torch.onnx import _constants

    opset = DEFAULT_OPSET if opset is None else opset
    highest = min(onnx.defs.onnx_opset_version(), _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    if not MIN_ONNX_OPSET <= opset <= highest:
        raise UserError(f"--opset {opset} is not supported here: onnx {onnx.__version__} with torch's "
                        f"exporter writes opsets {MIN_ONNX_OPSET} to {highest}; pass one of them")
    return opset


def _check_plan(cfg, run_dir) -> None:
    from imbaseg.evaluation.inference import plan_for

    plan = plan_for(cfg, "train")
    if plan.window is not None:
        raise UserError(
            f"{run_dir} trained on patches (data.patch_size={list(cfg.data.patch_size)}), which predict "
            "runs in sliding windows; an exported graph holds no sliding windows. Export a run trained on "
            "whole images (data.size), or predict with the run folder"
        )


def _require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"exporting needs the '{module}' package: pip install 'imbaseg[{extra}]'")


# ----------------------------------------------------------------------------- export

def export_run(run_dir, fmt: str = "onnx", checkpoint: str = "best", out=None, opset: int | None = None,
               probabilities: bool = False, temperature=None, dtype: str = "uint8", threshold=None,
               force: bool = False) -> dict:
    """Export a run folder's model with its preprocessing (module doc); returns the description
    (the sidecar's content) plus ``file`` and ``sidecar`` (paths).

    out: the model file (default ``RUN_DIR/export/<checkpoint>.onnx|.pt``); the sidecar is its name
    plus ``.json`` (``best.onnx.json``). Existing files are refused unless ``force``. temperature: None,
    a number > 0 or "auto" (``evaluate --calibrate``'s, for this checkpoint). threshold: None = the run's.
    """
    import torch

    from imbaseg.evaluation.calibrate import resolve_temperature, scaled_threshold
    from imbaseg.evaluation.predict import _check_threshold
    from imbaseg.training.run_dir import RunDir, load_run

    check_format(fmt)
    if dtype not in DTYPES:
        raise UserError(f"unknown --dtype '{dtype}': choose uint8 or float32")
    if fmt == "onnx":
        _require("onnx", "onnx")
    folder = RunDir(run_dir)
    folder.check()
    run = load_run(run_dir, checkpoint, "cpu")
    cfg = run.config
    _check_plan(cfg, run_dir)
    size = [int(s) for s in cfg.data.size] if cfg.data.size else []
    opset = check_opset(opset) if fmt == "onnx" else None
    thr = cfg.train.threshold if threshold is None else _check_threshold(threshold)
    temp = resolve_temperature(run_dir, temperature, checkpoint, run.checkpoint.get("epoch"))
    out = Path(out) if out is not None else folder.export_file(checkpoint, FORMATS[fmt])
    sidecar = out.with_name(out.name + ".json")
    _check_out(out, sidecar, fmt, force)
    raw = thr if temp is None else scaled_threshold(thr, temp)
    info = describe(run, fmt, checkpoint, size, thr, raw, temp, probabilities, dtype, opset)
    graph = build_graph(run.model, cfg.data.in_channels, size, dtype, raw, probabilities, temp, fmt == "onnx")
    example = _example(dtype, size)
    with torch.no_grad():
        if fmt == "torchscript":
            _write_torchscript(graph, info, out)
        else:
            _write_onnx(graph, example, info, out, opset)
    from imbaseg.paths import atomic_write_text

    atomic_write_text(sidecar, json.dumps(info, indent=2) + "\n")
    return {**info, "file": str(out), "sidecar": str(sidecar)}


def _check_out(out: Path, sidecar: Path, fmt: str, force: bool) -> None:
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name the model file, e.g. {out / ('model' + FORMATS[fmt])}"
                        )
    if out.suffix != FORMATS[fmt]:
        raise UserError(f"--out {out}: a {fmt} export is a {FORMATS[fmt]} file; name it so")
    if not force:
        for p in (out, sidecar):
            if p.exists():
                raise UserError(f"{p} already exists; use --force to overwrite it or choose another --out")


def build_graph(model, in_channels: int, size: list[int], dtype: str, threshold: float,
                probabilities: bool, temperature: float | None, matrix_resize: bool = False):
    """The scripted ``ExportGraph`` around ``model`` (eval mode, CPU); see the module doc. matrix_resize:
    the resize as weight-matrix products (``resize_matrices``, for ONNX) instead of aten's kernel."""
    import torch

    model = model.eval().cpu()
    m = int(getattr(model, "multiple", 16))
    side = 2 * m  # a multiple, at least 2x it: the model's own pad_to_multiple leaves it alone
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about the shape arithmetic that is a no-op here
        net = torch.jit.trace(model, torch.zeros(1, in_channels, side, side), check_trace=False)
        graph = _graph_class()(net, m, in_channels, size, dtype == "uint8", threshold, probabilities,
                               1.0 if temperature is None else float(temperature), matrix_resize)
        return torch.jit.script(graph.eval())


def _example(dtype: str, size: list[int]):
    import torch

    h, w = (size[0], size[1]) if size else (64, 80)
    if dtype == "uint8":
        return torch.randint(0, 256, (2, h + 3, w + 5, 3), dtype=torch.uint8, generator=torch.Generator()
                             .manual_seed(0))
    return torch.rand(2, h + 3, w + 5, 3, generator=torch.Generator().manual_seed(0)) * 255


def describe(run, fmt, checkpoint, size, thr, raw, temp, probabilities, dtype, opset) -> dict[str, Any]:
    """The export's description: the sidecar JSON, also stored inside the model file."""
    import imbaseg

    cfg = run.config
    return {
        "format": fmt,
        "imbaseg_version": imbaseg.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_dir": str(run.run_dir),
        "checkpoint": {"which": checkpoint, "epoch": run.checkpoint.get("epoch"),
                       "file": str(run.checkpoint_file)},
        "dataset": cfg.data.dataset,
        "loss": cfg.loss_label,
        "model": cfg.model.name,
        "input": {"name": "image", "layout": "NHWC", "channels": 3, "dtype": dtype,
                  "note": "any N, H, W; grey images: repeat the channel"},
        "output": {"name": "probabilities" if probabilities else "mask", "layout": "NHW",
                   "dtype": "float32" if probabilities else "uint8",
                   "values": "probabilities in [0, 1]" if probabilities else "0 or 255"},
        "in_channels": cfg.data.in_channels,
        "training_size": size or None,
        "resize": ("antialiased bilinear to training_size (rounded to 0..255 for uint8 input), and back"
                   if size else "none: the network sees native pixels"),
        "normalization": "per-image z-score over channels and pixels, std floored at 1e-6",
        "padding": "to a multiple of the network's reduction (reflect; zeros for tiny images), cropped back",
        "threshold": thr,
        "threshold_applied": raw,  # on the unscaled probabilities: the same mask as p_T >= threshold
        "temperature": temp,
        "opset": opset,
    }


def _write_torchscript(graph, info: dict, out: Path) -> None:
    import torch

    from imbaseg.paths import atomic_path

    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.save's deprecation notice (the format still loads)
        torch.jit.save(graph, str(tmp), _extra_files={f"{METADATA_KEY}.json": json.dumps(info)})


def _write_onnx(graph, example, info: dict, out: Path, opset: int) -> None:
    import io

    import onnx
    import torch

    from imbaseg.paths import atomic_write_bytes

    name = info["output"]["name"]
    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(graph, (example,), buf, dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=[name], dynamic_axes={"image": {0: "n", 1: "height", 2: "width"},
                                                             name: {0: "n", 1: "height", 2: "width"}})
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(info)})
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, proto.SerializeToString())


# ----------------------------------------------------------------------------- running an export

def is_exported(path) -> bool:
    """True for a file with an export's suffix (``.onnx``, ``.pt``); a run folder is a folder."""
    p = Path(path)
    return p.suffix in FORMATS.values() and not p.is_dir()


class ExportedModel:
    """An exported model file, loaded: ``run(batch)`` maps (N, H, W, 3) images to the graph's output.

    ``info``: its description (the sidecar's content). ONNX runs in onnxruntime (CUDA when ``device``
    asks for it and the CUDA provider is installed), TorchScript in torch.
    """

    def __init__(self, path, device: str = "auto"):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"exported model {self.path} not found: pass a .onnx or .pt from imbaseg export")
        self.format = "onnx" if self.path.suffix == ".onnx" else "torchscript"
        self.info, self._run = _load_onnx(self.path, device) if self.format == "onnx" else \
            _load_torchscript(self.path, device)

    @property
    def dtype(self) -> str:
        return self.info["input"]["dtype"]

    @property
    def probabilities(self) -> bool:
        return self.info["output"]["name"] == "probabilities"

    def run(self, batch):
        """(N, H, W, 3) numpy uint8 or float -> (N, H, W) numpy (uint8 0/255 or float32 probabilities)."""
        import numpy as np

        a = np.ascontiguousarray(batch, dtype=np.uint8 if self.dtype == "uint8" else np.float32)
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"expected an (N, H, W, 3) batch, got shape {a.shape}")
        return self._run(a)


def _bad_file(path: Path, exc: BaseException) -> UserError:
    return UserError(f"cannot load {path} as an exported imbaseg model ({exc.__class__.__name__}): pass a "
                     "file written by imbaseg export, or a run folder")


def _load_onnx(path: Path, device: str):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("running an .onnx model needs onnxruntime: pip install 'imbaseg[onnx]'") from None
    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    elif device.startswith("cuda"):
        raise UserError(f"--device {device}: this onnxruntime has no CUDA provider; use --device cpu")
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # warnings about unused initialisers are noise here
        session = ort.InferenceSession(str(path), opts, providers=providers)
        meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    except Exception as exc:  # a truncated or foreign file
        raise _bad_file(path, exc) from exc
    info = _parse_info(path, meta)
    name = session.get_inputs()[0].name
    return info, lambda a: session.run(None, {name: a})[0]


def _load_torchscript(path: Path, device: str):
    import numpy as np
    import torch

    from imbaseg.training.device import resolve_device

    dev = resolve_device(device)
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            module = torch.jit.load(str(path), map_location=dev, _extra_files=extra)
    except Exception as exc:
        raise _bad_file(path, exc) from exc
    info = _parse_info(path, extra[f"{METADATA_KEY}.json"] or None)

    def run(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return module(torch.from_numpy(a).to(dev)).cpu().numpy()

    return info, run


def _parse_info(path: Path, text) -> dict:
    try:
        info = json.loads(text) if text else None
    except ValueError:
        info = None
    if not isinstance(info, dict) or "input" not in info or "output" not in info:
        raise UserError(f"{path} holds no imbaseg description: it was not written by imbaseg export. "
                        "Export the run again (imbaseg export RUN_DIR)")
    return info


def read_exported(path) -> dict:
    """The description stored inside an exported model file (UserError for other files)."""
    return ExportedModel(path, "cpu").info


def threshold_text(info: dict) -> str:
    t, temp = info.get("threshold"), info.get("temperature")
    return f"{t}" + ("" if temp is None or not math.isfinite(temp) else f" (temperature {temp:.4g})")
