"""Tests of tscl.data: adapters/validation, scaling, TS2Vec windowing helpers, named datasets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tscl.data import (
    UCR_DATASETS,
    ClassificationData,
    ForecastData,
    StandardScaler,
    as_panel,
    card_path,
    centerize_vary_length_series,
    drop_all_nan,
    list_datasets,
    load,
    load_ett,
    load_ucr,
    prepare_train_panel,
    split_long_series,
    split_with_nan,
)
from tscl.errors import ConfigError, DataError, TsclError

nan = np.nan


# ============================================================================ as_panel: accepted inputs
def test_as_panel_numpy_3d_is_n_t_c():
    X = np.arange(24, dtype=np.float64).reshape(2, 4, 3)
    out = as_panel(X)
    assert out.shape == (2, 4, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, X)
    assert as_panel(X, dtype=np.float64).dtype == np.float64


def test_as_panel_1d_array_and_series_are_one_univariate_series():
    x = np.array([1.0, 2.0, nan, 4.0])
    assert as_panel(x).shape == (1, 4, 1)
    s = pd.Series([1, 2, None, 4], dtype="Int64")  # nullable ints: pd.NA -> NaN
    out = as_panel(s)
    assert out.shape == (1, 4, 1) and np.isnan(out[0, 2, 0]) and out[0, 3, 0] == 4


def test_as_panel_wide_dataframe_is_one_multivariate_series():
    idx = pd.date_range("2020-01-01", periods=5, freq="D")
    df = pd.DataFrame({"a": np.arange(5.0), "b": np.arange(5) * 2}, index=idx)
    out = as_panel(df)
    assert out.shape == (1, 5, 2)
    np.testing.assert_array_equal(out[0, :, 1], np.arange(5) * 2)


@pytest.mark.parametrize("mtype", ["pd-multiindex", "nested_univ", "df-list"])
def test_as_panel_sktime_mtypes_equal_length(mtype):
    from sktime.datatypes import convert_to

    X = np.random.default_rng(0).standard_normal((3, 6, 2))
    sk = convert_to(X.transpose(0, 2, 1), to_type=mtype)  # sktime numpy3D is (N, C, T)
    np.testing.assert_allclose(as_panel(sk), X, rtol=1e-6)


def test_as_panel_sktime_unequal_length_is_right_padded_with_nan():
    frames = [pd.DataFrame(np.arange(6.0).reshape(3, 2)), pd.DataFrame(np.arange(10.0).reshape(5, 2))]
    out = as_panel(frames)  # df-list
    assert out.shape == (2, 5, 2)
    np.testing.assert_array_equal(out[0, :3], np.arange(6.0).reshape(3, 2))
    assert np.isnan(out[0, 3:]).all() and not np.isnan(out[1]).any()
    multi = pd.concat(frames, keys=[0, 1])  # pd-multiindex, unequal
    np.testing.assert_array_equal(as_panel(multi), out)


def test_as_panel_torch_tensor_and_list_of_arrays():
    import torch

    t = torch.arange(12, dtype=torch.float64).reshape(1, 4, 3)
    np.testing.assert_array_equal(as_panel(t), t.numpy())
    out = as_panel([np.ones(3), np.ones(5)])
    assert out.shape == (2, 5, 1) and np.isnan(out[0, 3:]).all()


# ============================================================================ as_panel: one DataError per case
def test_error_2d_array_is_ambiguous():
    with pytest.raises(DataError, match="ambiguous") as e:
        as_panel(np.zeros((4, 10)))
    assert "(N, T, C)" in str(e.value) and "[:, :, None]" in str(e.value)


def test_error_wrong_rank():
    with pytest.raises(DataError, match="wrong rank: 4 dimensions"):
        as_panel(np.zeros((2, 3, 4, 5)))


@pytest.mark.parametrize(
    "shape,what", [((0, 5, 1), "no samples"), ((2, 0, 1), "no time steps"), ((2, 5, 0), "no channels")]
)
def test_error_empty(shape, what):
    with pytest.raises(DataError, match=f"empty.*{what}"):
        as_panel(np.zeros(shape))


def test_error_non_numeric_columns_are_named():
    df = pd.DataFrame({"x": [1.0, 2.0], "label": ["a", "b"], "date": ["2020-01-01", "2020-01-02"]})
    with pytest.raises(DataError, match="non-numeric columns") as e:
        as_panel(df)
    assert "'label'" in str(e.value) and "'date'" in str(e.value) and "'x'" not in str(e.value).split("(")[0]


def test_error_non_numeric_array():
    with pytest.raises(DataError, match="non-numeric dtype"):
        as_panel(np.array([[["a"]]]))


def test_error_inf_says_count_and_where():
    X = np.zeros((2, 5, 1))
    X[1, 3, 0] = np.inf
    X[1, 4, 0] = -np.inf
    with pytest.raises(DataError, match=r"2 infinite value\(s\).*first at index .* = \(1, 3, 0\)"):
        as_panel(X)


def test_error_all_nan():
    with pytest.raises(DataError, match="entirely NaN: it has no observed value"):
        as_panel(np.full((2, 3, 1), nan))


def test_error_sample_all_nan_names_its_index():
    X = np.ones((3, 4, 2))
    X[1] = nan
    with pytest.raises(DataError, match="sample 1 of X is entirely NaN"):
        as_panel(X)


def test_error_too_short_says_length_and_minimum():
    with pytest.raises(DataError, match="series length is 5 time steps, but at least 10"):
        as_panel(np.zeros((1, 5, 1)), min_length=10)


def test_error_nan_not_allowed():
    X = np.ones((1, 4, 1))
    X[0, 2, 0] = nan
    assert np.isnan(as_panel(X)).sum() == 1  # allowed by default
    with pytest.raises(DataError, match=r"1 NaN .* \(0, 2, 0\), but missing values are not allowed"):
        as_panel(X, allow_nan=False)


def test_errors_are_tscl_errors_with_custom_name():
    with pytest.raises(TsclError, match="X_train is a 2-D array"):
        as_panel(np.zeros((2, 2)), name="X_train")


# ============================================================================ StandardScaler
def test_scaler_fits_on_train_only_and_is_nan_aware():
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 2.0, size=(8, 50, 3))
    train[0, :10, 1] = nan
    sc = StandardScaler().fit(train)
    flat = train.reshape(-1, 3)
    np.testing.assert_allclose(sc.mean_, np.nanmean(flat, axis=0))
    np.testing.assert_allclose(sc.scale_, np.nanstd(flat, axis=0))
    mean_before = sc.mean_.copy()
    test = rng.normal(100.0, 50.0, size=(4, 50, 3))  # very different test data
    out = sc.transform(test)
    np.testing.assert_array_equal(sc.mean_, mean_before)  # transform does not refit
    assert out.mean() > 10  # test is scaled with train statistics, so it is not centred
    z = sc.transform(train)
    np.testing.assert_allclose(np.nanmean(z.reshape(-1, 3), axis=0), 0, atol=1e-9)
    assert np.isnan(z[0, :10, 1]).all()


def test_scaler_constant_channel_gets_scale_one_and_2d_input():
    X = np.stack([np.arange(6.0), np.full(6, 3.0)], axis=1)  # (T, C)
    sc = StandardScaler().fit(X)
    assert sc.scale_[1] == 1.0
    np.testing.assert_array_equal(sc.transform(X)[:, 1], 0.0)


def test_scaler_round_trip_and_state_dict():
    X = np.random.default_rng(1).normal(3, 4, size=(5, 20, 2)).astype(np.float32)
    sc = StandardScaler()
    Z = sc.fit_transform(X)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(sc.inverse_transform(Z), X, rtol=1e-5, atol=1e-5)
    state = json.loads(json.dumps(sc.state_dict()))  # plain JSON-able
    sc2 = StandardScaler.from_state_dict(state)
    np.testing.assert_array_equal(sc2.transform(X), Z)


def test_scaler_transform_before_fit_and_bad_state():
    with pytest.raises(DataError, match="not fitted"):
        StandardScaler().transform(np.zeros((3, 2)))
    with pytest.raises(DataError, match="invalid StandardScaler state"):
        StandardScaler.from_state_dict({"mean": [0.0]})
    sc = StandardScaler().fit(np.random.default_rng(0).standard_normal((10, 3)))
    with pytest.raises(DataError, match="fitted on 3 channel"):
        sc.transform(np.zeros((10, 2)))


# ============================================================================ windows
def test_split_with_nan_uneven_sections():
    x = np.arange(10, dtype=np.float64).reshape(1, 10, 1)
    out = split_with_nan(x, 4, axis=1)  # np.array_split sizes 3, 3, 2, 2 -> padded to 3
    expected = np.array([[0, 1, 2], [3, 4, 5], [6, 7, nan], [8, 9, nan]])[..., None]
    np.testing.assert_array_equal(out, expected)


def test_split_with_nan_stacks_piece_major_on_batch_axis():
    x = np.stack([np.arange(4.0), 10 + np.arange(4.0)])[..., None]  # (2, 4, 1)
    out = split_with_nan(x, 2, axis=1)
    np.testing.assert_array_equal(out[:, :, 0], [[0, 1], [10, 11], [2, 3], [12, 13]])


def test_split_long_series_rule():
    X = np.ones((2, 7, 3))
    assert split_long_series(X, 7) is X
    out = split_long_series(X, 3)  # TS2Vec: 7 // 3 = 2 sections (of 4 and 3 steps, NaN-padded to 4)
    assert out.shape == (4, 4, 3)
    assert np.isnan(out).sum() == 2 * 1 * 3  # the second piece misses one step, per sample
    assert split_long_series(np.ones((1, 8640, 2)), 3000).shape == (2, 4320, 2)  # ETTh1's train slice
    assert split_long_series(np.ones((1, 5999, 2)), 3000).shape == (1, 5999, 2)  # 1 section: unchanged
    with pytest.raises(ConfigError):
        split_long_series(X, 0)


def test_centerize_vary_length_series():
    X = np.array(
        [
            [nan, nan, 1, 2],  # 2 leading NaN -> 1 in front, 1 behind
            [1, 2, 3, nan],  # 1 trailing NaN -> stays in front-0/back-1 ((0+1)//2 = 0)
            [nan, 5, 6, nan],  # already centred
            [nan, nan, nan, nan],  # no observation: unchanged
        ]
    )[..., None]
    out = centerize_vary_length_series(X)
    expected = np.array([[nan, 1, 2, nan], [1, 2, 3, nan], [nan, 5, 6, nan], [nan, nan, nan, nan]])[..., None]
    np.testing.assert_array_equal(out, expected)
    Y = np.array([[1, 2, 3, nan, nan, nan]], dtype=float)[..., None]
    np.testing.assert_array_equal(centerize_vary_length_series(Y)[0, :, 0], [nan, 1, 2, 3, nan, nan])


def test_drop_all_nan_and_prepare_train_panel():
    X = np.ones((3, 4, 1))
    X[1] = nan
    assert drop_all_nan(X).shape == (2, 4, 1)
    Y = np.arange(12.0).reshape(1, 12, 1)
    Y[0, 8:] = nan  # trailing NaN
    out = prepare_train_panel(
        Y, max_train_length=4
    )  # 12 // 4 = 3 pieces: [0..3], [4..7], [nan x4] -> dropped
    np.testing.assert_array_equal(out[:, :, 0], [[0, 1, 2, 3], [4, 5, 6, 7]])
    Z = np.array([[nan, nan, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0]])[..., None]  # leading NaN -> centred
    np.testing.assert_array_equal(prepare_train_panel(Z)[:, :, 0], [[nan, 1, 2, nan], [1, 2, 3, 4]])


# ============================================================================ UCR / UEA
def test_load_ucr_gunpoint():
    d = load_ucr("GunPoint")
    assert isinstance(d, ClassificationData)
    assert d.X_train.shape == (50, 150, 1) and d.X_test.shape == (150, 150, 1)
    assert d.X_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert set(np.unique(d.y_train)) == {0, 1} and set(np.unique(d.y_test)) == {0, 1}
    assert list(d.classes_) == [1, 2] and d.name == "GunPoint" and not d.multivariate
    # already z-normalised in the archive and returned as is (TS2Vec): every series has mean ~0, std ~1
    np.testing.assert_allclose(d.X_train.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(d.X_train.std(axis=1), 1, atol=2e-2)


def test_load_ucr_basicmotions_uea_per_channel_standardised():
    d = load("ucr:BasicMotions")
    assert d.X_train.shape == (40, 100, 6) and d.X_test.shape == (40, 100, 6)
    assert d.multivariate and d.n_classes == 4
    np.testing.assert_allclose(d.X_train.mean(axis=(0, 1)), 0, atol=1e-4)
    np.testing.assert_allclose(d.X_train.std(axis=(0, 1)), 1, atol=1e-4)
    assert not np.allclose(d.X_test.mean(axis=(0, 1)), 0, atol=1e-3)  # test uses train statistics


def test_load_ucr_variable_length_is_nan_padded():
    d = load("uea:JapaneseVowels")
    assert d.X_train.shape == (270, 29, 12) and d.X_test.shape == (370, 29, 12)
    lengths = (~np.isnan(np.concatenate([d.X_train, d.X_test])).all(axis=-1)).sum(axis=1)
    assert lengths.min() == 7 and lengths.max() == 29  # train and test padded to the common maximum
    np.testing.assert_allclose(np.nanmean(d.X_train, axis=(0, 1)), 0, atol=1e-4)


def test_load_ucr_unknown_name():
    with pytest.raises(ConfigError, match="unknown UCR/UEA dataset 'NoSuchSet'.*GunPoint"):
        load_ucr("NoSuchSet")


# ============================================================================ ETT / CSV
def test_load_ett_real_etth1(ett_dir):
    f = load_ett(ett_dir / "ETTh1.csv")
    assert isinstance(f, ForecastData)
    # all 17,420 rows are kept; the protocol's splits stop after 20 months (TS2Vec keeps the tail unused)
    assert f.data.shape == (1, 17420, 14) and f.data.dtype == np.float32
    assert (f.train_slice.start, f.train_slice.stop) == (0, 8640)
    assert (f.valid_slice.start, f.valid_slice.stop) == (8640, 11520)
    assert (f.test_slice.start, f.test_slice.stop) == (11520, 14400)
    assert f.n_covariate_cols == 7 and f.target_cols == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    train_vals = f.data[0, f.train_slice, 7:]
    np.testing.assert_allclose(train_vals.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(train_vals.std(axis=0), 1, atol=1e-4)
    assert f.horizons == (24, 48, 168, 336, 720) and f.protocol == "etth"
    raw = pd.read_csv(ett_dir / "ETTh1.csv")
    np.testing.assert_allclose(
        f.scaler.inverse_transform(f.values[0])[:, -1], raw["OT"], rtol=1e-4, atol=1e-3
    )


def test_load_ett_real_univariate(ett_dir):
    f = load(f"ett:{ett_dir / 'ETTh1.csv'}", univariate=True)
    assert f.data.shape == (1, 17420, 8) and f.target_cols == ["OT"] and f.univariate
    np.testing.assert_allclose(f.data[0, f.train_slice, -1].mean(), 0, atol=1e-4)


def test_load_ett_generic_csv(make_ett_csv):
    path = make_ett_csv(n_rows=200)
    f = load(str(path))  # plain path -> generic 60/20/20
    assert f.data.shape == (1, 200, 14) and f.protocol == "generic"
    assert (f.train_slice.stop, f.valid_slice.stop, f.test_slice.stop) == (120, 160, 200)
    assert f.horizons == (24, 48, 96, 288, 672)
    # covariate order: minute, hour, dayofweek, day, dayofyear, month, week; hour follows the timestamps
    hours = f.covariate_scaler.inverse_transform(f.data[0, :, :7])[:, 1]
    np.testing.assert_allclose(hours, np.arange(200) % 24, atol=1e-3)
    np.testing.assert_allclose(f.data[0, :120, 7:].mean(axis=0), 0, atol=1e-5)


def test_load_ett_by_name_through_tscl_data(make_ett_csv, tmp_path, monkeypatch):
    make_ett_csv(name="ett/mini.csv")
    monkeypatch.setenv("TSCL_DATA", str(tmp_path))
    assert load("ett:mini").data.shape == (1, 200, 14)
    monkeypatch.delenv("TSCL_DATA")
    with pytest.raises(ConfigError, match="TSCL_DATA is not set"):
        load("ett:ETTh1")
    monkeypatch.setenv("TSCL_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="not found: looked for"):
        load("ett:ETTh1")


def test_load_ett_name_picks_protocol_and_checks_rows(make_ett_csv):
    path = make_ett_csv(name="ETTh9.csv", n_rows=300)
    with pytest.raises(DataError, match="has 300 rows, but the ETTH protocol needs at least 14400"):
        load(f"ett:{path}")
    assert load(str(path)).protocol == "generic"  # a plain path uses the generic split
    with pytest.raises(DataError, match="too few for the 60/20/20"):
        load_ett(make_ett_csv(name="three.csv", n_rows=3))
    assert load_ett(make_ett_csv(name="four.csv", n_rows=4)).train_slice == slice(0, 2)


def test_load_ett_missing_file_and_date_column(make_ett_csv, tmp_path):
    with pytest.raises(DataError, match="CSV file not found"):
        load_ett(tmp_path / "nope.csv")
    path = make_ett_csv(edit=lambda df: df.rename(columns={"date": "time"}))
    with pytest.raises(DataError, match="no 'date' column"):
        load_ett(path)


def test_load_ett_non_numeric_nan_inf_columns_named(make_ett_csv):
    def put(col, value):
        def edit(df):
            df[col] = df[col].astype(object)
            df.loc[5, col] = value
            return df

        return edit

    with pytest.raises(DataError, match=r"non-numeric value columns \['MULL'\]"):
        load_ett(make_ett_csv(name="a.csv", edit=put("MULL", "oops")))
    with pytest.raises(DataError, match=r"column 'OT' has 1 NaN \(missing\) value\(s\), first at data row 5"):
        load_ett(make_ett_csv(name="b.csv", edit=put("OT", nan)))
    with pytest.raises(DataError, match="column 'HULL' has 1 infinite"):
        load_ett(make_ett_csv(name="c.csv", edit=put("HULL", np.inf)))
    with pytest.raises(ConfigError, match="target column 'load' not found"):
        load_ett(make_ett_csv(name="d.csv"), univariate=True, target="load")


# ============================================================================ dispatch, registry, cards
def test_load_dispatch_errors():
    with pytest.raises(ConfigError, match="unknown dataset kind 'foo'"):
        load("foo:bar")
    with pytest.raises(ConfigError, match="Did you mean 'ucr:GunPoint'"):
        load("GunPoint")


def test_list_datasets_and_cards():
    entries = list_datasets()
    names = {e["name"] for e in entries}
    assert {"ucr:GunPoint", "ucr:BasicMotions", "ett:ETTh1", "ett:ETTm2"} <= names
    assert len(entries) == len(UCR_DATASETS) + 4
    for e in entries:
        assert e["kind"] in ("classification", "forecasting") and e["description"]
        assert e["card"] is not None, f"missing data card for {e['name']}"
        text = open(e["card"], encoding="utf-8").read()
        for section in ("## Source", "## Licence", "## Size", "## Splits", "## Preprocessing", "## Caveats"):
            assert section in text, (e["name"], section)
    assert card_path("ucr:GunPoint").name == "GunPoint.md"
    assert card_path("ucr:NoSuchSet") is None
