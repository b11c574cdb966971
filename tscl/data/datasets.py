"""Named datasets with the protocols of the papers tscl reproduces.

* UCR/UEA classification sets shipped inside the installed ``sktime`` package (read from its ``.ts`` files; no
  network), preprocessed as TS2Vec does: most univariate UCR sets are already z-normalised and are returned as
  they are; the UCR sets on TS2Vec's "not normalised" list are normalised with the single mean/std of the whole
  train split; multivariate UEA sets are standardised per channel with statistics of the train split.
* ETT forecasting CSVs (Zhou et al., AAAI 2021) split as TS2Vec/AutoTCL/Informer do (12/4/4 months), with 7
  scaled time covariates concatenated in front of the scaled values.

Specs understood by :func:`load`: ``"ucr:GunPoint"`` (``"uea:"`` is an alias), ``"ett:ETTh1"`` (resolved in
``$TSCL_DATA``), ``"ett:/path/ETTh2.csv"`` (the file name picks the ETTh/ETTm/generic split) and a plain
``"/path/data.csv"`` (generic 60/20/20 split).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tscl.data.timeseries import StandardScaler, as_panel
from tscl.errors import ConfigError, DataError

__all__ = [
    "UCR_DATASETS",
    "ETT_DATASETS",
    "UCR_NON_NORMALIZED",
    "ClassificationData",
    "ForecastData",
    "load_ucr",
    "load_ett",
    "load",
    "list_datasets",
    "card_path",
]

# --------------------------------------------------------------------------------------------- registry
# Classification sets whose .ts files ship inside sktime (sktime/datasets/data/). Tecator (regression) and the
# forecasting series there are not classification problems and are left out. JapaneseVowels and PLAID have
# unequal lengths: they are right-padded with NaN (as in the UCR/UEA archive files TS2Vec reads).
_UCR_INFO: dict[str, tuple[str, str]] = {
    "ACSF1": ("UCR", "Power consumption signatures of 10 kinds of home appliances (ACS-F1)"),
    "ArrowHead": ("UCR", "Outlines of projectile points (arrowheads) as angle-based series, 3 classes"),
    "BasicMotions": ("UEA", "Smartwatch 3-D accelerometer + 3-D gyroscope, 4 activities (6 channels)"),
    "GunPoint": ("UCR", "Hand X-position of an actor drawing a gun vs pointing a finger, 2 classes"),
    "ItalyPowerDemand": ("UCR", "Daily Italian power demand (24 hourly values): Oct-Mar vs Apr-Sep days"),
    "JapaneseVowels": (
        "UEA",
        "12 LPC cepstral coefficients of the vowel /ae/ by 9 speakers, variable length",
    ),
    "OSULeaf": ("UCR", "Leaf outlines of 6 tree species as 1-D contour series"),
    "PLAID": ("UCR", "Plug-load appliance current signatures, 11 appliance types, variable length"),
}
UCR_DATASETS: tuple[str, ...] = tuple(_UCR_INFO)

# TS2Vec's list of UCR (2018) datasets that are not z-normalised in the archive; these get normalised with the
# mean/std of the whole train array. Every other univariate UCR set is used as it is.
UCR_NON_NORMALIZED: frozenset[str] = frozenset(
    {
        "AllGestureWiimoteX", "AllGestureWiimoteY", "AllGestureWiimoteZ", "BME", "Chinatown", "Crop",
        "EOGHorizontalSignal", "EOGVerticalSignal", "Fungi", "GestureMidAirD1", "GestureMidAirD2",
        "GestureMidAirD3", "GesturePebbleZ1", "GesturePebbleZ2", "GunPointAgeSpan", "GunPointMaleVersusFemale",
        "GunPointOldVersusYoung", "HouseTwenty", "InsectEPGRegularTrain", "InsectEPGSmallTrain",
        "MelbournePedestrian", "PickupGestureWiimoteZ", "PigAirwayPressure", "PigArtPressure", "PigCVP",
        "PLAID", "PowerCons", "Rock", "SemgHandGenderCh2", "SemgHandMovementCh2", "SemgHandSubjectCh2",
        "ShakeGestureWiimoteZ", "SmoothSubspace", "UMD",
    }
)  # fmt: skip

_ETT_INFO: dict[str, str] = {
    "ETTh1": "Electricity transformer 1: 6 load features + oil temperature (OT), hourly, 2016-07 to 2018-06",
    "ETTh2": "Electricity transformer 2: 6 load features + oil temperature (OT), hourly, 2016-07 to 2018-06",
    "ETTm1": "Electricity transformer 1: 6 load features + oil temperature (OT), 15-minute, 2016-07 to 2018-06",
    "ETTm2": "Electricity transformer 2: 6 load features + oil temperature (OT), 15-minute, 2016-07 to 2018-06",
}
ETT_DATASETS: tuple[str, ...] = tuple(_ETT_INFO)

_ETT_MONTH_HOURS = 30 * 24  # TS2Vec/Informer count a month as 30 days
_COVARIATE_NAMES = ("minute", "hour", "dayofweek", "day", "dayofyear", "month", "weekofyear")
_PROTOCOLS = ("etth", "ettm", "generic")


# --------------------------------------------------------------------------------------------- containers
@dataclass(frozen=True, eq=False)
class ClassificationData:
    """A train/test classification split. ``X_*`` are float32 ``(N, T, C)`` with NaN = missing/padding;
    ``y_*`` are int64 in ``0..K-1``, indexing ``classes_`` (the original labels, sorted)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes_: np.ndarray
    name: str
    multivariate: bool
    preprocessing: str = ""

    @property
    def n_classes(self) -> int:
        return int(len(self.classes_))

    @property
    def n_channels(self) -> int:
        return int(self.X_train.shape[-1])

    def __repr__(self) -> str:
        return (
            f"ClassificationData(name={self.name!r}, X_train={self.X_train.shape}, X_test={self.X_test.shape}, "
            f"n_classes={self.n_classes}, multivariate={self.multivariate})"
        )


@dataclass(frozen=True, eq=False)
class ForecastData:
    """One long series for forecasting, TS2Vec layout.

    ``data`` is float32 ``(1, T, n_covariate_cols + len(target_cols))``: the scaled time covariates first, then
    the scaled value columns. ``train_slice``/``valid_slice``/``test_slice`` index the time axis. ``scaler`` is
    the value :class:`StandardScaler` (``scaler.inverse_transform`` goes back to the original units).
    """

    data: np.ndarray
    train_slice: slice
    valid_slice: slice
    test_slice: slice
    n_covariate_cols: int
    target_cols: list[str]
    scaler: StandardScaler
    name: str
    univariate: bool
    horizons: tuple[int, ...] = (24, 48, 168, 336, 720)
    protocol: str = "generic"
    index: pd.DatetimeIndex | None = None
    covariate_scaler: StandardScaler | None = None
    covariate_cols: tuple[str, ...] = field(default=_COVARIATE_NAMES)
    path: str | None = None

    @property
    def values(self) -> np.ndarray:
        """The scaled value columns, ``(1, T, len(target_cols))``."""
        return self.data[..., self.n_covariate_cols :]

    def __repr__(self) -> str:
        return (
            f"ForecastData(name={self.name!r}, data={self.data.shape}, train={_fmt(self.train_slice)}, "
            f"valid={_fmt(self.valid_slice)}, test={_fmt(self.test_slice)}, targets={self.target_cols}, "
            f"univariate={self.univariate})"
        )


def _fmt(s: slice) -> str:
    return f"[{s.start}:{s.stop})"


# --------------------------------------------------------------------------------------------- UCR / UEA
def _sktime_data_dir() -> Path:
    try:
        import sktime.datasets
    except ImportError as exc:  # pragma: no cover - sktime is a hard dependency
        raise DataError(
            f"the UCR/UEA datasets are read from the installed sktime package, which failed: {exc}"
        ) from None
    return Path(os.path.dirname(sktime.datasets.__file__)) / "data"


def _resolve_ucr_name(name: str) -> str:
    raw = name
    if ":" in name:
        prefix, _, name = name.partition(":")
        if prefix.lower() not in ("ucr", "uea"):
            raise ConfigError(f"{raw!r} is not a UCR/UEA dataset name; use e.g. 'ucr:GunPoint'")
    name = name.strip()
    if name in _UCR_INFO:
        return name
    by_lower = {k.lower(): k for k in _UCR_INFO}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise ConfigError(
        f"unknown UCR/UEA dataset {raw!r}; available (shipped with sktime, no download): {', '.join(UCR_DATASETS)}"
    )


def _label_keys(labels: np.ndarray) -> np.ndarray:
    """Original labels as numbers when they all parse as numbers (so '10' sorts after '2'), else as strings."""
    labels = np.asarray(labels).astype(str)
    try:
        as_float = labels.astype(np.float64)
    except ValueError:
        return labels
    if np.all(np.isfinite(as_float)) and np.all(as_float == np.round(as_float)):
        return as_float.astype(np.int64)
    return as_float


def _encode_labels(
    y_train: np.ndarray, y_test: np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    both = _label_keys(np.concatenate([np.asarray(y_train), np.asarray(y_test)]))
    tr, te = both[: len(y_train)], both[len(y_train) :]
    classes = np.unique(tr)
    unseen = np.setdiff1d(np.unique(te), classes)
    if unseen.size:
        raise DataError(f"{name}: test labels {unseen.tolist()} never occur in the train split")
    return (
        classes,
        np.searchsorted(classes, tr).astype(np.int64),
        np.searchsorted(classes, te).astype(np.int64),
    )


def _pad_time(X: np.ndarray, T: int) -> np.ndarray:
    if X.shape[1] == T:
        return X
    out = np.full((X.shape[0], T, X.shape[2]), np.nan, dtype=X.dtype)
    out[:, : X.shape[1]] = X
    return out


def load_ucr(name: str) -> ClassificationData:
    """Load a UCR/UEA classification set shipped with sktime, preprocessed with TS2Vec's rules.

    Univariate sets are returned as stored (the UCR archive z-normalises each series) unless they are on TS2Vec's
    not-normalised list (:data:`UCR_NON_NORMALIZED`), which are normalised with the scalar mean/std of the whole
    train array; multivariate (UEA) sets are standardised per channel with train statistics. Unequal-length
    sets are right-padded with NaN to the longest series over train and test. Labels are mapped to
    ``0..K-1`` in the sorted order of the unique train labels (numeric order when labels are numbers).
    """
    name = _resolve_ucr_name(name)
    from sktime.datasets import load_from_tsfile

    folder = _sktime_data_dir() / name
    splits = {}
    for split in ("TRAIN", "TEST"):
        path = folder / f"{name}_{split}.ts"
        if not path.is_file():
            raise DataError(
                f"{path} is missing: the installed sktime package does not ship {name}; reinstall sktime"
            )
        try:
            X, y = load_from_tsfile(str(path), return_data_type="nested_univ")
        except Exception as exc:  # sktime raises several types on malformed files
            raise DataError(f"could not read {path}: {exc}") from None
        splits[split] = (as_panel(X, name=f"{name} {split.lower()}", dtype=np.float64), np.asarray(y))
    (X_train, y_train), (X_test, y_test) = splits["TRAIN"], splits["TEST"]
    if X_train.shape[-1] != X_test.shape[-1]:
        raise DataError(f"{name}: train has {X_train.shape[-1]} channels but test has {X_test.shape[-1]}")
    T = max(X_train.shape[1], X_test.shape[1])
    X_train, X_test = _pad_time(X_train, T), _pad_time(X_test, T)
    classes, y_train, y_test = _encode_labels(y_train, y_test, name)

    multivariate = X_train.shape[-1] > 1
    if multivariate:
        scaler = StandardScaler().fit(X_train)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
        how = "per-channel standardisation with train-split mean/std (UEA rule, NaN-aware)"
    elif name in UCR_NON_NORMALIZED:
        mean, std = np.nanmean(X_train), np.nanstd(X_train)
        X_train, X_test = (X_train - mean) / std, (X_test - mean) / std
        how = f"normalised with the whole train split's mean {mean:.6g} and std {std:.6g} (TS2Vec non-normalised list)"
    else:
        how = "none (already z-normalised per series in the UCR archive)"
    return ClassificationData(
        X_train=np.ascontiguousarray(X_train, dtype=np.float32),
        y_train=y_train,
        X_test=np.ascontiguousarray(X_test, dtype=np.float32),
        y_test=y_test,
        classes_=classes,
        name=name,
        multivariate=multivariate,
        preprocessing=how,
    )


# --------------------------------------------------------------------------------------------- ETT / CSV
def _resolve_csv(source: str | os.PathLike[str]) -> Path:
    s = os.fspath(source)
    looks_like_path = isinstance(source, os.PathLike) or s.lower().endswith(".csv") or os.sep in s or "/" in s
    if looks_like_path:
        path = Path(s).expanduser()
        if not path.is_file():
            raise DataError(
                f"CSV file not found: {path}; check the path (or use a name like 'ett:ETTh1' with $TSCL_DATA)"
            )
        return path
    name = s.strip()
    if not name:
        raise ConfigError("empty dataset name; pass a CSV path or a name like 'ETTh1'")
    root = os.environ.get("TSCL_DATA")
    if not root:
        raise ConfigError(
            f"dataset {name!r} is given by name, but the environment variable TSCL_DATA is not set. Either "
            f"`export TSCL_DATA=/path/to/data` (holding {name}.csv or ett/{name}.csv), or pass the file path "
            f"directly (e.g. ett:/path/to/{name}.csv)"
        )
    candidates = [Path(root).expanduser() / f"{name}.csv", Path(root).expanduser() / "ett" / f"{name}.csv"]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(
        f"dataset {name!r} not found: looked for {', '.join(str(c) for c in candidates)}. Put {name}.csv there "
        "(the ETT CSVs are at https://github.com/zhouhaoyi/ETDataset, folder ETT-small) or pass the file path"
    )


def _infer_protocol(name: str) -> str:
    if name.startswith("ETTh"):
        return "etth"
    if name.startswith("ETTm"):
        return "ettm"
    return "generic"


def _split(protocol: str, n_rows: int, path: Path) -> tuple[slice, slice, slice]:
    if protocol in ("etth", "ettm"):
        unit = _ETT_MONTH_HOURS * (4 if protocol == "ettm" else 1)
        need = 20 * unit
        if n_rows < need:
            step = "hourly" if protocol == "etth" else "15-minute"
            raise DataError(
                f"{path.name} has {n_rows} rows, but the {protocol.upper()} protocol needs at least {need} "
                f"(12/4/4 months of 30 days of {step} data for train/valid/test). Use the generic 60/20/20 "
                "split instead (pass the file as a plain path, or protocol='generic')"
            )
        return slice(0, 12 * unit), slice(12 * unit, 16 * unit), slice(16 * unit, 20 * unit)
    a, b = int(0.6 * n_rows), int(0.8 * n_rows)
    if a < 2 or b == a or b == n_rows:
        raise DataError(
            f"{path.name} has {n_rows} rows: too few for the 60/20/20 train/valid/test split (it needs at least "
            "4 rows so that train has 2 rows and valid/test 1 each; far more are needed for a useful model)"
        )
    return slice(0, a), slice(a, b), slice(b, n_rows)


def _time_covariates(idx: pd.DatetimeIndex) -> np.ndarray:
    return np.stack(
        [
            idx.minute.to_numpy(),
            idx.hour.to_numpy(),
            idx.dayofweek.to_numpy(),
            idx.day.to_numpy(),
            idx.dayofyear.to_numpy(),
            idx.month.to_numpy(),
            idx.isocalendar().week.to_numpy(),
        ],
        axis=1,
    ).astype(np.float64)


def load_ett(
    source: str | os.PathLike[str],
    *,
    univariate: bool = False,
    target: str = "OT",
    protocol: str | None = None,
) -> ForecastData:
    """Load an ETT-style CSV (a ``date`` column + numeric value columns) with the TS2Vec forecasting protocol.

    ``source`` is a CSV path or a bare name (``"ETTh1"``) looked up as ``$TSCL_DATA/<name>.csv`` or
    ``$TSCL_DATA/ett/<name>.csv``. The split is chosen from the file name unless ``protocol`` is given:
    ``ETTh*`` -> rows ``[0, 8640) / [8640, 11520) / [11520, 14400)`` (12/4/4 months of 30 days), ``ETTm*`` -> the
    same months at 15-minute resolution (x4), anything else -> 60% / 20% / 20%. Rows after the test slice stay
    in ``data`` but belong to no split. Time covariates (minute, hour, day of week, day of month, day of year,
    month, ISO week) and the value columns (all, or only ``target`` when ``univariate``) are each standardised
    with statistics of the train rows only.
    """
    path = _resolve_csv(source)
    name = path.stem
    if protocol is None:
        protocol = _infer_protocol(name)
    elif protocol not in _PROTOCOLS:
        raise ConfigError(
            f"unknown split protocol {protocol!r}; choose one of {list(_PROTOCOLS)} or None (from the name)"
        )
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"could not read {path} as CSV: {exc}") from None
    if "date" not in df.columns:
        raise DataError(
            f"{path.name} has no 'date' column (columns: {list(df.columns)}); the forecasting protocol builds its "
            "time covariates from the timestamps: name the timestamp column 'date'"
        )
    dates = pd.to_datetime(df["date"], errors="coerce")
    if dates.isna().any():
        i = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise DataError(
            f"{path.name}: {int(dates.isna().sum())} value(s) of the 'date' column are not valid timestamps, "
            f"first at data row {i} ({df['date'].iloc[i]!r}); fix or remove them"
        )
    idx = pd.DatetimeIndex(dates)
    if not idx.is_monotonic_increasing:
        i = int(np.flatnonzero(np.diff(idx.asi8) < 0)[0]) + 1
        raise DataError(
            f"{path.name}: dates are not in increasing order (first decrease at data row {i}); sort the file by date"
        )

    value_cols = [c for c in df.columns if c != "date"]
    if univariate:
        if target not in value_cols:
            raise ConfigError(
                f"target column {target!r} not found in {path.name}; value columns are {value_cols}: pass target=<one of them>"
            )
        cols = [target]
    else:
        cols = value_cols
    if not cols:
        raise DataError(f"{path.name} has no value columns besides 'date'")
    bad = [c for c in cols if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]
    if bad:
        raise DataError(
            f"{path.name} has non-numeric value columns {bad} "
            f"({', '.join(f'{c!r}: {df[c].dtype}' for c in bad)}); convert them to numbers or drop them"
        )
    values = df[cols].to_numpy(dtype=np.float64, na_value=np.nan)
    for j, c in enumerate(cols):
        col = values[:, j]
        for what, mask in (("NaN (missing)", np.isnan(col)), ("infinite", np.isinf(col))):
            if mask.any():
                raise DataError(
                    f"{path.name}: column {c!r} has {int(mask.sum())} {what} value(s), first at data row "
                    f"{int(np.flatnonzero(mask)[0])}; the forecasting protocol needs complete values: fill or drop them"
                )

    train, valid, test = _split(protocol, len(df), path)
    cov = _time_covariates(idx)
    cov_scaler = StandardScaler().fit(cov[train])
    scaler = StandardScaler().fit(values[train])
    data = np.concatenate([cov_scaler.transform(cov), scaler.transform(values)], axis=-1)[None].astype(
        np.float32
    )
    horizons = (24, 48, 168, 336, 720) if protocol == "etth" else (24, 48, 96, 288, 672)
    return ForecastData(
        data=np.ascontiguousarray(data),
        train_slice=train,
        valid_slice=valid,
        test_slice=test,
        n_covariate_cols=cov.shape[1],
        target_cols=list(cols),
        scaler=scaler,
        name=name,
        univariate=bool(univariate),
        horizons=horizons,
        protocol=protocol,
        index=idx,
        covariate_scaler=cov_scaler,
        path=str(path),
    )


# --------------------------------------------------------------------------------------------- dispatch
def load(spec: str | os.PathLike[str], **kw: Any) -> ClassificationData | ForecastData:
    """Load a dataset from a spec string.

    ``"ucr:GunPoint"`` / ``"uea:BasicMotions"`` -> :func:`load_ucr`; ``"ett:ETTh1"`` or ``"ett:/path/ETTh2.csv"``
    -> :func:`load_ett` (the file name picks the ETTh / ETTm / generic split); a plain path to a ``.csv`` ->
    :func:`load_ett` with the generic 60/20/20 split. Keyword arguments go to :func:`load_ett`
    (``univariate``, ``target``, ``protocol``).
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"dataset spec must be a non-empty string like 'ucr:GunPoint', got {spec!r}")
    spec = spec.strip()
    prefix, sep, rest = spec.partition(":")
    kind = prefix.lower()
    if sep and kind in ("ucr", "uea"):
        if kw:
            raise ConfigError(f"options {sorted(kw)} do not apply to the classification dataset {spec!r}")
        return load_ucr(rest)
    if sep and kind == "ett":
        return load_ett(rest, **kw)
    if spec.lower().endswith(".csv"):
        kw.setdefault("protocol", "generic")
        return load_ett(spec, **kw)
    if sep and len(prefix) > 1:
        raise ConfigError(
            f"unknown dataset kind {prefix!r} in {spec!r}; use 'ucr:<name>', 'ett:<name or path>' or a .csv path"
        )
    hint = ""
    if spec in _UCR_INFO or spec.lower() in {k.lower() for k in _UCR_INFO}:
        hint = f" Did you mean 'ucr:{spec}'?"
    elif spec.lower().startswith("ett"):
        hint = f" Did you mean 'ett:{spec}'?"
    raise ConfigError(
        f"cannot tell what dataset {spec!r} is: use 'ucr:<name>' ({', '.join(UCR_DATASETS)}), 'ett:<name or path>' "
        f"or a path to a .csv file.{hint}"
    )


# --------------------------------------------------------------------------------------------- cards
def _card_roots() -> list[Path]:
    import tscl

    pkg = Path(tscl.__file__).resolve().parent
    return [pkg / "data_cards", pkg.parent / "data_cards"]


def card_path(name: str) -> Path | None:
    """Path of the Markdown card of dataset ``name`` (``"ucr:GunPoint"``, ``"GunPoint"``, ``"ett:ETTh1"``), looked
    up in ``<tscl>/data_cards`` (wheel install) then ``<repo>/data_cards`` (editable install); None if absent."""
    base = name.partition(":")[2] if ":" in name else name
    base = Path(base).stem if base.lower().endswith(".csv") else base
    for root in _card_roots():
        p = root / f"{base}.md"
        if p.is_file():
            return p
    return None


def list_datasets() -> list[dict[str, Any]]:
    """The named datasets: ``[{"name", "kind", "description", "card"}, ...]``."""
    out: list[dict[str, Any]] = []
    for n, (archive, desc) in _UCR_INFO.items():
        card = card_path(n)
        out.append(
            {
                "name": f"ucr:{n}",
                "kind": "classification",
                "description": f"{archive}: {desc}",
                "card": str(card) if card else None,
            }
        )
    for n, desc in _ETT_INFO.items():
        card = card_path(n)
        out.append(
            {
                "name": f"ett:{n}",
                "kind": "forecasting",
                "description": desc,
                "card": str(card) if card else None,
            }
        )
    return out
