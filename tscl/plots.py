"""PNG plots for run folders (training curves, accuracy / forecasting bars, forecasts, augmentation views).

Figures are drawn with :class:`matplotlib.figure.Figure` on an Agg canvas, never through ``pyplot``: the
caller's pyplot state and selected backend are left untouched, and nothing needs a display. Every function
writes its PNG atomically (temp file in the same directory, fsync, ``os.replace``) and returns the path.
The image size in pixels is ``figsize * dpi`` (no tight bbox), so it is predictable.
"""

from __future__ import annotations

import io as _io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tscl.errors import DataError
from tscl.io import atomic_write_bytes

__all__ = [
    "DPI",
    "plot_training_curve",
    "plot_classification",
    "plot_forecast_metrics",
    "plot_forecast_example",
    "plot_series_with_views",
    "plot_learned_augmentation",
]

DPI = 110
_OURS = "tab:blue"
_REF = "tab:gray"


def _new_figure(figsize: tuple[float, float], dpi: int) -> Figure:
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return atomic_write_bytes(path, buf.getvalue())


def _as_1d(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be numeric, got {type(x).__name__}: {e}") from e
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D (one channel), got shape {arr.shape}; select a channel first")
    return arr


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _opt_float(row: dict, key: str) -> float:
    v = row.get(key)
    return float("nan") if v is None else float(v)


def _grouped_bars(
    ax,
    labels: Sequence[str],
    ours: np.ndarray,
    ref: np.ndarray,
    *,
    ours_label: str = "tscl",
    ref_label: str = "reference",
):
    """Bars of ``ours`` next to ``ref`` (NaN reference entries are simply not drawn), with value labels."""
    x = np.arange(len(labels))
    has_ref = bool(np.isfinite(ref).any())
    width = 0.38 if has_ref else 0.6
    offset = width / 2 if has_ref else 0.0
    # a dataset without a reference value gets its single bar centred on its tick
    bars = ax.bar(np.where(np.isfinite(ref), x - offset, x), ours, width, label=ours_label, color=_OURS)
    ax.bar_label(bars, labels=[_fmt(v) for v in ours], padding=2, fontsize=7)
    if has_ref:
        ok = np.isfinite(ref)
        rbars = ax.bar(x[ok] + offset, ref[ok], width, label=ref_label, color=_REF)
        ax.bar_label(rbars, labels=[_fmt(v) for v in ref[ok]], padding=2, fontsize=7)
    ax.set_xticks(x)
    rotate = len(labels) > 6 or max((len(s) for s in labels), default=0) > 10
    ax.set_xticklabels(labels, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    finite = np.concatenate([ours[np.isfinite(ours)], ref[np.isfinite(ref)]])
    top = float(finite.max()) if finite.size else 1.0
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def plot_training_curve(
    losses: Sequence[float],
    path: str | os.PathLike,
    title: str = "training loss",
    *,
    figsize: tuple[float, float] = (6.4, 4.0),
    dpi: int = DPI,
) -> Path:
    """Loss per iteration (plus a moving average when there are many points); returns the PNG path."""
    y = _as_1d(losses, "losses")
    if y.size == 0:
        raise DataError("losses is empty: nothing to plot (did training run for at least one iteration?)")
    x = np.arange(1, y.size + 1)
    fig = _new_figure(figsize, dpi)
    ax = fig.add_subplot()
    ax.plot(
        x,
        y,
        color=_OURS,
        alpha=0.45 if y.size >= 50 else 1.0,
        lw=1,
        marker="o" if y.size < 30 else None,
        ms=3,
        label="loss",
    )
    if y.size >= 50:
        k = max(5, y.size // 25)
        smooth = np.convolve(np.nan_to_num(y, nan=np.nanmean(y)), np.ones(k) / k, mode="valid")
        ax.plot(x[k - 1 :], smooth, color="tab:red", lw=1.8, label=f"moving average ({k})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_classification(
    results: Sequence[dict],
    path: str | os.PathLike,
    title: str = "classification accuracy",
    *,
    ylabel: str = "accuracy",
    series: tuple[str, str] = ("tscl", "reference"),
    xlabel: str = "dataset",
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> Path:
    """Grouped bars: tscl accuracy vs the reference accuracy (when given) per dataset, with value labels.
    (Any per-group value works: ``ylabel`` names it, ``xlabel`` the groups, ``series`` the two bar series.)

    ``results``: dicts with ``dataset``, ``accuracy`` and optionally ``reference``. Default width grows with the
    number of datasets: ``figsize = (max(6.4, 0.6 * n + 2), 4.5)``.
    """
    if not results:
        raise DataError("results is empty: nothing to plot")
    try:
        labels = [str(r["dataset"]) for r in results]
        ours = np.array([float(r["accuracy"]) for r in results])
        ref = np.array([_opt_float(r, "reference") for r in results])
    except KeyError as e:
        raise DataError(f"each result needs 'dataset' and 'accuracy' keys; missing {e}") from e
    n = len(labels)
    fig = _new_figure(figsize or (max(6.4, 0.6 * n + 2), 4.5), dpi)
    ax = fig.add_subplot()
    _grouped_bars(ax, labels, ours, ref, ours_label=series[0], ref_label=series[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_forecast_metrics(
    rows: Sequence[dict],
    path: str | os.PathLike,
    title: str = "forecasting error per horizon",
    *,
    figsize: tuple[float, float] = (10.0, 4.0),
    dpi: int = DPI,
) -> Path:
    """Two panels, MSE and MAE per horizon: tscl vs reference (``reference_mse`` / ``reference_mae``, optional)."""
    if not rows:
        raise DataError("rows is empty: nothing to plot")
    try:
        rows = sorted(rows, key=lambda r: r["horizon"])
        labels = [str(r["horizon"]) for r in rows]
        series = {
            m: (
                np.array([float(r[m]) for r in rows]),
                np.array([_opt_float(r, f"reference_{m}") for r in rows]),
            )
            for m in ("mse", "mae")
        }
    except KeyError as e:
        raise DataError(f"each row needs 'horizon', 'mse' and 'mae' keys; missing {e}") from e
    fig = _new_figure(figsize, dpi)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("mse", "mae"), strict=True):
        ours, ref = series[metric]
        _grouped_bars(ax, labels, ours, ref)
        ax.set_xlabel("horizon (steps)")
        ax.set_ylabel(metric.upper())
        ax.set_title(metric.upper())
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_forecast_example(
    history: Any,
    truth: Any,
    prediction: Any,
    path: str | os.PathLike,
    title: str = "forecast example",
    *,
    figsize: tuple[float, float] = (8.0, 3.6),
    dpi: int = DPI,
) -> Path:
    """The history (steps ``-len(history)..-1``), then truth vs forecast (steps ``0..H-1``)."""
    h = _as_1d(history, "history")
    t = _as_1d(truth, "truth")
    p = _as_1d(prediction, "prediction")
    if t.shape != p.shape:
        raise DataError(f"truth and prediction must have the same length, got {t.size} and {p.size}")
    fig = _new_figure(figsize, dpi)
    ax = fig.add_subplot()
    xh = np.arange(-h.size, 0)
    xf = np.arange(t.size)
    ax.plot(xh, h, color="black", lw=1, label="history")
    # connect the last observed point to the first future point so the lines do not look broken
    if h.size:
        xf_t, t_plot = np.concatenate([[-1], xf]), np.concatenate([[h[-1]], t])
        p_plot = np.concatenate([[h[-1]], p])
    else:
        xf_t, t_plot, p_plot = xf, t, p
    ax.plot(xf_t, t_plot, color="tab:green", lw=1.2, label="truth")
    ax.plot(xf_t, p_plot, color="tab:red", lw=1.2, ls="--", label="forecast")
    ax.axvline(-0.5, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("time step (0 = first forecast step)")
    ax.set_ylabel("value")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _mask_spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs where ``mask`` is True."""
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def plot_series_with_views(
    original: Any,
    views: Sequence[Any],
    mask: Any | None,
    path: str | os.PathLike,
    title: str = "augmented views",
    *,
    mask_label: str = "mask",
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> Path:
    """The original series on top and one panel per augmented view below it (shared time axis).

    Steps where ``mask`` is True are shaded in every panel (label ``mask_label``). Default size:
    ``(8, 1.8 * (1 + len(views)) + 0.6)``.
    """
    x0 = _as_1d(original, "original")
    vs = [_as_1d(v, f"views[{i}]") for i, v in enumerate(views)]
    spans: list[tuple[int, int]] = []
    if mask is not None:
        m = np.asarray(mask)
        if m.ndim == 2 and 1 in m.shape:
            m = m.reshape(-1)
        if m.ndim != 1:
            raise DataError(f"mask must be 1-D (T,), got shape {m.shape}")
        if m.size != x0.size:
            raise DataError(f"mask has length {m.size} but original has length {x0.size}")
        spans = _mask_spans(m)
    n = 1 + len(vs)
    fig = _new_figure(figsize or (8.0, 1.8 * n + 0.6), dpi)
    axes = np.atleast_1d(fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0])
    colors = ["tab:orange", "tab:green", "tab:purple", "tab:red", "tab:brown", "tab:pink"]
    for i, ax in enumerate(axes):
        y, label, color = (
            (x0, "original", "black") if i == 0 else (vs[i - 1], f"view {i}", colors[(i - 1) % 6])
        )
        if i > 0:
            ax.plot(np.arange(x0.size), x0, color="black", lw=0.6, alpha=0.3, label="original")
        ax.plot(np.arange(y.size), y, color=color, lw=1, label=label)
        for k, (a, b) in enumerate(spans):
            ax.axvspan(
                a - 0.5, b - 0.5, color="tab:red", alpha=0.12, lw=0, label=mask_label if k == 0 else None
            )
        ax.set_ylabel("value")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("time step")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_learned_augmentation(
    original: Any,
    keep_prob: Any,
    masks: Sequence[Any],
    views: Sequence[Any],
    path: str | os.PathLike,
    title: str = "AutoTCL: learned augmentation",
    *,
    dpi: int = DPI,
) -> Path:
    """Original series, the learned mask (keep probability P(h=1) and the sampled hard masks) and one panel per view.

    All inputs are one channel of one series: ``original`` (T,), ``keep_prob`` (T,), ``masks`` / ``views`` lists of
    (T,). Steps a view's mask drops are shaded in its panel.
    """
    x0 = _as_1d(original, "original")
    p = _as_1d(keep_prob, "keep_prob")
    ms = [_as_1d(m, f"masks[{i}]") for i, m in enumerate(masks)]
    vs = [_as_1d(v, f"views[{i}]") for i, v in enumerate(views)]
    if len(ms) != len(vs):
        raise DataError(f"got {len(ms)} masks for {len(vs)} views")
    for name, a in [("keep_prob", p), *[(f"masks[{i}]", m) for i, m in enumerate(ms)]] + [
        (f"views[{i}]", v) for i, v in enumerate(vs)
    ]:
        if a.size != x0.size:
            raise DataError(f"{name} has length {a.size} but original has length {x0.size}")
    t = np.arange(x0.size)
    n = 2 + len(vs)
    fig = _new_figure((9.0, 1.7 * n + 0.6), dpi)
    axes = np.atleast_1d(fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0])
    axes[0].plot(t, x0, color="black", lw=1, label="original")
    axes[1].plot(t, p, color="tab:red", lw=1.2, label="P(keep)")
    for i, m in enumerate(ms):
        axes[1].step(t, m * 0.9 + 0.05 * i, where="mid", lw=0.7, alpha=0.6, label=f"mask {i + 1} (sampled)")
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].set_ylabel("mask h")
    colors = ["tab:orange", "tab:green", "tab:purple", "tab:brown"]
    for i, (m, v) in enumerate(zip(ms, vs, strict=True)):
        ax = axes[2 + i]
        ax.plot(t, x0, color="black", lw=0.6, alpha=0.3, label="original")
        ax.plot(t, v, color=colors[i % 4], lw=1, label=f"view {i + 1}: g*h*x (+ noise)")
        for k, (a, b) in enumerate(_mask_spans(m < 0.5)):
            ax.axvspan(
                a - 0.5, b - 0.5, color="tab:gray", alpha=0.15, lw=0, label="dropped" if k == 0 else None
            )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=7)
    axes[0].set_ylabel("value")
    axes[-1].set_xlabel("time step")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
