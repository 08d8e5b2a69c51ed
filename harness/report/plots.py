"""Report figures (matplotlib, Agg backend, imported only when a figure is drawn).

* :func:`sweep_figures`: for each swept hyperparameter, every metric against the
  parameter's values, one line per model, with the cells' intervals as bands. The
  points are the configs that change only that parameter (see
  :func:`harness.report_data.sweep_info`).
* :func:`scatter_figures`: for each automatic metric, the metric against the human
  rating, one point per (model, config) coloured by model, with both intervals as
  error bars.

Each returns :class:`FigureImage` values holding PNG bytes, so the caller decides
whether to embed them (HTML) or write them beside the report (Markdown).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FigureImage", "sweep_figures", "scatter_figures", "all_figures"]

HUMAN = "human"


@dataclass(frozen=True)
class FigureImage:
    id: str  # a file-name-safe identifier: sweep-top_k, human-bleu
    title: str
    caption: str
    png: bytes

    def filename(self) -> str:
        return f"{self.id}.png"


def _matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        from ..errors import MissingDependency

        raise MissingDependency("matplotlib", "default", purpose="report plots") from exc
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _colors(models: Sequence[str]) -> dict[str, Any]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    return {m: palette[i % len(palette)] for i, m in enumerate(models)}


def _val(x: Any) -> float:
    return math.nan if x is None else float(x)


def sweep_figures(
    cells: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]],
    sweep: Mapping[str, Any],
    metrics: Sequence[Mapping[str, Any]],
) -> list[FigureImage]:
    """One figure per swept parameter: a panel per metric, a line per model, interval bands.

    ``cells`` is ``model -> config -> metric -> {value, ci_low, ci_high}`` (as in a
    report context), ``sweep`` the ``sweep`` entry of a report context.
    """
    Figure = _matplotlib()
    models = list(cells)
    colors = _colors(models)
    shown = [m for m in metrics if any(_has_value(cells, model, m["name"]) for model in models)]
    out: list[FigureImage] = []
    for param, points in (sweep.get("series") or {}).items():
        if len(points) < 2 or not shown:
            continue
        xs_raw = [p[0] for p in points]
        numeric = _numeric(xs_raw)
        xs = [float(v) for v in xs_raw] if numeric else list(range(len(xs_raw)))
        fig = Figure(figsize=(3.6 * len(shown), 3.2), layout="constrained")
        axes = fig.subplots(1, len(shown), squeeze=False)[0]
        for ax, metric in zip(axes, shown):
            for model in models:
                ys, lo, hi = [], [], []
                for _, config in points:
                    c = cells.get(model, {}).get(config, {}).get(metric["name"], {})
                    ys.append(_val(c.get("value")))
                    lo.append(_val(c.get("ci_low", c.get("value"))))
                    hi.append(_val(c.get("ci_high", c.get("value"))))
                if all(math.isnan(y) for y in ys):
                    continue
                ax.plot(xs, ys, marker="o", color=colors[model], label=model)
                ax.fill_between(xs, lo, hi, color=colors[model], alpha=0.18, linewidth=0)
            ax.set_title(metric.get("label") or metric["name"])
            ax.set_xlabel(param)
            if not numeric:
                ax.set_xticks(xs, [str(v) for v in xs_raw])
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("value (95% interval band)")
        handles, labels = axes[0].get_legend_handles_labels()
        if not handles:
            for ax in axes:
                handles, labels = ax.get_legend_handles_labels()
                if handles:
                    break
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(handles)), frameon=False)
        defaults = sweep.get("defaults") or {}
        others = ", ".join(f"{k}={v}" for k, v in defaults.items() if k != param and k in (sweep.get("params") or {}))
        caption = f"Every metric against {param}" + (f" (other swept parameters at their defaults: {others})" if others else "") + "; one line per model, bands are the cells' 95% intervals."
        out.append(FigureImage(f"sweep-{_safe(param)}", f"Metrics against {param}", caption, _png(fig)))
    return out


def _has_value(cells: Mapping[str, Any], model: str, metric: str) -> bool:
    return any(c.get(metric, {}).get("value") is not None for c in cells.get(model, {}).values())


def scatter_figures(
    cells: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]],
    metrics: Sequence[Mapping[str, Any]],
    correlations: Sequence[Mapping[str, Any]] = (),
) -> list[FigureImage]:
    """One scatter per automatic metric against human ratings, a colour per model, interval error bars."""
    Figure = _matplotlib()
    models = list(cells)
    colors = _colors(models)
    out: list[FigureImage] = []
    for metric in metrics:
        name = metric["name"]
        if name == HUMAN:
            continue
        points = []
        for model in models:
            for config, by_metric in cells[model].items():
                m, h = by_metric.get(name, {}), by_metric.get(HUMAN, {})
                if m.get("value") is not None and h.get("value") is not None:
                    points.append((model, m, h))
        if not points:
            continue
        fig = Figure(figsize=(4.6, 3.8), layout="constrained")
        ax = fig.subplots()
        for model in models:
            mine = [(m, h) for mm, m, h in points if mm == model]
            if not mine:
                continue
            x = [float(m["value"]) for m, _ in mine]
            y = [float(h["value"]) for _, h in mine]
            xerr = [[max(0.0, xv - _val(m.get("ci_low", xv))) for xv, (m, _) in zip(x, mine)], [max(0.0, _val(m.get("ci_high", xv)) - xv) for xv, (m, _) in zip(x, mine)]]
            yerr = [[max(0.0, yv - _val(h.get("ci_low", yv))) for yv, (_, h) in zip(y, mine)], [max(0.0, _val(h.get("ci_high", yv)) - yv) for yv, (_, h) in zip(y, mine)]]
            ax.errorbar(x, y, xerr=_nan0(xerr), yerr=_nan0(yerr), fmt="o", color=colors[model], ecolor=colors[model], elinewidth=0.8, alpha=0.85, capsize=2, label=model)
        label = metric.get("label") or name
        ax.set_xlabel(label)
        ax.set_ylabel("Human (0-1)")
        rho = next((c for c in correlations if c.get("metric") == name and c.get("scope") == "all" and c.get("level") == "system"), None)
        title = f"{label} vs human"
        if rho is not None and rho.get("spearman") is not None:
            title += f" (Spearman {rho['spearman']:.2f}, n={rho['n']})"
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize="small")
        caption = f"{label} against the human rating, one point per (model, config), coloured by model; bars are 95% intervals."
        out.append(FigureImage(f"human-{_safe(name)}", f"{label} against human ratings", caption, _png(fig)))
    return out


def _nan0(err: list[list[float]]) -> list[list[float]]:
    return [[0.0 if math.isnan(v) else v for v in side] for side in err]


def all_figures(context: Mapping[str, Any]) -> list[FigureImage]:
    """Every report figure from a report context (``cells``, ``sweep``, ``metrics``, ``correlations``)."""
    cells = context.get("cells") or {}
    metrics = context.get("metrics") or []
    return sweep_figures(cells, context.get("sweep") or {}, metrics) + scatter_figures(cells, metrics, context.get("correlations") or [])
