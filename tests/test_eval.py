"""Tests for tscl.eval: classification probes and the ridge forecasting probe (stand-in encoders, no torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.linear_model import Ridge
from sklearn.svm import SVC

import tscl.eval.classification as clf_mod
from tscl.errors import ConfigError, DataError, TsclError
from tscl.eval import (
    AUTOTCL_ETTH1,
    AUTOTCL_ETTH1_AVG,
    COST_ETTH1,
    COST_ETTH1_AVG,
    RIDGE_ALPHAS,
    SVM_C_GRID,
    TS2VEC_ETTH1,
    TS2VEC_ETTH1_AVG,
    TS2VEC_UCR_REFERENCE,
    classify,
    classify_features,
    fit_ridge,
    fit_svm,
    forecast,
    forecast_summary_table,
    make_horizon_samples,
    ridge_validation_scores,
)


# ------------------------------------------------------------------------------------------ stand-ins
class StatsEncoder:
    """Series-level features: per-channel mean and std over time (NaN-aware)."""

    def __init__(self, nan: bool = False):
        self.nan = nan
        self.calls = []

    def encode(
        self, X, encoding_window=None, causal=False, sliding_length=None, sliding_padding=0, batch_size=None
    ):
        self.calls.append(encoding_window)
        X = np.asarray(X, dtype=np.float64)
        if encoding_window != "full_series":
            return X
        out = np.concatenate([np.nanmean(X, axis=1), np.nanstd(X, axis=1)], axis=1)
        if self.nan:
            out[0, 0] = np.nan
        return out


class LagEncoder:
    """Causal stand-in: the representation at step t is the last ``lags`` target values up to t (zero-padded)."""

    def __init__(self, n_covariate_cols: int, lags: int = 24, nan: bool = False):
        self.n_cov, self.lags, self.nan = n_covariate_cols, lags, nan
        self.kwargs = None

    def encode(
        self, X, encoding_window=None, causal=False, sliding_length=None, sliding_padding=0, batch_size=None
    ):
        self.kwargs = dict(
            causal=causal,
            sliding_length=sliding_length,
            sliding_padding=sliding_padding,
            batch_size=batch_size,
        )
        assert causal and sliding_length == 1 and sliding_padding >= self.lags - 1
        vals = np.asarray(X, dtype=np.float64)[:, :, self.n_cov :]  # (1, T, C)
        B, T, C = vals.shape
        padded = np.concatenate([np.zeros((B, self.lags - 1, C)), vals], axis=1)
        win = sliding_window_view(padded, self.lags, axis=1)  # (B, T, C, L): steps t-L+1..t
        out = win.reshape(B, T, C * self.lags).astype(np.float32)
        if self.nan:
            out[0, 5, 0] = np.nan
        return out


class SimpleScaler:
    def __init__(self, mean, scale):
        self.mean_, self.scale_ = np.asarray(mean, float), np.asarray(scale, float)

    def inverse_transform(self, x):
        return np.asarray(x) * self.scale_ + self.mean_


@dataclass(frozen=True)
class FakeForecastData:
    data: np.ndarray
    train_slice: slice
    valid_slice: slice
    test_slice: slice
    n_covariate_cols: int
    target_cols: list
    scaler: object
    name: str = "synthetic"
    univariate: bool = False


def separable(n, n_classes=2, seed=0, T=32, C=2):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    X = rng.normal(0, 0.5, size=(n, T, C)) + 3.0 * y[:, None, None]
    return X.astype(np.float32), y


def sinusoid_data(T=720, n_train=400, n_valid=160, with_cov=True):
    t = np.arange(T, dtype=np.float64)
    targets = np.stack([np.sin(2 * np.pi * t / 24), 0.5 * np.cos(2 * np.pi * t / 12 + 0.3)], axis=1)
    cov = ((t % 24) / 23.0 - 0.5)[:, None]
    arr = np.concatenate([cov, targets], axis=1) if with_cov else targets
    n_cov = 1 if with_cov else 0
    return FakeForecastData(
        data=arr[None].astype(np.float32),
        train_slice=slice(0, n_train),
        valid_slice=slice(n_train, n_train + n_valid),
        test_slice=slice(n_train + n_valid, T),
        n_covariate_cols=n_cov,
        target_cols=["a", "b"],
        scaler=SimpleScaler([10.0, -2.0], [3.0, 0.5]),
    )


# ----------------------------------------------------------------------------------------- classification
@pytest.mark.parametrize("protocol", ["svm", "linear", "knn"])
def test_classify_separable_is_perfect(protocol):
    Xtr, ytr = separable(60, seed=0)
    Xte, yte = separable(40, seed=1)
    enc = StatsEncoder()
    res = classify(enc, Xtr, ytr, Xte, yte, protocol=protocol)
    assert res["accuracy"] == 1.0
    assert res["auprc"] == pytest.approx(1.0)
    assert res["protocol"] == protocol and res["n_train"] == 60 and res["n_test"] == 40
    assert enc.calls == ["full_series", "full_series"]


@pytest.mark.parametrize("protocol", ["linear", "svm"])
def test_classify_multiclass_and_string_labels(protocol):
    Xtr, ytr = separable(60, n_classes=3, seed=2)
    Xte, yte = separable(30, n_classes=3, seed=3)
    names = np.array(["cat", "dog", "eel"])
    res = classify(StatsEncoder(), Xtr, names[ytr], Xte, names[yte], protocol=protocol)
    assert res["accuracy"] == 1.0 and res["n_classes"] == 3
    assert res["auprc"] == pytest.approx(1.0)


@pytest.mark.parametrize("n_train, protocol", [(40, "svm"), (200, "linear"), (200, "knn")])
def test_classify_shuffled_labels_near_chance(n_train, protocol):
    # (the SVM's grid path is skipped here: on pure-noise labels its C=inf candidates run to max_iter)
    Xtr, ytr = separable(n_train, seed=4)
    Xte, yte = separable(400, seed=5)
    rng = np.random.default_rng(0)
    res = classify(StatsEncoder(), Xtr, rng.permutation(ytr), Xte, rng.permutation(yte), protocol=protocol)
    assert 0.4 <= res["accuracy"] <= 0.6


class SpyGrid(clf_mod.GridSearchCV):
    fitted_shapes: list = []

    def fit(self, X, y=None, **kw):
        SpyGrid.fitted_shapes.append(np.asarray(X).shape)
        return super().fit(X, y, **kw)


@pytest.mark.parametrize(
    "n, n_classes, grid",
    [
        (40, 2, False),  # n < 50 -> plain SVC(C=inf)
        (60, 15, False),  # 60 // 15 = 4 < 5 -> plain
        (50, 10, True),  # 50 // 10 = 5, n = 50 -> grid
        (100, 2, True),
    ],
)
def test_svm_path_follows_ts2vec_rule(monkeypatch, n, n_classes, grid):
    SpyGrid.fitted_shapes = []
    monkeypatch.setattr(clf_mod, "GridSearchCV", SpyGrid)
    rng = np.random.default_rng(n)
    y = np.arange(n) % n_classes
    feats = rng.normal(size=(n, 4)) + y[:, None]
    model = fit_svm(feats, y)
    assert isinstance(model, SVC) and model.kernel == "rbf" and model.gamma == "scale"
    assert bool(SpyGrid.fitted_shapes) == grid
    assert clf_mod.svm_uses_grid_search(n, n_classes) == grid
    if grid:
        assert model.C in SVM_C_GRID
    else:
        assert model.C == np.inf
    res = classify_features(feats, y, feats, y, "svm")
    assert res["svm_grid_search"] == grid


def test_hard_margin_svm_on_inseparable_features_stops_with_a_warning(monkeypatch):
    """Conflicting labels on identical points cannot be separated by a hard margin: libsvm without an iteration
    cap would never stop (seen with representations of norm ~6000); the probe stops at the cap and warns."""
    from sklearn.exceptions import ConvergenceWarning

    monkeypatch.setattr(clf_mod, "SVM_MAX_ITER", 2_000)
    rng = np.random.default_rng(0)
    X = np.repeat(rng.normal(size=(10, 3)) * 1e3, 4, axis=0)
    y = np.tile([0, 1], 20)
    with pytest.warns(ConvergenceWarning):
        model = fit_svm(X, y)
    assert model.C == np.inf and model.max_iter == 2_000


def test_svm_divergence_becomes_a_data_error_naming_the_feature_scale(monkeypatch):
    class Diverging(SVC):
        def fit(self, X, y, sample_weight=None):
            raise ValueError("The dual coefficients or intercepts are not finite.")

    monkeypatch.setattr(clf_mod, "SVC", Diverging)
    X = np.random.default_rng(0).normal(size=(20, 3)) * 1e6
    with pytest.raises(DataError, match="SVM probe diverged.*largest row norm"):
        fit_svm(X, np.arange(20) % 2)


def test_svm_grid_subsamples_large_train(monkeypatch):
    SpyGrid.fitted_shapes = []
    monkeypatch.setattr(clf_mod, "GridSearchCV", SpyGrid)
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    feats = rng.normal(size=(300, 4)) + y[:, None]
    fit_svm(feats, y, max_samples=120)
    assert SpyGrid.fitted_shapes == [(120, 4)]


def test_classification_errors():
    Xtr, ytr = separable(20)
    Xte, yte = separable(10, seed=1)
    enc = StatsEncoder()
    with pytest.raises(DataError, match="labels"):
        classify(enc, Xtr, ytr[:-1], Xte, yte)
    with pytest.raises(DataError):
        classify(enc, Xtr, ytr, Xte, yte[:-2])
    with pytest.raises(DataError, match="at least 2"):
        classify(enc, Xtr, np.zeros(20, int), Xte, yte)
    with pytest.raises(ConfigError, match="protocol"):
        classify(enc, Xtr, ytr, Xte, yte, protocol="forest")
    with pytest.raises(DataError, match="NaN"):
        classify(StatsEncoder(nan=True), Xtr, ytr, Xte, yte)
    feats = np.random.default_rng(0).normal(size=(20, 3))
    bad = feats.copy()
    bad[3, 1] = np.inf
    with pytest.raises(DataError, match="NaN/inf"):
        classify_features(bad, ytr, feats, ytr, "linear")
    with pytest.raises(DataError, match="labels"):
        classify_features(feats, ytr[:5], feats, ytr, "linear")
    with pytest.raises(DataError, match="width"):
        classify_features(feats, ytr, feats[:, :2], ytr, "knn")
    with pytest.raises(ConfigError):
        classify_features(feats, ytr, feats, ytr, "SVM")
    with pytest.raises(TsclError):
        classify_features(feats[:, None, :].repeat(3, axis=1), ytr, feats, ytr, "svm")


def test_ucr_reference_constants():
    assert TS2VEC_UCR_REFERENCE["GunPoint"]["paper"] == 0.980
    assert TS2VEC_UCR_REFERENCE["ArrowHead"]["reference_impl"] == {0: 0.789, 1: 0.817, 2: 0.806}
    assert TS2VEC_UCR_REFERENCE["ItalyPowerDemand"]["reference_impl"][0] == 0.961


# ------------------------------------------------------------------------------------------- forecasting
@pytest.mark.parametrize("drop", [0, 5])
@pytest.mark.parametrize("shape", [(2, 30, 3, 2), (1, 25, 4, 1)])
def test_make_horizon_samples_matches_naive_loop(drop, shape):
    B, n, D, C = shape
    rng = np.random.default_rng(1)
    reps = rng.normal(size=(B, n, D))
    values = rng.normal(size=(B, n, C))
    H = 4
    X, Y = make_horizon_samples(reps, values, H, drop=drop)
    xs, ys = [], []
    for b in range(B):
        for t in range(drop, n - H):
            xs.append(reps[b, t])
            ys.append(values[b, t + 1 : t + 1 + H].reshape(-1))
    assert X.shape == (B * (n - H - drop), D) and Y.shape == (B * (n - H - drop), H * C)
    np.testing.assert_array_equal(X, np.array(xs))
    np.testing.assert_array_equal(Y, np.array(ys))


def test_make_horizon_samples_no_look_ahead():
    n, H = 40, 7
    t = np.arange(n, dtype=np.float64)
    reps = t[:, None]  # representation at step t "is" t
    values = np.stack([10 * t, 10 * t + 1], axis=1)  # channel c at step t = 10 t + c
    X, Y = make_horizon_samples(reps, values, H)
    assert X.shape == (n - H, 1)
    np.testing.assert_array_equal(X[:, 0], t[: n - H])
    Y3 = Y.reshape(-1, H, 2)
    for i, ti in enumerate(X[:, 0]):
        steps = np.arange(ti + 1, ti + 1 + H)
        np.testing.assert_array_equal(Y3[i, :, 0], 10 * steps)
        np.testing.assert_array_equal(Y3[i, :, 1], 10 * steps + 1)
    # the last sample's labels end exactly at the last step of the split
    assert Y3[-1, -1, 0] == 10 * (n - 1)


def test_make_horizon_samples_errors():
    with pytest.raises(DataError, match="length 10"):
        make_horizon_samples(np.zeros((10, 2)), np.zeros(10), 10)
    with pytest.raises(DataError):
        make_horizon_samples(np.zeros((10, 2)), np.zeros(11), 2)
    with pytest.raises(ConfigError):
        make_horizon_samples(np.zeros((10, 2)), np.zeros(10), 0)


def _sklearn_scores(tX, tY, vX, vY, alphas):
    out = []
    for a in alphas:
        p = Ridge(alpha=a).fit(tX, tY).predict(vX)
        out.append(np.sqrt(np.mean((p - vY) ** 2)) + np.mean(np.abs(p - vY)))
    return np.array(out)


def test_fit_ridge_prefers_large_alpha_on_noise():
    rng = np.random.default_rng(0)
    tX, vX = rng.normal(size=(30, 25)), rng.normal(size=(200, 25))
    tY, vY = rng.normal(size=(30, 3)), rng.normal(size=(200, 3))  # labels independent of features
    model, alpha, scores = fit_ridge(tX, tY, vX, vY)
    assert alpha == 1000 and model.alpha == 1000
    assert list(scores) == [float(a) for a in RIDGE_ALPHAS]
    assert scores[alpha] == min(scores.values()) < scores[0.1]
    np.testing.assert_allclose(
        list(scores.values()), _sklearn_scores(tX, tY, vX, vY, RIDGE_ALPHAS), rtol=1e-9
    )


def test_fit_ridge_prefers_small_alpha_on_exact_linear_map():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(5, 2))
    tX, vX = rng.normal(size=(40, 5)) * 0.3, rng.normal(size=(100, 5)) * 0.3
    tY, vY = tX @ w + 1.5, vX @ w + 1.5
    model, alpha, scores = fit_ridge(tX, tY, vX, vY)
    assert alpha == 0.1 and scores[0.1] == min(scores.values()) < scores[1000.0]
    np.testing.assert_allclose(model.predict(vX), Ridge(alpha=0.1).fit(tX, tY).predict(vX))
    np.testing.assert_allclose(
        ridge_validation_scores(tX, tY, vX, vY), _sklearn_scores(tX, tY, vX, vY, RIDGE_ALPHAS), rtol=1e-9
    )


def test_fit_ridge_subsamples_and_validates():
    rng = np.random.default_rng(2)
    tX, tY = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    model, _, _ = fit_ridge(tX, tY, tX, tY, max_samples=20, seed=0)
    assert model.n_features_in_ == 3
    a = fit_ridge(tX, tY, tX, tY, max_samples=20, seed=0)[0].coef_
    b = fit_ridge(tX, tY, tX, tY, max_samples=20, seed=0)[0].coef_
    np.testing.assert_array_equal(a, b)
    bad = tX.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fit_ridge(bad, tY, tX, tY)


def test_forecast_recovers_noiseless_sinusoid():
    data = sinusoid_data()
    enc = LagEncoder(n_covariate_cols=1, lags=24)
    df, preds = forecast(enc, data, horizons=(1, 6, 24), padding=30, return_predictions=True)
    assert enc.kwargs == {"causal": True, "sliding_length": 1, "sliding_padding": 30, "batch_size": 256}
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["horizon", "mse", "mae", "mse_raw", "mae_raw", "alpha"]
    assert list(df["horizon"]) == [1, 6, 24]
    assert (df["mse"] < 1e-4).all() and (df["mae"] < 1e-2).all()
    assert set(df["alpha"]).issubset({float(a) for a in RIDGE_ALPHAS})
    assert df.attrs["avg"]["mse"] == pytest.approx(df["mse"].mean())
    assert set(df.attrs["fit_time"]) == {1, 6, 24} and df.attrs["encode_time"] >= 0
    # test samples: 160 test steps minus H; raw metrics use the scaler
    p = preds[24]
    assert p["pred"].shape == (160 - 24, 24, 2)
    np.testing.assert_allclose(p["target"][0, :, 0], data.data[0, 561:585, 1], rtol=1e-6)
    raw_err = (p["pred"] - p["target"]) * np.array([3.0, 0.5])
    assert df["mse_raw"].iloc[2] == pytest.approx(np.mean(raw_err**2))
    assert df["mae_raw"].iloc[2] == pytest.approx(np.mean(np.abs(raw_err)))
    table = forecast_summary_table(df)
    assert "avg" in table and "horizon" in table


def test_forecast_univariate_without_covariates():
    d = sinusoid_data(with_cov=False)
    data = FakeForecastData(
        d.data[..., :1],
        d.train_slice,
        d.valid_slice,
        d.test_slice,
        0,
        ["OT"],
        SimpleScaler([0.0], [2.0]),
        univariate=True,
    )
    df = forecast(LagEncoder(0, lags=24), data, horizons=[12], padding=24)
    assert df["mse"].iloc[0] < 1e-4
    assert df["mse_raw"].iloc[0] == pytest.approx(4 * df["mse"].iloc[0])


def test_forecast_errors():
    data = sinusoid_data(n_train=400, n_valid=200)  # test split: 120 steps
    enc = LagEncoder(1, lags=24)
    with pytest.raises(DataError, match="test split: it has 120 steps"):
        forecast(enc, data, horizons=(24, 120), padding=30)
    with pytest.raises(DataError, match="train split: it has 400 steps"):
        forecast(enc, data, horizons=(24,), padding=390)
    with pytest.raises(DataError, match="valid split"):
        forecast(enc, data, horizons=(200,), padding=30)
    for bad in [(0,), (-3,), (1.5,), ("24",), (), (True,), "24", (24, 24)]:
        with pytest.raises(ConfigError):
            forecast(enc, data, horizons=bad, padding=30)
    with pytest.raises(DataError, match="NaN"):
        forecast(LagEncoder(1, lags=24, nan=True), data, horizons=(24,), padding=30)


def test_forecast_summary_table_with_reference():
    df = pd.DataFrame(
        {
            "horizon": [24, 48, 168, 336, 720],
            "mse": [0.04, 0.06, 0.1, 0.12, 0.15],
            "mae": [0.15, 0.19, 0.25, 0.3, 0.32],
        }
    )
    text = forecast_summary_table(
        df, TS2VEC_ETTH1["univariate"], reference_avg=TS2VEC_ETTH1_AVG["univariate"]
    )
    lines = text.splitlines()
    assert "ref_mse" in lines[0] and "mse/ref" in lines[0]
    assert lines[-1].split()[:3] == ["avg", "0.0940", "0.2420"]
    assert "0.1100" in lines[-1] and f"{0.094 / 0.110:.3f}" in lines[-1]
    first = lines[2].split()
    assert first[0] == "24" and first[3] == "0.0390" and first[5] == f"{0.04 / 0.039:.3f}"
    # without reference_avg the reference avg is the mean over the covered horizons
    text2 = forecast_summary_table(df.iloc[:2], TS2VEC_ETTH1["univariate"])
    assert f"{(0.039 + 0.062) / 2:.4f}" in text2.splitlines()[-1]


@pytest.mark.parametrize(
    "table, avg",
    [(TS2VEC_ETTH1, TS2VEC_ETTH1_AVG), (AUTOTCL_ETTH1, AUTOTCL_ETTH1_AVG), (COST_ETTH1, COST_ETTH1_AVG)],
)
def test_published_tables_are_consistent(table, avg):
    for setting in ("univariate", "multivariate"):
        assert list(table[setting]) == [24, 48, 168, 336, 720]
        mse = np.mean([v[0] for v in table[setting].values()])
        mae = np.mean([v[1] for v in table[setting].values()])
        assert abs(mse - avg[setting][0]) <= 6e-4 and abs(mae - avg[setting][1]) <= 6e-4
    assert TS2VEC_ETTH1["univariate"][24] == (0.039, 0.152)
    assert AUTOTCL_ETTH1_AVG["univariate"][0] == 0.076 and COST_ETTH1_AVG["multivariate"][0] == 0.650
