"""Forecasting probe on frozen causal representations (TS2Vec's ridge protocol).

1. ``reps = model.encode(data, causal=True, sliding_length=1, sliding_padding=padding)`` -> (1, T, D): the
   representation at step t sees only steps [t - padding, t].
2. Split reps and the target channels (``data[..., n_covariate_cols:]``) by the train / valid / test slices.
3. For each horizon H, every step t of a split with H future steps inside the same split gives one sample:
   features = reps[t], labels = values[t + 1 .. t + H] flattened to H * C (see :func:`make_horizon_samples`).
   The first ``padding`` train samples are dropped (their windows are mostly padding).
4. Ridge regression; alpha chosen from :data:`RIDGE_ALPHAS` by the LOWEST validation score
   ``sqrt(MSE) + MAE`` (:func:`fit_ridge`); the model fitted on the train split at that alpha (nothing is
   refitted on train + valid) predicts the test split.
5. MSE / MAE over all test samples, steps and channels on the scaled values (the reported metric), and after
   ``data.scaler.inverse_transform`` (``mse_raw`` / ``mae_raw``).

Reference numbers (MSE, MAE on scaled values) from the papers are kept here as constants; the source of
every number is /work/shared/ANCHORS.md.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.linear_model import Ridge

from tscl.errors import ConfigError, DataError

__all__ = [
    "forecast",
    "make_horizon_samples",
    "fit_ridge",
    "ridge_validation_scores",
    "forecast_summary_table",
    "RIDGE_ALPHAS",
    "DEFAULT_HORIZONS",
    "TS2VEC_ETTH1",
    "AUTOTCL_ETTH1",
    "COST_ETTH1",
    "TS2VEC_ETTH1_AVG",
    "AUTOTCL_ETTH1_AVG",
    "COST_ETTH1_AVG",
]

RIDGE_ALPHAS: tuple[float, ...] = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
DEFAULT_HORIZONS: tuple[int, ...] = (24, 48, 168, 336, 720)

# Published ETTh1 numbers, {setting: {horizon: (MSE, MAE)}} on scaled values (ANCHORS.md).
#: TS2Vec paper (Yue et al., AAAI 2022), forecasting tables.
TS2VEC_ETTH1: dict[str, dict[int, tuple[float, float]]] = {
    "univariate": {
        24: (0.039, 0.152),
        48: (0.062, 0.191),
        168: (0.134, 0.282),
        336: (0.154, 0.310),
        720: (0.163, 0.327),
    },
    "multivariate": {
        24: (0.599, 0.534),
        48: (0.629, 0.555),
        168: (0.755, 0.636),
        336: (0.907, 0.717),
        720: (1.048, 0.790),
    },
}
#: AutoTCL paper (Zheng et al., ICLR 2024), Tables 1, 2, 10, 11.
AUTOTCL_ETTH1: dict[str, dict[int, tuple[float, float]]] = {
    "univariate": {
        24: (0.037, 0.148),
        48: (0.054, 0.176),
        168: (0.078, 0.210),
        336: (0.093, 0.231),
        720: (0.120, 0.272),
    },
    "multivariate": {
        24: (0.389, 0.439),
        48: (0.447, 0.477),
        168: (0.615, 0.574),
        336: (0.802, 0.671),
        720: (1.028, 0.789),
    },
}
#: CoST as published in the AutoTCL paper's tables.
COST_ETTH1: dict[str, dict[int, tuple[float, float]]] = {
    "univariate": {
        24: (0.040, 0.152),
        48: (0.060, 0.186),
        168: (0.097, 0.236),
        336: (0.112, 0.258),
        720: (0.148, 0.306),
    },
    "multivariate": {
        24: (0.386, 0.429),
        48: (0.437, 0.464),
        168: (0.643, 0.582),
        336: (0.812, 0.679),
        720: (0.970, 0.771),
    },
}
#: Published averages over the five horizons, {setting: (MSE, MAE)}.
TS2VEC_ETTH1_AVG: dict[str, tuple[float, float]] = {
    "univariate": (0.110, 0.252),
    "multivariate": (0.788, 0.646),
}
AUTOTCL_ETTH1_AVG: dict[str, tuple[float, float]] = {
    "univariate": (0.076, 0.207),
    "multivariate": (0.656, 0.590),
}
COST_ETTH1_AVG: dict[str, tuple[float, float]] = {
    "univariate": (0.091, 0.228),
    "multivariate": (0.650, 0.585),
}


# --------------------------------------------------------------------------------------------- validation
def _check_horizons(horizons: Any) -> tuple[int, ...]:
    if isinstance(horizons, numbers.Integral) and not isinstance(horizons, bool):
        horizons = (horizons,)
    if isinstance(horizons, (str, bytes)) or not isinstance(horizons, Iterable):
        raise ConfigError(f"horizons must be a sequence of positive integers, got {horizons!r}")
    out = []
    for h in horizons:
        if isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1:
            raise ConfigError(f"every horizon must be a positive integer, got {h!r} in {horizons!r}")
        out.append(int(h))
    if not out:
        raise ConfigError("horizons is empty; give at least one positive integer (e.g. 24)")
    if len(set(out)) != len(out):
        raise ConfigError(f"horizons contains duplicates: {out}")
    return tuple(out)


def _check_nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _finite_or_raise(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataError(
            f"{name} contains {int(bad.sum())} NaN/inf values out of {arr.size}; the ridge probe needs finite "
            "inputs (check for missing values the encoder could not fill, or a diverged encoder)"
        )


# ------------------------------------------------------------------------------------------------ samples
def make_horizon_samples(
    reps: np.ndarray, values: np.ndarray, horizon: int, drop: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Build the (features, labels) pairs of one split for horizon ``horizon``.

    ``reps``: (B, n, D) or (n, D) representations; ``values``: (B, n, C), (n, C) or (n,) targets, aligned in
    time. Sample t (0 <= t < n - H) has features ``reps[:, t]`` and labels ``values[:, t+1 : t+1+H]``
    flattened step-major to ``H * C`` (index ``h * C + c``); the first ``drop`` samples of every series are
    discarded. Returns ``X`` (B * (n - H - drop), D) and ``Y`` (same rows, H * C), rows ordered by series then
    time. Vectorised (a strided view; only the final reshape copies).
    """
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1:
        raise ConfigError(f"horizon must be a positive integer, got {horizon!r}")
    drop = _check_nonneg_int(drop, "drop")
    reps = np.asarray(reps)
    values = np.asarray(values)
    if reps.ndim == 2:
        reps = reps[None]
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim == 2:
        values = values[None]
    if reps.ndim != 3 or values.ndim != 3:
        raise DataError(f"reps must be (B, n, D) and values (B, n, C); got {reps.shape} and {values.shape}")
    if reps.shape[:2] != values.shape[:2]:
        raise DataError(
            f"reps {reps.shape} and values {values.shape} must agree on (series, time); "
            "encode the same array the values come from"
        )
    n = reps.shape[1]
    n_samples = n - horizon - drop
    if n_samples < 1:
        raise DataError(
            f"a split of length {n} gives no samples for horizon {horizon}"
            + (f" after dropping the first {drop}" if drop else "")
            + f"; it needs at least {horizon + drop + 1} steps"
        )
    feats = reps[:, drop : n - horizon]  # (B, n_samples, D)
    # windows[b, s, c, h] = values[b, 1 + s + h, c]  ->  (B, n - H, C, H)
    windows = sliding_window_view(values[:, 1:], horizon, axis=1)[:, drop:]
    labels = windows.transpose(0, 1, 3, 2)  # (B, n_samples, H, C)
    B, C = values.shape[0], values.shape[2]
    X = feats.reshape(B * n_samples, reps.shape[2])
    Y = labels.reshape(B * n_samples, horizon * C)
    return X, Y


# ------------------------------------------------------------------------------------------------- ridge
def _subsample(X: np.ndarray, Y: np.ndarray, max_samples: int, rng: np.random.Generator):
    if X.shape[0] <= max_samples:
        return X, Y
    idx = np.sort(rng.choice(X.shape[0], size=max_samples, replace=False))
    return X[idx], Y[idx]


def ridge_validation_scores(
    train_X: np.ndarray,
    train_Y: np.ndarray,
    valid_X: np.ndarray,
    valid_Y: np.ndarray,
    alphas: Sequence[float] = RIDGE_ALPHAS,
) -> np.ndarray:
    """Validation score ``sqrt(MSE) + MAE`` of an intercept-fitted ridge for every alpha (one array).

    Same solution as ``sklearn.linear_model.Ridge(alpha).fit(train_X, train_Y)`` (centred normal equations),
    but the Gram matrix, its eigendecomposition and ``X^T Y`` are computed once for all alphas.
    """
    Xt = np.asarray(train_X, dtype=np.float64)
    Yt = np.asarray(train_Y, dtype=np.float64)
    Xv = np.asarray(valid_X, dtype=np.float64)
    Yv = np.asarray(valid_Y, dtype=np.float64)
    x_mean = Xt.mean(axis=0)
    y_mean = Yt.mean(axis=0)
    Xc = Xt - x_mean
    gram = Xc.T @ Xc
    eigval, eigvec = np.linalg.eigh(gram)
    eigval = np.clip(eigval, 0.0, None)
    proj_b = eigvec.T @ (Xc.T @ Yt)  # V^T Xc^T Y == V^T Xc^T (Y - y_mean)
    proj_v = (Xv - x_mean) @ eigvec
    scores = np.empty(len(alphas))
    for i, alpha in enumerate(alphas):
        pred = (proj_v / (eigval + float(alpha))) @ proj_b
        pred += y_mean
        pred -= Yv
        scores[i] = np.sqrt(np.mean(np.square(pred))) + np.mean(np.abs(pred))
    return scores


def fit_ridge(
    train_X: np.ndarray,
    train_Y: np.ndarray,
    valid_X: np.ndarray,
    valid_Y: np.ndarray,
    alphas: Sequence[float] = RIDGE_ALPHAS,
    max_samples: int = 100_000,
    seed: int = 0,
) -> tuple[Ridge, float, dict[float, float]]:
    """Choose the ridge alpha on the validation split and return ``(model, best_alpha, valid_scores)``.

    ``valid_scores`` maps each alpha to ``sqrt(MSE) + MAE`` on the validation split; the best alpha is the
    one with the LOWEST score (the first on ties). Splits larger than ``max_samples`` are subsampled
    (seeded, without replacement) before fitting, as TS2Vec does. ``model`` is a
    :class:`sklearn.linear_model.Ridge` fitted on the train split at ``best_alpha``.
    """
    alphas = [float(a) for a in alphas]
    if not alphas or any(not np.isfinite(a) or a < 0 for a in alphas):
        raise ConfigError(f"alphas must be a non-empty list of finite non-negative numbers, got {alphas}")
    if isinstance(max_samples, bool) or not isinstance(max_samples, numbers.Integral) or max_samples < 1:
        raise ConfigError(f"max_samples must be a positive integer, got {max_samples!r}")
    arrays = {}
    for name, arr in (("train_X", train_X), ("train_Y", train_Y), ("valid_X", valid_X), ("valid_Y", valid_Y)):
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim == 1 and name.endswith("Y"):
            a = a[:, None]
        if a.ndim != 2 or a.shape[0] == 0:
            raise DataError(f"{name} must be a non-empty 2-D array, got shape {a.shape}")
        _finite_or_raise(a, name)
        arrays[name] = a
    tX, tY, vX, vY = arrays["train_X"], arrays["train_Y"], arrays["valid_X"], arrays["valid_Y"]
    if tX.shape[0] != tY.shape[0] or vX.shape[0] != vY.shape[0]:
        raise DataError(
            f"features and labels disagree in rows: train {tX.shape[0]} vs {tY.shape[0]}, "
            f"valid {vX.shape[0]} vs {vY.shape[0]}"
        )
    if tX.shape[1] != vX.shape[1] or tY.shape[1] != vY.shape[1]:
        raise DataError(
            f"train and valid widths differ: X {tX.shape[1]} vs {vX.shape[1]}, Y {tY.shape[1]} vs {vY.shape[1]}"
        )

    rng = np.random.default_rng(seed)
    tX, tY = _subsample(tX, tY, max_samples, rng)
    vX, vY = _subsample(vX, vY, max_samples, rng)

    scores = ridge_validation_scores(tX, tY, vX, vY, alphas)
    best = int(np.argmin(scores))  # lowest sqrt(MSE) + MAE wins
    best_alpha = alphas[best]
    model = Ridge(alpha=best_alpha).fit(tX, tY)
    return model, best_alpha, {a: float(s) for a, s in zip(alphas, scores, strict=True)}


# ---------------------------------------------------------------------------------------------- forecast
def _inverse(scaler: Any, arr: np.ndarray) -> np.ndarray:
    """Inverse-scale an (..., C) array with a scaler fitted on C target channels."""
    if scaler is None:
        return np.full_like(arr, np.nan)
    C = arr.shape[-1]
    mean = getattr(scaler, "mean_", None)
    if mean is not None and np.size(mean) != C:
        raise DataError(
            f"data.scaler was fitted on {np.size(mean)} channels but there are {C} target channels; "
            "the scaler must be the one fitted on the target columns"
        )
    out = scaler.inverse_transform(arr.reshape(-1, C))
    return np.asarray(out, dtype=np.float64).reshape(arr.shape)


def forecast(
    model: Any,
    data: Any,
    horizons: Sequence[int] = DEFAULT_HORIZONS,
    padding: int = 200,
    batch_size: int = 256,
    return_predictions: bool = False,
    *,
    alphas: Sequence[float] = RIDGE_ALPHAS,
    max_samples: int = 100_000,
    seed: int = 0,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[int, dict[str, np.ndarray]]]:
    """Evaluate ``model`` on ``data`` (a :class:`tscl.data.ForecastData`) with TS2Vec's ridge protocol.

    Returns a DataFrame with one row per horizon: ``horizon, mse, mae`` (scaled values: the reported metric),
    ``mse_raw, mae_raw`` (after ``data.scaler.inverse_transform``) and ``alpha`` (the ridge alpha chosen on
    the validation split). ``df.attrs`` holds ``avg`` (means over horizons: mse, mae, mse_raw, mae_raw),
    ``encode_time`` (s), ``fit_time`` and ``predict_time`` ({horizon: s}), ``valid_scores``
    ({horizon: {alpha: score}}), ``n_samples`` ({horizon: {"train", "valid", "test"}}) and ``padding``.

    With ``return_predictions=True`` returns ``(df, predictions)``; ``predictions[H]`` holds ``pred``,
    ``target``, ``pred_raw``, ``target_raw``, each (n_test_samples, H, C).
    """
    horizons = _check_horizons(horizons)
    padding = _check_nonneg_int(padding, "padding")
    values_all = np.asarray(getattr(data, "data", None))
    if values_all.ndim != 3 or values_all.shape[0] != 1:
        raise DataError(f"data.data must have shape (1, T, n_covariate_cols + C), got {values_all.shape}")
    n_cov = _check_nonneg_int(data.n_covariate_cols, "data.n_covariate_cols")
    T, width = values_all.shape[1], values_all.shape[2]
    C = width - n_cov
    if C < 1:
        raise DataError(
            f"data.data has {width} channels but n_covariate_cols={n_cov}: no target channel left"
        )
    target_cols = list(getattr(data, "target_cols", None) or [])
    if target_cols and len(target_cols) != C:
        raise DataError(
            f"data.target_cols names {len(target_cols)} columns but data.data has {C} target channels"
        )

    splits = {"train": data.train_slice, "valid": data.valid_slice, "test": data.test_slice}
    lengths = {}
    for name, sl in splits.items():
        if not isinstance(sl, slice):
            raise DataError(f"data.{name}_slice must be a slice, got {type(sl).__name__}")
        lengths[name] = len(range(*sl.indices(T)))
    # fail before the (slow) encode when a horizon does not fit a split
    for h in horizons:
        for name, n in lengths.items():
            drop = padding if name == "train" else 0
            if n - h - drop < 1:
                raise DataError(
                    f"horizon {h} is too long for the {name} split: it has {n} steps"
                    + (f" ({padding} of them dropped as padding)" if drop else "")
                    + f", and needs at least {h + drop + 1}; use shorter horizons"
                    + (" or a smaller padding" if drop else "")
                )

    # Encoding is causal, so steps after the last split never influence the results: do not encode them.
    end = max(sl.indices(T)[1] for sl in splits.values())
    values_all, T = values_all[:, :end], end

    t0 = time.perf_counter()
    reps = model.encode(
        values_all, causal=True, sliding_length=1, sliding_padding=padding, batch_size=batch_size
    )
    encode_time = time.perf_counter() - t0
    reps = np.asarray(reps)
    if reps.ndim != 3 or reps.shape[:2] != (1, T):
        raise DataError(
            f"model.encode returned shape {reps.shape}; expected (1, {T}, D) per-step representations"
        )
    _finite_or_raise(reps, "the representations from model.encode")
    reps = reps.astype(np.float64, copy=False)

    targets = values_all[..., n_cov:].astype(np.float64)
    split_reps = {k: reps[:, sl] for k, sl in splits.items()}
    split_vals = {k: targets[:, sl] for k, sl in splits.items()}
    for name, v in split_vals.items():
        _finite_or_raise(v, f"the target values of the {name} split")

    rows, fit_time, predict_time, valid_scores, n_samples = [], {}, {}, {}, {}
    predictions: dict[int, dict[str, np.ndarray]] = {}
    for h in horizons:
        trX, trY = make_horizon_samples(split_reps["train"], split_vals["train"], h, drop=padding)
        vaX, vaY = make_horizon_samples(split_reps["valid"], split_vals["valid"], h)
        teX, teY = make_horizon_samples(split_reps["test"], split_vals["test"], h)

        t0 = time.perf_counter()
        ridge, alpha, scores = fit_ridge(
            trX, trY, vaX, vaY, alphas=alphas, max_samples=max_samples, seed=seed
        )
        fit_time[h] = time.perf_counter() - t0
        del trX, trY, vaX, vaY

        t0 = time.perf_counter()
        pred = ridge.predict(teX).reshape(-1, h, C)
        predict_time[h] = time.perf_counter() - t0
        target = teY.reshape(-1, h, C)
        pred_raw, target_raw = _inverse(data.scaler, pred), _inverse(data.scaler, target)

        err = pred - target
        err_raw = pred_raw - target_raw
        rows.append(
            {
                "horizon": h,
                "mse": float(np.mean(err**2)),
                "mae": float(np.mean(np.abs(err))),
                "mse_raw": float(np.mean(err_raw**2)),
                "mae_raw": float(np.mean(np.abs(err_raw))),
                "alpha": float(alpha),
            }
        )
        valid_scores[h] = scores
        n_samples[h] = {
            "train": int(min(lengths["train"] - h - padding, max_samples)),
            "valid": int(min(lengths["valid"] - h, max_samples)),
            "test": int(target.shape[0]),
        }
        if return_predictions:
            predictions[h] = {"pred": pred, "target": target, "pred_raw": pred_raw, "target_raw": target_raw}

    df = pd.DataFrame(rows, columns=["horizon", "mse", "mae", "mse_raw", "mae_raw", "alpha"])
    df.attrs["avg"] = {k: float(df[k].mean()) for k in ("mse", "mae", "mse_raw", "mae_raw")}
    df.attrs["encode_time"] = float(encode_time)
    df.attrs["fit_time"] = fit_time
    df.attrs["predict_time"] = predict_time
    df.attrs["valid_scores"] = valid_scores
    df.attrs["n_samples"] = n_samples
    df.attrs["padding"] = padding
    df.attrs["dataset"] = getattr(data, "name", None)
    if return_predictions:
        return df, predictions
    return df


# ------------------------------------------------------------------------------------------------- table
def forecast_summary_table(
    df: pd.DataFrame,
    reference: Mapping[int, tuple[float, float]] | None = None,
    reference_avg: tuple[float, float] | None = None,
    reference_name: str = "ref",
) -> str:
    """Plain-text table of ``horizon, mse, mae`` with an ``avg`` row.

    With ``reference`` ({horizon: (mse, mae)}, e.g. ``TS2VEC_ETTH1["univariate"]``) adds the reference columns
    and the ratios ours / reference (< 1 is better). The reference's avg row uses ``reference_avg`` when given
    (e.g. ``TS2VEC_ETTH1_AVG["univariate"]``), else the mean of the reference over the table's horizons when
    it covers all of them.
    """
    for col in ("horizon", "mse", "mae"):
        if col not in df.columns:
            raise DataError(f"the forecast table needs a {col!r} column; got {list(df.columns)}")
    avg = df.attrs.get("avg") or {}
    ours_avg = (float(avg.get("mse", df["mse"].mean())), float(avg.get("mae", df["mae"].mean())))
    ref = (
        {int(k): (float(v[0]), float(v[1])) for k, v in reference.items()} if reference is not None else None
    )

    header = ["horizon", "mse", "mae"]
    if ref is not None:
        header += [f"{reference_name}_mse", f"{reference_name}_mae", "mse/ref", "mae/ref"]

    def fmt(x: float | None) -> str:
        return "-" if x is None or not np.isfinite(x) else f"{x:.4f}"

    def ratio(a: float, b: float | None) -> str:
        return "-" if b is None or b == 0 else f"{a / b:.3f}"

    body = []
    for h, mse, mae in zip(df["horizon"], df["mse"], df["mae"], strict=True):
        row = [str(int(h)), fmt(mse), fmt(mae)]
        if ref is not None:
            r = ref.get(int(h))
            rm, ra = r if r is not None else (None, None)
            row += [fmt(rm), fmt(ra), ratio(mse, rm), ratio(mae, ra)]
        body.append(row)

    avg_row = ["avg", fmt(ours_avg[0]), fmt(ours_avg[1])]
    if ref is not None:
        r_avg = tuple(reference_avg) if reference_avg is not None else None
        hs = [int(h) for h in df["horizon"]]
        if r_avg is None and hs and all(h in ref for h in hs):
            r_avg = (float(np.mean([ref[h][0] for h in hs])), float(np.mean([ref[h][1] for h in hs])))
        rm, ra = r_avg if r_avg is not None else (None, None)
        avg_row += [fmt(rm), fmt(ra), ratio(ours_avg[0], rm), ratio(ours_avg[1], ra)]
    body.append(avg_row)

    widths = [max(len(header[i]), *(len(r[i]) for r in body)) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)
