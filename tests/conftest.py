"""Shared pytest fixtures. Data fixtures only here so far (others may add their own below)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ETT_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")


@pytest.fixture(scope="session")
def ett_dir() -> Path:
    """Folder holding the real ETTh1.csv: $TSCL_DATA/ett or $TSCL_DATA, else <repo root>/../shared/data/ett.
    Skips the test when the file is nowhere (it is never copied into the repo)."""
    candidates = []
    env = os.environ.get("TSCL_DATA")
    if env:
        candidates += [Path(env) / "ett", Path(env)]
    candidates.append(REPO_ROOT.parent / "shared" / "data" / "ett")
    for c in candidates:
        if (c / "ETTh1.csv").is_file():
            return c
    pytest.skip("ETTh1.csv not found; set TSCL_DATA to the folder holding it (or its ett/ subfolder)")


@pytest.fixture
def make_ett_csv(tmp_path):
    """Factory writing a small CSV in the real ETT format (``date`` + HUFL..OT, hourly) into ``tmp_path``.

    ``make_ett_csv(name="tiny.csv", n_rows=200, freq="h", columns=ETT_COLUMNS, seed=0, edit=None)``; ``edit`` is
    an optional callable that modifies the DataFrame before it is written. Returns the file's Path.
    """

    def _make(name="tiny.csv", n_rows=200, freq="h", columns=ETT_COLUMNS, seed=0, edit=None):
        rng = np.random.default_rng(seed)
        dates = pd.date_range("2016-07-01 00:00:00", periods=n_rows, freq=freq)
        t = np.arange(n_rows)
        df = pd.DataFrame({"date": dates.strftime("%Y-%m-%d %H:%M:%S")})
        for k, c in enumerate(columns):
            df[c] = 5.0 + k + 2.0 * np.sin(2 * np.pi * t / 24 + k) + 0.1 * rng.standard_normal(n_rows)
        if edit is not None:
            df = edit(df)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
        return path

    return _make
