"""Plots: each function writes a real PNG of the expected pixel size, atomically, without touching pyplot."""

from __future__ import annotations

import sys

import matplotlib.image as mpimg
import numpy as np
import pytest

from tscl.errors import DataError
from tscl.plots import (
    DPI,
    plot_classification,
    plot_forecast_example,
    plot_forecast_metrics,
    plot_series_with_views,
    plot_training_curve,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path, width_in, height_in, dpi=DPI):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.shape[:2] == (round(height_in * dpi), round(width_in * dpi))
    assert img.std() > 0  # something was drawn
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left


def test_training_curve(tmp_path):
    losses = list(np.exp(-np.linspace(0, 3, 120)) + 0.05 * np.random.default_rng(0).random(120))
    out = plot_training_curve(losses, tmp_path / "loss.png")
    assert out == tmp_path / "loss.png"
    _check_png(out, 6.4, 4.0)
    out2 = plot_training_curve([3.0, 2.0, 1.5], tmp_path / "short" / "loss.png", title="short", dpi=50)
    _check_png(out2, 6.4, 4.0, dpi=50)
    with pytest.raises(DataError):
        plot_training_curve([], tmp_path / "x.png")


def test_classification(tmp_path):
    results = [
        {"dataset": "GunPoint", "accuracy": 0.98, "reference": 0.987},
        {"dataset": "ECG200", "accuracy": 0.91, "reference": 0.92},
        {"dataset": "Coffee", "accuracy": 1.0},  # no reference for this one
    ]
    out = plot_classification(results, tmp_path / "cls.png")
    _check_png(out, max(6.4, 0.6 * 3 + 2), 4.5)
    out2 = plot_classification(
        [{"dataset": "A", "accuracy": 0.5}], tmp_path / "b" / "cls.png", figsize=(4, 3)
    )
    _check_png(out2, 4, 3)
    with pytest.raises(DataError):
        plot_classification([{"accuracy": 0.5}], tmp_path / "x.png")


def test_forecast_metrics(tmp_path):
    rows = [
        {
            "horizon": h,
            "mse": 0.05 * i + 0.04,
            "mae": 0.1 * i + 0.15,
            "reference_mse": 0.05 * i + 0.05,
            "reference_mae": 0.1 * i + 0.16,
        }
        for i, h in enumerate((24, 48, 168, 336, 720))
    ]
    out = plot_forecast_metrics(rows, tmp_path / "fc.png", title="ETTh1 univariate")
    _check_png(out, 10.0, 4.0)
    out2 = plot_forecast_metrics(
        [{"horizon": 24, "mse": 0.1, "mae": 0.2}], tmp_path / "b" / "fc.png", title="t"
    )
    _check_png(out2, 10.0, 4.0)


def test_forecast_example(tmp_path):
    t = np.arange(200)
    y = np.sin(t / 10)
    out = plot_forecast_example(y[:168], y[168:], y[168:] + 0.1, tmp_path / "ex.png", title="example")
    _check_png(out, 8.0, 3.6)
    with pytest.raises(DataError):
        plot_forecast_example(y[:10], y[:5], y[:4], tmp_path / "x.png", title="bad")
    with pytest.raises(DataError):
        plot_forecast_example(np.zeros((10, 3)), y[:5], y[:5], tmp_path / "x.png", title="bad")


def test_series_with_views(tmp_path):
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(100) / 8)
    views = [x + 0.1 * rng.standard_normal(100), x * 1.5]
    mask = np.zeros(100, dtype=bool)
    mask[10:20] = True
    mask[60:65] = True
    out = plot_series_with_views(x, views, mask, tmp_path / "views.png", title="jitter + scale")
    _check_png(out, 8.0, 1.8 * 3 + 0.6)
    out2 = plot_series_with_views(x, [], None, tmp_path / "b" / "views.png", title="no views")
    _check_png(out2, 8.0, 1.8 + 0.6)
    with pytest.raises(DataError):
        plot_series_with_views(x, views, mask[:50], tmp_path / "x.png", title="bad mask")


def test_plots_do_not_touch_pyplot(tmp_path):
    plot_training_curve([1.0, 0.5], tmp_path / "a.png")
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []
