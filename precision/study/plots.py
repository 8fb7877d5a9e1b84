"""Figures and tables for study reports: PNG plots (matplotlib, Agg) and text/Markdown tables.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so they work
without a display, in worker processes and in notebooks, and leave matplotlib's global backend alone.
PNG files carry no software-version metadata, so redrawing the same data gives the same file.

Traces are 1-d sequences indexed by iteration, or (x, y) pairs. On a log axis, entries <= 0 cannot be
drawn: they are left out and the legend says so ("zeros not drawn"); non-finite entries end a line, and
the legend gives the iteration where a trace blew up.

Speed (a report draws a few dozen figures): margins are fixed in inches instead of computed by a layout
engine (constrained layout measures every tick label twice per draw), log axes have major ticks only,
labelled "1e-8" rather than typeset with mathtext, and legends sit in a fixed corner instead of searching
for the "best" one. A 6-panel figure takes ~0.5 s instead of ~2 s.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
_STYLES = ["-", "--", ":", "-."]


# margins in inches: room for tick labels and axis labels on the left and bottom, a title on top
_MARGIN = {"left": 0.8, "right": 0.15, "bottom": 0.55, "top": 0.4, "suptitle": 0.3,
           "between_columns": 0.75, "between_rows": 0.75}


def _figure(nrows: int, ncols: int, width: float, height: float, sharey: bool,
            suptitle: bool = False, legend_row: bool = False):
    """A Figure on the Agg canvas with nrows × ncols panels of width × height inches each (plus a
    strip on top for a title, and one more for a figure legend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    top_strip = (_MARGIN["suptitle"] if suptitle else 0.0) + (_MARGIN["suptitle"] if legend_row else 0.0)
    fig_width, fig_height = width * ncols, height * nrows + top_strip
    figure = Figure(figsize=(fig_width, fig_height))
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    # each panel's box: its share of the width/height minus the fixed margins
    panel_w = (fig_width - _MARGIN["left"] - _MARGIN["right"]
               - (ncols - 1) * _MARGIN["between_columns"]) / ncols
    panel_h = (fig_height - _MARGIN["bottom"] - _MARGIN["top"] - top_strip
               - (nrows - 1) * _MARGIN["between_rows"]) / nrows
    figure.subplots_adjust(
        left=_MARGIN["left"] / fig_width, right=1.0 - _MARGIN["right"] / fig_width,
        bottom=_MARGIN["bottom"] / fig_height,
        top=1.0 - (_MARGIN["top"] + top_strip) / fig_height,
        wspace=_MARGIN["between_columns"] / panel_w, hspace=_MARGIN["between_rows"] / panel_h)
    return figure, axes


def _log_power_label(value: float, _position: Any = None) -> str:
    """Tick label of a power of ten on a log axis: 1e-08 -> "1e-8" (other values: none)."""
    if not (value > 0 and math.isfinite(value)):
        return ""
    exponent = math.log10(value)
    return f"1e{round(exponent)}" if abs(exponent - round(exponent)) < 1e-9 else ""


def _log_axis(axis, which: str) -> None:
    """Log scale on axis.xaxis/yaxis ("x"/"y"): major ticks at powers of ten with plain labels (and
    at 2 and 5 times them when the data span less than 3 decades), no minor ticks.
    Call it after the data are drawn: the span is read from the autoscaled limits."""
    from matplotlib import ticker

    getattr(axis, f"set_{which}scale")("log")
    scale_axis = getattr(axis, f"{which}axis")
    low, high = getattr(axis, f"get_{which}lim")()
    narrow = low > 0 and math.isfinite(high) and high / low < 1e3
    if narrow:
        scale_axis.set_major_locator(ticker.LogLocator(base=10.0, subs=(1.0, 2.0, 5.0), numticks=12))
        scale_axis.set_major_formatter(ticker.FuncFormatter(
            lambda value, _position=None: f"{value:g}" if value > 0 else ""))
    else:
        scale_axis.set_major_locator(ticker.LogLocator(base=10.0, numticks=8))
        scale_axis.set_major_formatter(ticker.FuncFormatter(_log_power_label))
    scale_axis.set_minor_locator(ticker.NullLocator())


def _save(figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, metadata={"Software": None})
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


def _draw_trace(axis, label: str, trace: Any, style: tuple[str, str], logy: bool) -> str:
    """Draw one trace; returns its legend text (the label, plus notes on values not drawn)."""
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
    return text


def plot_panels(path: Path | str, panels: Mapping[str, Mapping[str, Any]], *,
                xlabel: str = "iteration", ylabel: str = "", title: str | None = None,
                logy: bool = True, logx: bool = False, ncols: int = 2, sharey: bool = True,
                reference_lines: Mapping[str, Mapping[str, float]] | None = None,
                width: float = 5.0, height: float = 3.6, legend_location: str = "upper right") -> Path:
    """Small multiples: one panel per key of `panels`, one line per trace in it; returns the path.

    panels: {panel title: {line label: trace}}; a label keeps its color and style in every panel.
    reference_lines: {panel title: {label: y}} horizontal dotted lines (e.g. a predicted floor).
    width, height: inches per panel. legend_location: a matplotlib legend loc (a fixed corner is much
    faster to draw than "best"), or "figure": one legend for the whole figure under its title (panels
    keep their own legend only for lines with notes, e.g. "zeros not drawn").
    """
    if not panels:
        raise ValueError("nothing to plot: no panels")
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    shared_legend = legend_location == "figure"
    figure, axes = _figure(nrows, ncols, width, height, sharey,
                           suptitle=bool(title) or shared_legend, legend_row=shared_legend)
    styles = _style_for(label for traces in panels.values() for label in traces)
    flat = axes.ravel()
    handles = {}
    for axis, (panel_title, traces) in zip(flat, panels.items()):
        noted = []
        for label, trace in traces.items():
            text = _draw_trace(axis, label, trace, styles[label], logy)
            handles.setdefault(label, axis.lines[-1])
            if text != label:
                noted.append(axis.lines[-1])
        for line_label, y in (reference_lines or {}).get(panel_title, {}).items():
            if math.isfinite(y) and (y > 0 or not logy):
                axis.axhline(y, color="black", linestyle=":", linewidth=1.0)
                axis.annotate(line_label, xy=(1.0, y), xycoords=("axes fraction", "data"),
                              ha="right", va="bottom", fontsize=7)
        if logy:
            _log_axis(axis, "y")
        if logx:
            _log_axis(axis, "x")
        axis.set_title(panel_title, fontsize=10)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(True, which="major", alpha=0.3)
        if traces and not shared_legend:
            axis.legend(fontsize=7, loc=legend_location)
        elif noted:
            axis.legend(handles=noted, fontsize=7, loc="upper right")
    for axis in flat[len(panels):]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title, y=1.0 - 0.05 / figure.get_figheight(), va="top")
    if shared_legend and handles:
        labels = sorted(handles)
        figure.legend([handles[k] for k in labels], labels, loc="upper center", ncol=len(labels),
                      fontsize=8, frameon=False,
                      bbox_to_anchor=(0.5, 1.0 - (_MARGIN["suptitle"] + 0.02) / figure.get_figheight()))
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
    _log_axis(axis, "x")
    _log_axis(axis, "y")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(fontsize=7, loc="upper left")
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
