"""Figures and tables for study reports: PNG plots (matplotlib, Agg) and text/Markdown tables.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so they work
without a display, in worker processes and in notebooks, and leave matplotlib's global backend alone.
PNG files carry no software-version metadata, so redrawing the same data gives the same file.

Traces are 1-d sequences indexed by iteration, or (x, y) pairs. On a log axis, entries <= 0 cannot be
drawn: they are left out and the legend says so ("zeros not drawn"); non-finite entries end a line, and
the legend gives the iteration where a trace blew up.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
_STYLES = ["-", "--", ":", "-."]


def _figure(nrows: int, ncols: int, width: float, height: float, sharey: bool):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    return figure, axes


def _save(figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, metadata={"Software": None})
    return path


def _xy(trace: Any) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore"):  # signalling NaNs (e.g. in bfloat16) widen quietly
        if isinstance(trace, tuple) and len(trace) == 2:
            x, y = (np.asarray(t).astype(np.float64) for t in trace)
        else:
            y = np.asarray(trace).astype(np.float64)
            x = np.arange(y.size, dtype=np.float64)
    if y.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"a trace must be 1-d (or an (x, y) pair of equal 1-d arrays), got {y.shape}")
    return x, y


def _style_for(labels: Iterable[str]) -> dict[str, tuple[str, str]]:
    """A fixed (color, linestyle) per label, the same in every panel of a figure."""
    ordered = sorted(set(labels))
    return {label: (_COLORS[i % len(_COLORS)], _STYLES[(i // len(_COLORS)) % len(_STYLES)])
            for i, label in enumerate(ordered)}


def _draw_trace(axis, label: str, trace: Any, style: tuple[str, str], logy: bool) -> None:
    x, y = _xy(trace)
    notes = []
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        notes.append(f"non-finite from iteration {int(x[bad[0]])}" if np.all(~np.isfinite(y[bad[0]:]))
                     else f"non-finite at {bad.size} iterations")
    shown = y.copy()
    if logy:
        with np.errstate(invalid="ignore"):
            nonpositive = np.isfinite(y) & (y <= 0)
        if nonpositive.any():
            notes.append("zeros not drawn" if np.all(y[nonpositive] == 0) else "values <= 0 not drawn")
            shown[nonpositive] = np.nan
    shown[~np.isfinite(y)] = np.nan
    text = label + (f" ({'; '.join(notes)})" if notes else "")
    color, linestyle = style
    axis.plot(x, shown, color=color, linestyle=linestyle, linewidth=1.3, label=text)


def plot_panels(path: Path | str, panels: Mapping[str, Mapping[str, Any]], *,
                xlabel: str = "iteration", ylabel: str = "", title: str | None = None,
                logy: bool = True, logx: bool = False, ncols: int = 2, sharey: bool = True,
                reference_lines: Mapping[str, Mapping[str, float]] | None = None,
                width: float = 5.0, height: float = 3.6) -> Path:
    """Small multiples: one panel per key of `panels`, one line per trace in it; returns the path.

    panels: {panel title: {line label: trace}}; a label keeps its color and style in every panel.
    reference_lines: {panel title: {label: y}} horizontal dotted lines (e.g. a predicted floor).
    """
    if not panels:
        raise ValueError("nothing to plot: no panels")
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    figure, axes = _figure(nrows, ncols, width, height, sharey)
    styles = _style_for(label for traces in panels.values() for label in traces)
    flat = axes.ravel()
    for axis, (panel_title, traces) in zip(flat, panels.items()):
        for label, trace in traces.items():
            _draw_trace(axis, label, trace, styles[label], logy)
        for line_label, y in (reference_lines or {}).get(panel_title, {}).items():
            if math.isfinite(y) and (y > 0 or not logy):
                axis.axhline(y, color="black", linestyle=":", linewidth=1.0)
                axis.annotate(line_label, xy=(1.0, y), xycoords=("axes fraction", "data"),
                              ha="right", va="bottom", fontsize=7)
        if logy:
            axis.set_yscale("log")
        if logx:
            axis.set_xscale("log")
        axis.set_title(panel_title, fontsize=10)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(True, which="major", alpha=0.3)
        if traces:
            axis.legend(fontsize=7)
    for axis in flat[len(panels):]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_traces(path: Path | str, traces: Mapping[str, Any], *, title: str = "", **options: Any) -> Path:
    """One panel of traces ({label: trace}); options as for :func:`plot_panels`."""
    reference = options.pop("reference_lines", None)
    return plot_panels(path, {title: traces}, ncols=1,
                       reference_lines={title: reference} if reference else None, **options)


def plot_comparison(path: Path | str, points: Mapping[str, Sequence[tuple[float, float]]], *,
                    xlabel: str = "predicted", ylabel: str = "measured", title: str = "",
                    width: float = 5.0, height: float = 4.5) -> Path:
    """Measured against predicted, log-log, with the line y = x: {label: [(predicted, measured), ...]}.

    Points with a non-positive or non-finite coordinate are left out (the legend counts them).
    """
    figure, axes = _figure(1, 1, width, height, sharey=False)
    axis = axes[0, 0]
    styles = _style_for(points)
    low, high = math.inf, -math.inf
    for label, pairs in points.items():
        xy = np.asarray(list(pairs), dtype=np.float64).reshape(-1, 2)
        keep = np.all(np.isfinite(xy) & (xy > 0), axis=1)
        dropped = int((~keep).sum())
        text = label + (f" ({dropped} not drawn)" if dropped else "")
        if keep.any():
            axis.scatter(xy[keep, 0], xy[keep, 1], s=18, color=styles[label][0], label=text)
            low, high = min(low, xy[keep].min()), max(high, xy[keep].max())
        else:
            axis.scatter([], [], s=18, color=styles[label][0], label=text)
    if math.isfinite(low):
        axis.plot([low, high], [low, high], color="black", linestyle=":", linewidth=1.0, label="y = x")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(fontsize=7)
    return _save(figure, path)


# --------------------------------------------------------------------------------------------------
# tables

def format_number(value: Any, digits: int = 3) -> str:
    """Numbers in `digits` significant digits (ints in full); None -> ""; numeric strings too."""
    if value is None:
        return ""
    if isinstance(value, str):
        for parse in (int, float):
            try:
                value = parse(value)
                break
            except ValueError:
                continue
        else:
            return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return repr(value)  # nan, inf, -inf
        return "0" if value == 0 else f"{value:.{digits}g}"
    return str(value)


def _cells(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None,
           digits: int) -> tuple[list[str], list[list[str]]]:
    if columns is None:
        columns = []
        for row in rows:
            columns += [key for key in row if key not in columns]
    return list(columns), [[format_number(row.get(c), digits) for c in columns] for row in rows]


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
                   digits: int = 3, headers: Mapping[str, str] | None = None) -> str:
    """A GitHub Markdown table; numbers right-aligned; `headers` renames columns for display."""
    columns, body = _cells(rows, columns, digits)
    names = [(headers or {}).get(c, c) for c in columns]
    numeric = [all(_is_number(r[i]) or r[i] == "" for r in body) and any(r[i] for r in body)
               for i in range(len(columns))]
    lines = ["| " + " | ".join(names) + " |",
             "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
               digits: int = 3) -> str:
    """A plain fixed-width table for terminals (numbers right-aligned, text left-aligned)."""
    columns, body = _cells(rows, columns, digits)
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    numeric = [all(_is_number(r[i]) or r[i] == "" for r in body) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(w) if num else cell.ljust(w)
                         for cell, w, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in body]) + "\n"


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def markdown_provenance(out_dir: Path | str) -> str:
    """One Markdown paragraph on where the numbers come from, read from out_dir/provenance.json.

    For the foot of report.md (the report hook runs before the run's end time is known, so this states
    the start time; provenance.json keeps everything).
    """
    import json

    record = json.loads((Path(out_dir) / "provenance.json").read_text(encoding="utf-8"))
    git = record.get("git", {})
    commit = git.get("commit", "unknown")
    state = {True: ", with uncommitted changes", False: ""}.get(git.get("dirty"), "")
    where = record.get("platform", {})
    return (f"Computed by precision {record.get('package_version', 'unknown')} "
            f"(commit {commit[:12]}{state}) on {where.get('cpu', '?')} ({where.get('cpu_count', '?')} CPUs), "
            f"{where.get('os', '?')}, Python {where.get('python', '?')}, numpy {where.get('numpy', '?')}; "
            f"{record.get('grid_size', '?')} cells, formats {', '.join(map(str, record.get('formats', [])))}, "
            f"seeds {', '.join(map(str, record.get('seeds', [])))}; run started {record.get('started', '?')} "
            f"with {record.get('executor', '?')}. Full record: `provenance.json`.\n")
