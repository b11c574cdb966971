"""Input adapters, validation and scaling.

Everything in tscl is a panel of shape ``(N, T, C)``: ``N`` series (samples), ``T`` time steps, ``C`` channels,
with NaN marking missing steps (the TS2Vec convention). :func:`as_panel` turns the usual containers into that
shape and checks them, raising :class:`~tscl.errors.DataError` with a message that names the problem and what
to do about it. :class:`StandardScaler` is the per-channel, NaN-aware scaler used by the dataset loaders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from tscl.errors import DataError

__all__ = ["as_panel", "StandardScaler"]

_SKTIME_HINT = "a sktime Panel mtype (pd-multiindex, nested_univ, df-list)"
_ACCEPTED = (
    "(N, T, C) numpy array or torch tensor, a 1-D array / pandas Series (one univariate series), "
    f"a wide pandas DataFrame (rows = time; one multivariate series), {_SKTIME_HINT}, "
    "or a list of 1-D / (T, C) arrays"
)


# --------------------------------------------------------------------------------------------- conversion
def _is_torch_tensor(X: Any) -> bool:
    return type(X).__module__.split(".")[0] == "torch" and hasattr(X, "detach") and hasattr(X, "cpu")


def _torch_to_numpy(X: Any) -> np.ndarray:
    import torch

    t = X.detach().cpu()
    if t.dtype in (torch.bfloat16,):
        t = t.float()
    if t.is_complex():
        raise DataError("complex-valued tensors are not supported; pass the real part (or magnitude) instead")
    return t.numpy()


def _numeric_array(arr: np.ndarray, name: str) -> np.ndarray:
    """Make sure ``arr`` holds real numbers (bool/int/float); object arrays of numbers are converted."""
    kind = arr.dtype.kind
    if kind in "biuf":
        return arr
    if kind == "O":
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{name} has dtype object with non-numeric entries ({exc}); convert it to numbers "
                f"(e.g. np.asarray({name}, dtype=float)) before passing it"
            ) from None
    raise DataError(
        f"{name} has non-numeric dtype {arr.dtype} ({'complex' if kind == 'c' else 'not a real number'}); "
        "tscl needs real-valued numbers: convert or drop the offending values"
    )


def _check_numeric_columns(df: pd.DataFrame, name: str) -> None:
    bad = [
        c
        for c in df.columns
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_complex_dtype(df[c])
    ]
    if bad:
        dtypes = ", ".join(f"{c!r}: {df[c].dtype}" for c in bad)
        raise DataError(
            f"{name} has non-numeric columns {bad} ({dtypes}); convert them to numbers or drop them. "
            "A timestamp column belongs in the index (df.set_index('date'))."
        )


def _frame_to_float(df: pd.DataFrame) -> np.ndarray:
    return df.to_numpy(dtype=np.float64, na_value=np.nan)


def _pad_list(arrays: Sequence[np.ndarray], name: str) -> np.ndarray:
    """Stack a list of ``(T_i, C)`` arrays into ``(N, max T_i, C)``, right-padding with NaN."""
    if len(arrays) == 0:
        raise DataError(f"{name} is empty: the list holds no series; pass at least one series")
    chans = {a.shape[1] for a in arrays}
    if len(chans) > 1:
        raise DataError(
            f"{name}: the series have different numbers of channels {sorted(chans)}; every series of a panel "
            "must have the same channels"
        )
    t_max = max(a.shape[0] for a in arrays)
    out = np.full((len(arrays), t_max, chans.pop()), np.nan, dtype=np.float64)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return out


def _from_sktime(X: Any, mtype: str, name: str) -> np.ndarray:
    """Convert a sktime Panel container with sktime's own checkers/converters; returns ``(N, T, C)``."""
    try:
        from sktime.datatypes import check_is_mtype, convert_to
    except ImportError as exc:  # pragma: no cover - sktime is a hard dependency
        raise DataError(
            f"{name} looks like a sktime {mtype} panel, but sktime is not importable: {exc}"
        ) from None
    valid, msg, meta = check_is_mtype(X, mtype, scitype="Panel", return_metadata=["is_equal_length"])
    if not valid:
        raise DataError(
            f"{name} looks like a sktime {mtype} panel but does not pass sktime's check: {msg}. "
            f"Fix the container or pass an {_ACCEPTED}"
        )
    if meta.get("is_equal_length", False):
        arr = np.asarray(convert_to(X, to_type="numpy3D"))  # sktime numpy3D is (N, C, T)
        return _numeric_array(arr, name).transpose(0, 2, 1)
    frames = convert_to(X, to_type="df-list")
    for f in frames:
        _check_numeric_columns(f, name)
    return _pad_list([_frame_to_float(f) for f in frames], name)


def _is_nested_univ(df: pd.DataFrame) -> bool:
    if df.shape[0] == 0 or df.shape[1] == 0:
        return False
    return any(isinstance(df.iat[0, j], pd.Series) for j in range(df.shape[1]))


def _list_to_panel(X: Sequence[Any], name: str) -> np.ndarray:
    if len(X) == 0:
        raise DataError(f"{name} is empty: the list holds no series; pass at least one series")
    if all(isinstance(x, pd.DataFrame) for x in X):
        return _from_sktime(list(X), "df-list", name)
    arrays = []
    for i, x in enumerate(X):
        if isinstance(x, pd.Series | pd.DataFrame):
            if isinstance(x, pd.Series):
                x = x.to_frame()
            _check_numeric_columns(x, f"{name}[{i}]")
            a = _frame_to_float(x)
        else:
            a = _torch_to_numpy(x) if _is_torch_tensor(x) else np.asarray(x)
            a = _numeric_array(a, f"{name}[{i}]")
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise DataError(
                f"{name}[{i}] has {a.ndim} dimensions; each series in a list must be 1-D (T,) or 2-D (T, C)"
            )
        arrays.append(a)
    return _pad_list(arrays, name)


def _to_raw_panel(X: Any, name: str) -> np.ndarray:
    """Convert any accepted container to a numeric numpy array of shape (N, T, C) (not yet validated)."""
    if X is None:
        raise DataError(f"{name} is None; pass an {_ACCEPTED}")
    if _is_torch_tensor(X):
        X = _torch_to_numpy(X)
    if isinstance(X, pd.Series):
        if not pd.api.types.is_numeric_dtype(X) or pd.api.types.is_complex_dtype(X):
            raise DataError(f"{name} is a non-numeric Series (dtype {X.dtype}); convert it to numbers")
        return X.to_numpy(dtype=np.float64, na_value=np.nan)[None, :, None]
    if isinstance(X, pd.DataFrame):
        if isinstance(X.index, pd.MultiIndex):
            return _from_sktime(X, "pd-multiindex", name)
        if _is_nested_univ(X):
            return _from_sktime(X, "nested_univ", name)
        _check_numeric_columns(X, name)
        return _frame_to_float(X)[None]
    if isinstance(X, list | tuple):
        if len(X) > 0 and all(np.isscalar(v) for v in X):
            X = np.asarray(X)
        else:
            return _list_to_panel(X, name)
    if isinstance(X, str | bytes | dict):
        raise DataError(f"{name} has unsupported type {type(X).__name__}; pass an {_ACCEPTED}")
    arr = np.asarray(X)
    arr = _numeric_array(arr, name)
    if arr.ndim == 3:
        return arr
    if arr.ndim == 1:
        return arr[None, :, None]
    if arr.ndim == 2:
        raise DataError(
            f"{name} is a 2-D array of shape {arr.shape}, which is ambiguous: it could be N univariate series "
            f"of length T, or one series with T steps and C channels. Pass a 3-D (N, T, C) array instead: "
            f"{name}[:, :, None] for N univariate series, or {name}[None] for a single (T, C) series."
        )
    raise DataError(
        f"{name} has the wrong rank: {arr.ndim} dimensions (shape {arr.shape}); expected a 3-D (N, T, C) array "
        "(or 1-D for a single univariate series)"
    )


# --------------------------------------------------------------------------------------------- validation
def _first_index(mask: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(i) for i in np.argwhere(mask)[0])  # type: ignore[return-value]


def as_panel(
    X: Any,
    *,
    name: str = "X",
    min_length: int = 1,
    allow_nan: bool = True,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Convert ``X`` to a validated ``(N, T, C)`` array of ``dtype`` (NaN marks missing steps).

    Accepted inputs:

    * a 3-D numpy array or torch tensor, read as ``(N, T, C)`` (TS2Vec convention);
    * a 1-D array or pandas Series: one univariate series ``(1, T, 1)``;
    * a wide pandas DataFrame (rows = time, columns = channels, any index): one series ``(1, T, C)``;
    * sktime Panel mtypes ``pd-multiindex``, ``nested_univ`` and ``df-list``, converted with sktime's own
      converters (sktime's numpy3D is ``(N, C, T)`` and is transposed); unequal lengths are right-padded with NaN;
    * a list of 1-D ``(T,)`` or 2-D ``(T, C)`` arrays (unequal lengths are right-padded with NaN).

    A 2-D numpy array is refused: ``(N, T)`` and ``(T, C)`` cannot be told apart.

    Raises :class:`DataError` for: wrong rank, an empty panel, non-numeric data, +/-inf, an all-NaN panel,
    an all-NaN sample, series shorter than ``min_length``, and any NaN when ``allow_nan`` is False.
    """
    arr = _to_raw_panel(X, name)
    n, t, c = arr.shape
    if n == 0 or t == 0 or c == 0:
        what = ", ".join(
            w for w, k in (("no samples", n), ("no time steps", t), ("no channels", c)) if k == 0
        )
        raise DataError(f"{name} is empty: shape (N, T, C) = {arr.shape} has {what}; pass at least one value")
    if t < min_length:
        raise DataError(
            f"{name} is too short: series length is {t} time steps, but at least {min_length} are needed here; "
            "pass longer series (or lower the crop / window length)"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(arr, dtype=dtype)
    inf = np.isinf(out)
    if inf.any():
        first = _first_index(inf)
        raise DataError(
            f"{name} contains {int(inf.sum())} infinite value(s) (+/-inf, possibly from overflow when casting "
            f"to {np.dtype(dtype).name}); first at index (sample, step, channel) = {first}. Replace them with NaN "
            "to mark them missing, or fix / clip them."
        )
    nan = np.isnan(out)
    if nan.all():
        raise DataError(f"{name} is entirely NaN: it has no observed value at all; check how it was loaded")
    empty_samples = np.flatnonzero(nan.all(axis=(1, 2)))
    if empty_samples.size:
        shown = empty_samples[:10].tolist()
        raise DataError(
            f"sample {int(empty_samples[0])} of {name} is entirely NaN ({empty_samples.size} such sample(s): "
            f"{shown}{' ...' if empty_samples.size > 10 else ''}); drop them (tscl.data.drop_all_nan) or fill them"
        )
    if not allow_nan and nan.any():
        first = _first_index(nan)
        raise DataError(
            f"{name} contains {int(nan.sum())} NaN (missing) value(s), first at index (sample, step, channel) = "
            f"{first}, but missing values are not allowed here; impute or drop them first"
        )
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------------------------- scaling
class StandardScaler:
    """Per-channel standardisation ``(x - mean_) / scale_``, fitted on training data only.

    Statistics are NaN-aware (``nanmean`` / ``nanstd`` over all samples and steps, population std as in
    scikit-learn); a channel with zero spread gets ``scale_ = 1``. Works on ``(N, T, C)`` or ``(T, C)`` arrays
    (the last axis is the channel axis). Output keeps the input's float dtype (float64 for integer input).
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    # -- helpers
    @staticmethod
    def _as_array(X: Any) -> np.ndarray:
        if _is_torch_tensor(X):
            X = _torch_to_numpy(X)
        if isinstance(X, pd.DataFrame | pd.Series):
            X = X.to_numpy(dtype=np.float64, na_value=np.nan)
        arr = _numeric_array(np.asarray(X), "X")
        if arr.ndim not in (2, 3):
            raise DataError(
                f"StandardScaler expects a (N, T, C) or (T, C) array; got {arr.ndim} dimensions (shape {arr.shape})"
            )
        return arr

    def _check_fitted(self, arr: np.ndarray) -> None:
        if self.mean_ is None or self.scale_ is None:
            raise DataError("this StandardScaler is not fitted yet; call fit(X_train) before transform")
        if arr.shape[-1] != self.mean_.shape[0]:
            raise DataError(
                f"StandardScaler was fitted on {self.mean_.shape[0]} channel(s) but got {arr.shape[-1]}; "
                "transform data with the same channels as the training data"
            )

    @property
    def n_features_(self) -> int:
        if self.mean_ is None:
            raise DataError("this StandardScaler is not fitted yet")
        return int(self.mean_.shape[0])

    # -- API
    def fit(self, X: Any) -> StandardScaler:
        arr = self._as_array(X)
        flat = arr.reshape(-1, arr.shape[-1]).astype(np.float64, copy=False)
        if flat.shape[0] == 0:
            raise DataError("cannot fit a StandardScaler on an empty array")
        observed = (~np.isnan(flat)).sum(axis=0)
        if (observed == 0).any():
            bad = np.flatnonzero(observed == 0).tolist()
            raise DataError(f"cannot fit a StandardScaler: channel(s) {bad} have no observed (non-NaN) value")
        mean = np.nanmean(flat, axis=0)
        std = np.nanstd(flat, axis=0)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise DataError(
                "cannot fit a StandardScaler: the data contains +/-inf; replace it with NaN or fix it"
            )
        std[std == 0] = 1.0
        self.mean_, self.scale_ = mean, std
        return self

    def _out_dtype(self, arr: np.ndarray) -> np.dtype:
        return arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)

    def transform(self, X: Any) -> np.ndarray:
        arr = self._as_array(X)
        self._check_fitted(arr)
        return ((arr - self.mean_) / self.scale_).astype(self._out_dtype(arr), copy=False)

    def inverse_transform(self, X: Any) -> np.ndarray:
        arr = self._as_array(X)
        self._check_fitted(arr)
        return (arr * self.scale_ + self.mean_).astype(self._out_dtype(arr), copy=False)

    def fit_transform(self, X: Any) -> np.ndarray:
        return self.fit(X).transform(X)

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: ``{"mean": [...], "scale": [...]}``."""
        if self.mean_ is None or self.scale_ is None:
            raise DataError("this StandardScaler is not fitted yet; nothing to save")
        return {"mean": [float(v) for v in self.mean_], "scale": [float(v) for v in self.scale_]}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> StandardScaler:
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            scale = np.asarray(d["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"invalid StandardScaler state ({exc!r}); expected a dict with lists 'mean' and 'scale'"
            ) from None
        if mean.ndim != 1 or mean.shape != scale.shape or mean.size == 0:
            raise DataError(
                f"invalid StandardScaler state: 'mean' {mean.shape} and 'scale' {scale.shape} must be equal-length lists"
            )
        if not (np.isfinite(mean).all() and np.isfinite(scale).all()) or (scale <= 0).any():
            raise DataError(
                "invalid StandardScaler state: values must be finite and 'scale' must be positive"
            )
        s = cls()
        s.mean_, s.scale_ = mean, scale
        return s

    def __repr__(self) -> str:
        if self.mean_ is None:
            return "StandardScaler(unfitted)"
        return f"StandardScaler(n_features={self.mean_.shape[0]})"
