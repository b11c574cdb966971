"""tscl.data: input adapters and validation, scaling, TS2Vec windowing helpers, and named datasets.

Everything is a ``(N, T, C)`` float panel with NaN marking missing steps::

    from tscl.data import as_panel, load
    X = as_panel(df)                     # numpy / pandas / sktime panel / torch -> (N, T, C) float32
    d = load("ucr:GunPoint")             # ClassificationData: X_train (50, 150, 1), y_train, X_test, y_test
    f = load("ett:ETTh1")                # ForecastData: data (1, T, 7 + 7), train/valid/test slices, scaler
"""

from __future__ import annotations

from tscl.data.datasets import (
    ETT_DATASETS,
    UCR_DATASETS,
    UCR_NON_NORMALIZED,
    ClassificationData,
    ForecastData,
    card_path,
    list_datasets,
    load,
    load_ett,
    load_ucr,
)
from tscl.data.timeseries import StandardScaler, as_panel
from tscl.data.windows import (
    centerize_vary_length_series,
    drop_all_nan,
    prepare_train_panel,
    split_long_series,
    split_with_nan,
)

load_dataset = load  # unambiguous alias (tscl.load loads checkpoints)

__all__ = [
    "as_panel",
    "StandardScaler",
    "split_with_nan",
    "split_long_series",
    "centerize_vary_length_series",
    "drop_all_nan",
    "prepare_train_panel",
    "UCR_DATASETS",
    "UCR_NON_NORMALIZED",
    "ETT_DATASETS",
    "ClassificationData",
    "ForecastData",
    "load_ucr",
    "load_ett",
    "load",
    "load_dataset",
    "list_datasets",
    "card_path",
]
