"""Readable names for figures and tables: loss labels ("Boundary Gaussian Loss"), dataset titles
("CVC-ClinicDB") and metric titles ("HD95").

Pure string functions (no torch, no matplotlib). A registry name that is not in ``LOSS_LABELS`` falls
back to its words in title case, so every loss, new ones included, gets a label.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

# The study's losses first, then the classic ones; the value omits the trailing " Loss".
LOSS_LABELS = {
    "bce": "BCE",
    "dynamit-batch": "Dynamit Batch-Wise",
    "dynamit-image": "Dynamit Image-Wise",
    "boundary-gaussian": "Boundary Gaussian",
    "dou": "Boundary DoU",
    "boundary-dou": "Boundary Gaussian + DoU",
    "dice": "Dice",
    "iou": "IoU",
    "tversky": "Tversky",
    "focal-tversky": "Focal Tversky",
    "focal": "Focal",
    "combo": "Combo",
    "unified-focal": "Unified Focal",
    "unified-focal-symmetric": "Symmetric Unified Focal",
    "cldice": "clDice",
    "boundary": "Boundary",
    "hausdorff-dt": "Hausdorff DT",
    "lovasz": "Lovász Hinge",
}

DATASET_TITLES = {
    "cvc": "CVC-ClinicDB",
    "drive": "DRIVE",
    "isic2018": "ISIC 2018",
    "folder": "Custom data",
    "synthetic-polyp": "Synthetic polyps",
    "synthetic-vessel": "Synthetic vessels",
    "synthetic-lesion": "Synthetic lesions",
}

METRIC_TITLES = {
    "dice": "Dice",
    "iou": "IoU",
    "precision": "Precision",
    "recall": "Recall",
    "specificity": "Specificity",
    "accuracy": "Accuracy",
    "hd95": "HD95",
    "assd": "ASSD",
    "nsd": "NSD",
    "cldice": "clDice",
    "auc_roc": "AUC-ROC",
    "auc_pr": "AUC-PR",
    "lesion_recall": "Lesion recall",
    "lesion_precision": "Lesion precision",
    "lesion_f1": "Lesion F1",
    "lesion_detected": "Lesions detected",
    "lesion_missed": "Lesions missed",
    "lesion_fp": "FP components",
    "ece": "ECE",
    "brier": "Brier",
}

ACRONYMS = {"bce": "BCE", "ce": "CE", "dt": "DT", "iou": "IoU", "dou": "DoU", "hd": "HD", "wce": "WCE"}
PARAM_SYMBOLS = {"sigma": "σ", "lambda_dou": "λ", "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ"}


def dataset_title(name: str) -> str:
    """'cvc' -> 'CVC-ClinicDB'; an unknown name is returned unchanged."""
    return DATASET_TITLES.get(str(name), str(name))


def metric_title(name: str) -> str:
    """'hd95' -> 'HD95'; an unknown name is returned unchanged."""
    return METRIC_TITLES.get(str(name), str(name))


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses: 'a(x=1)+b' -> ['a(x=1)', 'b']."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{PARAM_SYMBOLS.get(k, k)}={_number(v)}" for k, v in params.items())


def base_label(name: str) -> str:
    """The words for one registry name, without ' Loss': 'focal-tversky' -> 'Focal Tversky'."""
    key = str(name).strip().lower()
    if key in LOSS_LABELS:
        return LOSS_LABELS[key]
    words = [w for w in re.split(r"[-_\s]+", key) if w]
    return " ".join(ACRONYMS.get(w, w.capitalize()) for w in words) or str(name)


def _term_label(weight: float, name: str, params: Mapping[str, Any]) -> str:
    label = base_label(name)
    if params:
        label += f" ({_params_text(params)})"
    if weight != 1.0:
        label = f"{_number(weight)} × {label}"
    return label


def _parse_term(text: str) -> tuple[float, str, dict[str, str]]:
    """'0.5*dou(lambda=1)' -> (0.5, 'dou', {'lambda': '1'}); lenient: anything unparsable is a name."""
    weight = 1.0
    m = re.match(r"^\s*([0-9.eE+-]+)\s*\*\s*(.+)$", text)
    if m:
        try:
            weight, text = float(m.group(1)), m.group(2)
        except ValueError:
            pass
    params: dict[str, str] = {}
    m = re.match(r"^([^()]+)\((.*)\)\s*$", text.strip())
    if m:
        text = m.group(1)
        for item in _split_top(m.group(2), ","):
            key, _, value = item.partition("=")
            params[key.strip()] = value.strip()
    return weight, text.strip(), params


def loss_label(spec: str | list | Mapping, params: Mapping[str, Any] | None = None) -> str:
    """A readable label for a loss: a registry name, a compound string, a YAML term list or a config dict.

    'dynamit-batch' -> 'Dynamit Batch-Wise Loss'; 'boundary-gaussian(sigma=4)+0.5*dou' ->
    'Boundary Gaussian (σ=4) + 0.5 × Boundary DoU Loss'; ``params`` are shown only when given.
    """
    if isinstance(spec, Mapping):  # the config's loss section: {name, params, terms}
        if spec.get("terms"):
            return loss_label(list(spec["terms"]))
        return loss_label(str(spec.get("name", "")), spec.get("params") or None)
    if isinstance(spec, (list, tuple)):
        terms = [(float(t.get("weight", 1.0)), str(t.get("name")), dict(t.get("params") or {})) for t in spec]
    else:
        terms = [_parse_term(t) for t in _split_top(str(spec), "+")]
        if len(terms) == 1 and params:
            terms = [(terms[0][0], terms[0][1], {**terms[0][2], **params})]
    if not terms:
        return "Loss"
    return " + ".join(_term_label(*t) for t in terms) + " Loss"


def compact(label: str) -> str:
    """A file-name-friendly form: 'Boundary Gaussian Loss' -> 'BoundaryGaussian'."""
    ascii_text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    words = re.split(r"[^A-Za-z0-9]+", re.sub(r"\s+Loss$", "", ascii_text))
    return "".join(w[:1].upper() + w[1:] for w in words) or "run"
