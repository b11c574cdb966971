"""Classification probes on frozen representations (TS2Vec's protocols).

The encoder is trained without labels; a series is represented by the max-pool of its per-step
representations over the whole series (``encoding_window="full_series"``); a simple classifier is then
fitted on the train representations and scored on the test ones.

Protocols (``protocol=``):

``"svm"`` (TS2Vec's default for UCR/UEA)
    RBF SVC with ``gamma="scale"``. When ``n_train // n_classes < 5`` or ``n_train < 50`` a plain
    ``SVC(C=inf)`` (hard margin) is fitted directly; otherwise ``C`` is chosen by ``GridSearchCV`` over
    ``SVM_C_GRID`` with 5-fold (stratified, unshuffled) cross-validation on the train split only, after a
    stratified subsample to 10,000 series when the train split is larger. The best estimator is refitted on
    the whole (possibly subsampled) train split (``GridSearchCV``'s ``refit=True``).
``"linear"``
    ``StandardScaler`` + one-vs-rest ``LogisticRegression`` (lbfgs, ``max_iter=1_000_000``) as TS2Vec's
    ``fit_lr``; a stratified subsample to 100,000 when larger. scikit-learn >= 1.7 dropped
    ``multi_class="ovr"``, so the one-vs-rest scheme is spelled ``OneVsRestClassifier``, which fits the same
    per-class binary problems and normalises the probabilities the same way.
``"knn"``
    ``StandardScaler`` + 1-nearest-neighbour (TS2Vec's ``fit_knn``).

AUPRC follows TS2Vec: ``average_precision_score`` (macro over classes) of the one-vs-rest binarised test
labels against the classifier's scores (``decision_function`` for the SVM, ``predict_proba`` for the
others). In the 2-class case the binarised labels are one column and the score of the positive (second)
class is used; TS2Vec's code would fail there for the linear probe.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler, label_binarize
from sklearn.svm import SVC

from tscl.errors import ConfigError, DataError

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
]

PROTOCOLS = ("svm", "linear", "knn")

#: TS2Vec's grid for the SVM's C (10^-4 .. 10^4 and inf = hard margin).
SVM_C_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0, 1e4, float("inf"))
SVM_MAX_SAMPLES = 10_000
#: libsvm iteration cap of the SVM probe (TS2Vec caps its grid search at this value)
SVM_MAX_ITER = 10_000_000
LINEAR_MAX_SAMPLES = 100_000

#: UCR accuracies: ``paper`` = TS2Vec paper (Yue et al., AAAI 2022); ``reference_impl`` = the public TS2Vec
#: implementation run on this kind of machine (2 CPU cores, torch 2.11, default settings), by seed.
#: ``train_time_s`` = its training time for 200 iterations; ``peak_rss_gb`` = its peak resident memory.
#: Source: /work/shared/ANCHORS.md.
TS2VEC_UCR_REFERENCE: dict[str, dict[str, Any]] = {
    "GunPoint": {
        "paper": 0.980,
        "reference_impl": {0: 1.000, 1: 0.987, 2: 0.987},
        "n_train": 50,
        "length": 150,
        "train_time_s": 25.3,
        "peak_rss_gb": 1.16,
    },
    "ArrowHead": {
        "paper": 0.857,
        "reference_impl": {0: 0.789, 1: 0.817, 2: 0.806},
        "n_train": 36,
        "length": 251,
        "train_time_s": 34.9,
        "peak_rss_gb": 1.30,
    },
    "ItalyPowerDemand": {
        "paper": 0.961,
        "reference_impl": {0: 0.961},
        "n_train": 67,
        "length": 24,
        "train_time_s": 8.1,
        "peak_rss_gb": 0.96,
    },
}

#: UEA (multivariate) accuracies, same conventions as :data:`TS2VEC_UCR_REFERENCE` (not timed).
TS2VEC_UEA_REFERENCE: dict[str, dict[str, Any]] = {
    "BasicMotions": {
        "paper": 0.975,
        "reference_impl": {0: 0.975},
        "n_train": 40,
        "n_channels": 6,
        "length": 100,
    },
}


# --------------------------------------------------------------------------------------------- validation
def _check_protocol(protocol: str) -> str:
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ConfigError(f"unknown classification protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    return protocol


def _check_repr(features: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} must be a numeric array, got {type(features).__name__}: {e}") from e
    if arr.ndim == 3 and arr.shape[1] == 1:  # (N, 1, D) from a pooled encode
        arr = arr[:, 0]
    if arr.ndim != 2:
        raise DataError(
            f"{name} must have shape (n_samples, n_features), got {arr.shape}; "
            "encode with encoding_window='full_series' for series-level labels"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {arr.shape})")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(
            f"{name} contains {int(bad.sum())} NaN/inf values (in {rows.size} rows, first row {int(rows[0])}); "
            "a series that is entirely missing, or a diverged encoder, gives non-finite representations"
        )
    return arr


def _check_labels(y: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D (one label per sample), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise DataError(f"{name} has {arr.shape[0]} labels but there are {n} samples; they must match")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"{name} contains NaN/inf labels")
    if arr.dtype == object and any(v is None for v in arr):
        raise DataError(f"{name} contains None labels")
    return arr


def _n_classes(y: np.ndarray, name: str = "y_train") -> int:
    k = np.unique(y).shape[0]
    if k < 2:
        raise DataError(f"{name} has {k} distinct class(es); classification needs at least 2")
    return k


# -------------------------------------------------------------------------------------------------- probes
def svm_uses_grid_search(n_samples: int, n_classes: int) -> bool:
    """TS2Vec's rule: grid-search C unless ``n // n_classes < 5`` or ``n < 50`` (then plain ``SVC(C=inf)``)."""
    return not (n_samples // n_classes < 5 or n_samples < 50)


def fit_svm(
    features: np.ndarray,
    y: np.ndarray,
    *,
    max_samples: int = SVM_MAX_SAMPLES,
    seed: int = 0,
    n_jobs: int | None = None,
) -> SVC:
    """Fit TS2Vec's SVM probe on precomputed ``features`` (N, D) and labels ``y`` (N,).

    Returns the fitted :class:`~sklearn.svm.SVC`. Its ``C`` is ``inf`` on the plain path, or the
    cross-validated choice on the grid path. ``n_jobs`` only parallelises the grid search (same result).
    """
    X = _check_repr(features, "features")
    y = _check_labels(y, X.shape[0], "y")
    n_classes = _n_classes(y, "y")
    n = X.shape[0]
    if not svm_uses_grid_search(n, n_classes):
        # The same iteration cap as the grid path: a hard margin on non-separable features otherwise never stops
        # (libsvm's default is no cap); hitting it raises sklearn's ConvergenceWarning.
        return _fit_probe(SVC(C=np.inf, kernel="rbf", gamma="scale", max_iter=SVM_MAX_ITER), X, y)
    if n > max_samples:
        X, _, y, _ = train_test_split(X, y, train_size=max_samples, random_state=seed, stratify=y)
    search = GridSearchCV(
        SVC(C=np.inf, kernel="rbf", gamma="scale"),
        {"C": list(SVM_C_GRID), "max_iter": [SVM_MAX_ITER]},  # TS2Vec also caps max_iter in its grid
        cv=5,
        n_jobs=n_jobs,
    )
    with warnings.catch_warnings():
        # a class with fewer than 5 members triggers a StratifiedKFold warning; TS2Vec proceeds too
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        _fit_probe(search, X, y)
    return search.best_estimator_


def _fit_probe(estimator, X: np.ndarray, y: np.ndarray):
    """``estimator.fit(X, y)``; libsvm's "not finite" failure (features that blew up) becomes a DataError that
    names the feature scale."""
    try:
        return estimator.fit(X, y)
    except ValueError as exc:
        if "not finite" not in str(exc):
            raise
        norm = float(np.linalg.norm(X, axis=1).max())
        raise DataError(
            f"the SVM probe diverged on these representations (largest |value| {float(np.abs(X).max()):.3g}, "
            f"largest row norm {norm:.3g}): the encoder's features blew up, e.g. under an unbounded loss; "
            f"libsvm said: {exc}"
        ) from exc


def fit_linear(features: np.ndarray, y: np.ndarray, seed: int = 0, *, max_samples: int = LINEAR_MAX_SAMPLES):
    """TS2Vec's linear probe: ``StandardScaler`` + one-vs-rest ``LogisticRegression`` (returns a Pipeline)."""
    X = _check_repr(features, "features")
    y = _check_labels(y, X.shape[0], "y")
    _n_classes(y, "y")
    if X.shape[0] > max_samples:
        X, _, y, _ = train_test_split(X, y, train_size=max_samples, random_state=seed, stratify=y)
    pipe = make_pipeline(
        StandardScaler(),
        OneVsRestClassifier(LogisticRegression(random_state=seed, max_iter=1_000_000)),
    )
    return pipe.fit(X, y)


def fit_knn(features: np.ndarray, y: np.ndarray):
    """TS2Vec's k-NN probe: ``StandardScaler`` + 1-nearest-neighbour (returns a Pipeline)."""
    X = _check_repr(features, "features")
    y = _check_labels(y, X.shape[0], "y")
    _n_classes(y, "y")
    return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=1)).fit(X, y)


def _auprc(clf, protocol: str, X_test: np.ndarray, y_test: np.ndarray) -> float:
    classes = clf.classes_
    score = clf.decision_function(X_test) if protocol == "svm" else clf.predict_proba(X_test)
    score = np.asarray(score, dtype=np.float64)
    onehot = label_binarize(y_test, classes=classes)
    if len(classes) == 2:
        if score.ndim == 2:
            score = score[:, 1]
        onehot = onehot.ravel()
        if onehot.min() == onehot.max():  # only one class present in the test labels
            return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class absent from the test split: AP undefined for it
        return float(average_precision_score(onehot, score))


def classify_features(
    train_repr: np.ndarray,
    y_train: np.ndarray,
    test_repr: np.ndarray,
    y_test: np.ndarray,
    protocol: str = "svm",
    *,
    seed: int = 0,
    n_jobs: int | None = None,
) -> dict[str, Any]:
    """Fit ``protocol``'s probe on ``train_repr`` (N, D) and score it on ``test_repr`` (M, D).

    Returns ``{"accuracy", "auprc", "protocol", "n_train", "n_test", "n_classes", "fit_time"}``, plus
    ``"svm_grid_search"`` (bool) and ``"svm_C"`` for the SVM.
    """
    _check_protocol(protocol)
    Xtr = _check_repr(train_repr, "train representations")
    Xte = _check_repr(test_repr, "test representations")
    if Xtr.shape[1] != Xte.shape[1]:
        raise DataError(
            f"train and test representations differ in width ({Xtr.shape[1]} vs {Xte.shape[1]}); "
            "encode both with the same model and encoding_window"
        )
    ytr = _check_labels(y_train, Xtr.shape[0], "y_train")
    yte = _check_labels(y_test, Xte.shape[0], "y_test")
    n_classes = _n_classes(ytr, "y_train")

    t0 = time.perf_counter()
    if protocol == "svm":
        clf = fit_svm(Xtr, ytr, seed=seed, n_jobs=n_jobs)
    elif protocol == "linear":
        clf = fit_linear(Xtr, ytr, seed)
    else:
        clf = fit_knn(Xtr, ytr)
    fit_time = time.perf_counter() - t0

    accuracy = float(np.mean(clf.predict(Xte) == yte))
    result: dict[str, Any] = {
        "accuracy": accuracy,
        "auprc": _auprc(clf, protocol, Xte, yte),
        "protocol": protocol,
        "n_train": int(Xtr.shape[0]),
        "n_test": int(Xte.shape[0]),
        "n_classes": int(n_classes),
        "fit_time": float(fit_time),
    }
    if protocol == "svm":
        result["svm_grid_search"] = svm_uses_grid_search(Xtr.shape[0], n_classes)
        result["svm_C"] = float(clf.C)
    return result


def classify(
    model: Any,
    X_train: Any,
    y_train: Sequence | np.ndarray,
    X_test: Any,
    y_test: Sequence | np.ndarray,
    protocol: str = "svm",
    encoding_window: Any = "full_series",
    seed: int = 0,
    *,
    batch_size: int | None = None,
    n_jobs: int | None = None,
) -> dict[str, Any]:
    """Encode train and test series with ``model`` and evaluate a classification probe on the representations.

    ``model.encode(X, encoding_window=...)`` must return (N, D) (e.g. ``"full_series"``: max-pool over time).
    The result is :func:`classify_features`'s dict plus ``"encode_time"`` (seconds, both splits).
    """
    _check_protocol(protocol)
    for X, y, split in ((X_train, y_train, "train"), (X_test, y_test, "test")):
        n_x, n_y = _length(X, f"X_{split}"), _length(y, f"y_{split}")
        if n_x != n_y:
            raise DataError(f"X_{split} has {n_x} series but y_{split} has {n_y} labels; they must match")
    _n_classes(np.asarray(y_train), "y_train")

    t0 = time.perf_counter()
    train_repr = model.encode(X_train, encoding_window=encoding_window, batch_size=batch_size)
    test_repr = model.encode(X_test, encoding_window=encoding_window, batch_size=batch_size)
    encode_time = time.perf_counter() - t0

    result = classify_features(train_repr, y_train, test_repr, y_test, protocol, seed=seed, n_jobs=n_jobs)
    result["encode_time"] = float(encode_time)
    return result


def _length(obj: Any, name: str) -> int:
    try:
        return len(obj)
    except TypeError as e:
        raise DataError(f"{name} has no length ({type(obj).__name__}); pass an array of samples") from e
