"""Numpy helpers for preparing ``(N, T, C)`` training panels the way TS2Vec does.

TS2Vec (Yue et al., AAAI 2022) trains on series of at most ``max_train_length`` (3,000) steps: longer series are
cut into equal sections (the last ones NaN-padded) stacked along the batch axis; series observed only in the
middle (leading/trailing NaN) are shifted so the observed part is centred; samples that are NaN everywhere
are dropped. :func:`prepare_train_panel` chains the three steps.
"""

from __future__ import annotations

import numpy as np

from tscl.errors import ConfigError, DataError

__all__ = [
    "split_with_nan",
    "split_long_series",
    "centerize_vary_length_series",
    "drop_all_nan",
    "prepare_train_panel",
]


def _float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def split_with_nan(x: np.ndarray, sections: int, axis: int) -> np.ndarray:
    """Split ``x`` along ``axis`` into ``sections`` pieces and stack them along axis 0 (the batch axis).

    Piece sizes follow ``np.array_split`` (the first ``T % sections`` pieces are one step longer); shorter
    pieces are right-padded with NaN to the length of the first piece. For ``x`` of shape ``(N, T, C)`` and
    ``axis=1`` the result has shape ``(sections * N, ceil(T / sections), C)``, piece-major (all samples' first
    piece, then all samples' second piece, ...).
    """
    if int(sections) != sections or sections < 1:
        raise ConfigError(f"sections must be a positive integer, got {sections!r}")
    x = _float(x)
    axis = axis % x.ndim
    pieces = np.array_split(x, int(sections), axis=axis)
    target = pieces[0].shape[axis]
    out = []
    for p in pieces:
        missing = target - p.shape[axis]
        if missing:
            pad_shape = list(p.shape)
            pad_shape[axis] = missing
            p = np.concatenate([p, np.full(pad_shape, np.nan, dtype=x.dtype)], axis=axis)
        out.append(p)
    return np.concatenate(out, axis=0)


def split_long_series(X: np.ndarray, max_length: int) -> np.ndarray:
    """TS2Vec's ``max_train_length`` rule: with ``sections = T // max_length``, split ``X`` (``(N, T, C)``) into
    that many sections with :func:`split_with_nan` when ``sections >= 2``; otherwise return ``X`` unchanged.

    Sections may stay longer than ``max_length`` (e.g. 8,640 steps -> 2 x 4,320); training then draws a random
    ``max_length`` window from them at every step, as TS2Vec does."""
    if int(max_length) != max_length or max_length < 1:
        raise ConfigError(f"max_length must be a positive integer, got {max_length!r}")
    X = np.asarray(X)
    if X.ndim != 3:
        raise DataError(f"split_long_series expects a (N, T, C) array, got shape {X.shape}")
    sections = X.shape[1] // int(max_length)
    if sections < 2:
        return X
    return split_with_nan(X, sections, axis=1)


def centerize_vary_length_series(X: np.ndarray) -> np.ndarray:
    """Shift each series of ``X`` (``(N, T, C)``) in time so its observed part sits in the middle.

    A time step counts as missing when all its channels are NaN. With ``a`` leading and ``b`` trailing missing
    steps, the series is rolled by ``(a + b) // 2 - a`` steps, leaving ``(a + b) // 2`` missing steps in front.
    Series with no observed value are left unchanged. Vectorised (one gather, no loop over samples).
    """
    X = np.asarray(X)
    if X.ndim != 3:
        raise DataError(f"centerize_vary_length_series expects a (N, T, C) array, got shape {X.shape}")
    N, T = X.shape[:2]
    if N == 0 or T == 0:
        return X.copy()
    observed = ~np.isnan(X).all(axis=-1)  # (N, T)
    lead = observed.argmax(axis=1)
    trail = observed[:, ::-1].argmax(axis=1)
    shift = (lead + trail) // 2 - lead  # > 0 moves data later, < 0 earlier
    src = (np.arange(T)[None, :] - shift[:, None]) % T
    return X[np.arange(N)[:, None], src]


def drop_all_nan(X: np.ndarray) -> np.ndarray:
    """Remove the samples (along axis 0) that are NaN everywhere."""
    X = np.asarray(X)
    if X.ndim < 2:
        raise DataError(f"drop_all_nan expects an array with a sample axis, got shape {X.shape}")
    if X.dtype.kind != "f":
        return X
    keep = ~np.isnan(X).all(axis=tuple(range(1, X.ndim)))
    return X[keep]


def prepare_train_panel(X: np.ndarray, max_train_length: int | None = 3000) -> np.ndarray:
    """TS2Vec's preparation of a training panel: split series longer than ``max_train_length``, centre series
    whose first or last step is missing in some sample, then drop all-NaN samples."""
    X = np.asarray(X)
    if X.ndim != 3:
        raise DataError(f"prepare_train_panel expects a (N, T, C) array, got shape {X.shape}")
    if max_train_length is not None:
        X = split_long_series(X, max_train_length)
    step_missing = np.isnan(X).all(axis=-1).any(axis=0)  # (T,)
    if step_missing.size and (step_missing[0] or step_missing[-1]):
        X = centerize_vary_length_series(X)
    return drop_all_nan(X)
