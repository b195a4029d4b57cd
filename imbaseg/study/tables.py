"""The study's table as Markdown (``table.md``, also shown on the terminal) and LaTeX (``table.tex``).

Per dataset and loss, for each metric: ``mean [95% CI]``, seed SD and the aggregate-then-rank rank;
the best value of each column in bold (rank 1, ties all bold); a dagger where the loss differs from the
reference at Holm-adjusted p < 0.05. Three decimals, two for distances (HD95, ASSD, in pixels).
The LaTeX needs only booktabs: ``\\documentclass{article}\\usepackage{booktabs}`` then ``\\input{table}``.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

from imbaseg.metrics.stats import higher_is_better

PIXEL_METRICS = ("hd95", "assd")


def fmt(metric: str, v) -> str:
    """3 decimals, 2 for distances in pixels and component counts (``metric_digits``); 'n/a' for NaN."""
    from imbaseg.evaluation.comparison import metric_digits

    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.{2 if metric_digits(metric) == 2 else 3}f}"


def unit(metric: str) -> str:
    """' (px)' for the distances, '' otherwise."""
    return " (px)" if metric in PIXEL_METRICS else ""


def _metric_head(metric: str, latex: bool = False) -> str:
    from imbaseg.viz.labels import metric_title

    arrow = (
        ("$\\uparrow$" if latex else "↑") if higher_is_better(metric) else ("$\\downarrow$" if latex else "↓")
    )
    return f"{metric_title(metric)}{unit(metric)} {arrow}"


def _legend(rep, latex: bool = False) -> str:
    """What the table shows, for table.md and the LaTeX caption (the loss label escaped for LaTeX)."""
    ref = rep.labels[rep.study.reference]
    seeds = ", ".join(str(s) for s in sorted(rep.study.seeds))
    text = (
        f"Mean [95% CI] over seeds ({seeds}) and test images: hierarchical percentile bootstrap (seeds, then "
        f"images; {rep.n_boot:,} replicates, seed {rep.seed}). SD: seed-to-seed standard deviation of the "
        "per-seed means. Rank: aggregate-then-rank (1 = best). BOLDWORD: best of the column. DAGGERSIGN: "
        f"differs from the reference, {ref}, at Holm-adjusted p < 0.05 (two-sided Wilcoxon signed-rank test "
        "on the seed-averaged per-image values, adjusted over the losses compared with it)."
    )
    if latex:
        text = latex_escape(text).replace("p \\textless{} 0.05", "$p < 0.05$")
    bold, dagger = ("\\textbf{Bold}", "$^\\dagger$") if latex else ("**Bold**", "†")
    return text.replace("BOLDWORD", bold).replace("DAGGERSIGN", dagger)


def _cells(rep, d, k: int, latex: bool) -> list[str]:
    """mean [CI], SD and rank of loss k of dataset d for every metric, with bold and dagger."""
    out = []
    for m in rep.metrics:
        st, rk = d.stats[m], d.ranking[m]
        mean = fmt(m, st.mean[k])
        if rk.rank[k] == 1:
            mean = f"\\textbf{{{mean}}}" if latex else f"**{mean}**"
        if np.isfinite(st.p_holm[k]) and st.p_holm[k] < 0.05:
            mean += "$^\\dagger$" if latex else "†"
        out += [
            f"{mean} [{fmt(m, st.ci_low[k])}, {fmt(m, st.ci_high[k])}]",
            fmt(m, st.seed_sd[k]),
            str(int(rk.rank[k])),
        ]
    return out


def _dataset_head(d) -> str:
    from imbaseg.viz.labels import dataset_title

    return f"{dataset_title(d.name)} ({d.n_images} images, {d.n_seeds} seed{'s' if d.n_seeds != 1 else ''})"


def _loss_name(rep, d, k: int) -> str:
    loss = d.losses[k]
    return rep.labels[loss] + (" (ref.)" if loss == rep.study.reference else "")


def _notes(rep, d) -> list[str]:
    out = [f"{rep.labels[loss]} dropped: {why}" for loss, why in d.dropped.items()]
    if d.group is not None and d.reference is None:
        out.append(f"no tests: the reference {rep.labels[rep.study.reference]} was dropped")
    return out


# ----------------------------------------------------------------------------- Markdown


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _consensus_markdown(rep) -> list[str]:
    from imbaseg.viz.labels import metric_title

    lines = [
        "## Consensus across datasets",
        "",
        "Mean aggregate-then-rank rank over the datasets (rank in parentheses); * absent from a dataset.",
        "",
        "| Loss | " + " | ".join(metric_title(m) for m in rep.metrics) + " |",
        "| :--- |" + " ---: |" * len(rep.metrics),
    ]
    for k, loss in enumerate(rep.study.losses):
        cells = []
        for m in rep.metrics:
            c = rep.consensus[m]
            flag = "*" if c.absent[k] else ""
            cells.append("n/a" if not c.rank[k] else f"{c.score[k]:.2f} ({c.rank[k]}){flag}")
        lines.append(f"| {_md(rep.labels[loss])} | " + " | ".join(cells) + " |")
    return lines


def table_markdown(rep) -> str:
    """``table.md``: a legend, one table per dataset (with what was dropped), the consensus ranking."""
    lines = [f"# Study {rep.study.name}: {rep.study.split} split", "", _legend(rep), ""]
    head = ["Loss"] + [h for m in rep.metrics for h in (_metric_head(m), "SD", "Rank")]
    for d in rep.datasets:
        lines += [f"## {_dataset_head(d)}", ""]
        if d.group is not None:
            lines += ["| " + " | ".join(head) + " |", "| :--- |" + " ---: |" * (len(head) - 1)]
            for k in range(len(d.losses)):
                lines.append(
                    f"| {_md(_loss_name(rep, d, k))} | " + " | ".join(_cells(rep, d, k, False)) + " |"
                )
            lines.append("")
        else:
            lines += ["Not reported: no loss has all its seeds done.", ""]
        notes = _notes(rep, d)
        if notes:
            lines += [f"- {_md(n)}" for n in notes] + [""]
    if len(rep.reported) > 1:
        lines += _consensus_markdown(rep) + [""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- LaTeX

_LATEX_SPECIAL = {
    "\\": "\\textbackslash{}",
    "&": "\\&",
    "%": "\\%",
    "$": "\\$",
    "#": "\\#",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "<": "\\textless{}",
    ">": "\\textgreater{}",
    "|": "\\textbar{}",
}
_LATEX_SYMBOLS = {
    "×": "$\\times$",
    "±": "$\\pm$",
    "–": "--",
    "—": "---",
    "·": "$\\cdot$",
    "≤": "$\\leq$",
    "≥": "$\\geq$",
    "µ": "$\\mu$",
    "†": "$^\\dagger$",
    "’": "'",
    "‘": "`",
    "“": "``",
    "”": "''",
}
_ACCENTS = {
    "\u0301": "'",
    "\u0300": "`",
    "\u0302": "^",
    "\u0308": '"',
    "\u0303": "~",
    "\u0327": "c",
    "\u030c": "v",
    "\u0304": "=",
}


def _latex_char(ch: str) -> str:
    if ch in _LATEX_SPECIAL:
        return _LATEX_SPECIAL[ch]
    if ch in _LATEX_SYMBOLS:
        return _LATEX_SYMBOLS[ch]
    if ord(ch) < 128:
        return ch
    name = unicodedata.name(ch, "")
    greek = re.match(r"GREEK (SMALL|CAPITAL) LETTER (\w+)$", name)
    if greek:
        letter = greek.group(2).lower()
        return f"$\\{letter.capitalize() if greek.group(1) == 'CAPITAL' else letter}$"
    base, *marks = unicodedata.normalize("NFD", ch)
    if ord(base) < 128 and marks and all(mk in _ACCENTS for mk in marks):
        out = base
        for mk in marks:
            out = f"\\{_ACCENTS[mk]}{{{out}}}"
        return out
    return "?"  # anything else would stop pdflatex; the CSV keeps the real name


def latex_escape(text: str) -> str:
    """Plain text safe inside a LaTeX table cell with pdflatex and no extra packages: the ten special
    characters escaped, Greek letters as math, accented Latin letters as accent commands (Lovász ->
    Lov\\'{a}sz), ×, ± and dashes as their commands; any other non-ASCII character becomes '?'."""
    return "".join(_latex_char(ch) for ch in str(text))


def table_latex(rep) -> str:
    """``table.tex``: a booktabs table (float with caption) that compiles inside
    ``\\documentclass{article}\\usepackage{booktabs}``; datasets as row blocks, metrics as column groups."""
    from imbaseg.viz.labels import dataset_title

    n_cols = 1 + 3 * len(rep.metrics)
    heads = " & ".join(f"\\multicolumn{{3}}{{c}}{{{_metric_head(m, latex=True)}}}" for m in rep.metrics)
    rules = " ".join(f"\\cmidrule(lr){{{2 + 3 * j}-{4 + 3 * j}}}" for j in range(len(rep.metrics)))
    name, split = latex_escape(rep.study.name), latex_escape(rep.study.split)
    caption = f"Study {name}, {split} split. {_legend(rep, True)}"
    lines = [
        f"% imbaseg study report of study '{name}': needs \\usepackage{{booktabs}}",
        "\\begin{table}[tbp]",
        "\\centering",
        "\\scriptsize",
        "\\setlength{\\tabcolsep}{2.5pt}",
        f"\\caption{{{caption}}}",
        "\\begin{tabular}{l" + "rrr" * len(rep.metrics) + "}",
        "\\toprule",
        f" & {heads} \\\\",
        rules,
        "Loss" + " & Mean [95\\% CI] & SD & Rank" * len(rep.metrics) + " \\\\",
    ]
    for d in rep.datasets:
        lines += [
            "\\midrule",
            f"\\multicolumn{{{n_cols}}}{{l}}{{\\textit{{{latex_escape(_dataset_head(d))}}}}} \\\\",
        ]
        for k in range(len(d.losses)):
            cells = [latex_escape(_loss_name(rep, d, k)), *_cells(rep, d, k, True)]
            lines.append(" & ".join(cells) + " \\\\")
        notes = (
            _notes(rep, d)
            if d.group is not None
            else [f"{dataset_title(d.name)}: not reported, no loss has all its seeds done"]
        )
        for note in notes:
            lines.append(f"\\multicolumn{{{n_cols}}}{{l}}{{\\textit{{{latex_escape(note)}}}}} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)
