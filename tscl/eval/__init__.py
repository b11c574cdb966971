"""Evaluators: TS2Vec's classification probes (SVM / linear / 1-NN) and ridge forecasting probe.

from tscl.eval import classify, forecast
classify(model, X_tr, y_tr, X_te, y_te, protocol="svm")   # -> {"accuracy": ..., "auprc": ..., ...}
forecast(model, data, horizons=(24, 48, 168, 336, 720))  # -> DataFrame: horizon, mse, mae, ...
"""

from __future__ import annotations

from tscl.eval.classification import (
    PROTOCOLS,
    SVM_C_GRID,
    TS2VEC_UCR_REFERENCE,
    TS2VEC_UEA_REFERENCE,
    classify,
    classify_features,
    fit_knn,
    fit_linear,
    fit_svm,
    svm_uses_grid_search,
)
from tscl.eval.forecasting import (
    AUTOTCL_ETTH1,
    AUTOTCL_ETTH1_AVG,
    COST_ETTH1,
    COST_ETTH1_AVG,
    DEFAULT_HORIZONS,
    RIDGE_ALPHAS,
    TS2VEC_ETTH1,
    TS2VEC_ETTH1_AVG,
    fit_ridge,
    forecast,
    forecast_summary_table,
    make_horizon_samples,
    ridge_validation_scores,
)

__all__ = [
    "classify",
    "classify_features",
    "fit_svm",
    "fit_linear",
    "fit_knn",
    "svm_uses_grid_search",
    "PROTOCOLS",
    "SVM_C_GRID",
    "TS2VEC_UCR_REFERENCE",
    "TS2VEC_UEA_REFERENCE",
    "forecast",
    "fit_ridge",
    "ridge_validation_scores",
    "make_horizon_samples",
    "forecast_summary_table",
    "RIDGE_ALPHAS",
    "DEFAULT_HORIZONS",
    "TS2VEC_ETTH1",
    "TS2VEC_ETTH1_AVG",
    "AUTOTCL_ETTH1",
    "AUTOTCL_ETTH1_AVG",
    "COST_ETTH1",
    "COST_ETTH1_AVG",
]
