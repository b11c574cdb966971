"""sktime estimators: :class:`TSCLForecaster` (a ``BaseForecaster``) and :class:`TSCLTransformer` (a
``BaseTransformer`` returning representations).

Both take an encoder by name ("transformer", "tcn") or the path of a folder written by ``tscl fit`` /
``ContrastiveModel.save``, so a pretrained encoder drops into sktime compositions (``TransformedTargetForecaster``,
``ForecastingPipeline``, ``ForecastingGridSearchCV``)::

    from sktime.forecasting.compose import TransformedTargetForecaster
    from tscl.integrations.sktime import TSCLForecaster
    f = TSCLForecaster(encoder="runs/etth1", strategy="pretrain_finetune", lookback=96, time_covariates=True)
    f.fit(y_train, fh=range(1, 25)); y_pred = f.predict()

Input channels of the encoder, in order: calendar covariates (``time_covariates=True``: minute, hour, weekday, day,
day of year, month, ISO week, the ETT protocol's layout), the exogenous columns of ``X`` (past covariates: the
forecast made at the cutoff reads ``X`` up to the cutoff only), then the columns of ``y``. Each is standardised with
statistics of the data seen in ``fit``.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from sktime.forecasting.base import BaseForecaster
from sktime.transformations.base import BaseTransformer

from tscl import encoders as _encoders
from tscl.errors import ConfigError, DataError

__all__ = ["TSCLForecaster", "TSCLTransformer"]


def _is_encoder_name(encoder) -> bool:
    return isinstance(encoder, str) and encoder.lower() in _encoders.ENCODERS


def _load_encoder(path):
    from tscl.model import load

    return load(path, device="cpu")


def _calendar(index: pd.Index) -> np.ndarray:
    from tscl.data.forecasting import time_covariates

    if isinstance(index, pd.PeriodIndex):
        index = index.to_timestamp()
    if not isinstance(index, pd.DatetimeIndex):
        raise ConfigError(
            f"time_covariates=True needs a DatetimeIndex or PeriodIndex on y, got {type(index).__name__}; "
            "set time_covariates=False"
        )
    return time_covariates(index)


class TSCLForecaster(BaseForecaster):
    """Contrastive encoder + multi-horizon head as an sktime forecaster (see :mod:`tscl.methods.forecast_e2e`).

    Parameters
    ----------
    encoder : "transformer", "tcn", or a checkpoint folder (``ContrastiveModel.save`` / ``tscl fit``) whose encoder is
        fine-tuned (``strategy="pretrain_finetune"`` or ``"e2e"``) or frozen (``"pretrain_frozen"``).
    strategy : "supervised", "pretrain_finetune", "pretrain_frozen" or "e2e".
    lookback : input window length; ``fit`` needs at least ``lookback + max(fh)`` observations.
    lam : weight of the contrastive term (``strategy="e2e"``).
    loss, augmenter : contrastive loss and view generator, by name.
    revin : reversible instance normalisation of the target channels.
    output_dims, hidden_dims, depth : encoder size (ignored when ``encoder`` is a checkpoint).
    batch_size, lr, max_epochs, steps_per_epoch, pretrain_epochs, patience : training.
    valid_fraction : last fraction of ``y`` used for early stopping (0 = none, train on everything).
    time_covariates : add the calendar covariates of ``y``'s time index as input channels.
    seed, device : reproducibility and placement.

    ``pretrain(y_panel)`` (sktime's pretraining API, tag ``capability:pretrain``) trains the encoder contrastively
    on a panel of series; a following ``fit`` fine-tunes or freezes it according to ``strategy``. ``update`` appends
    new observations: later forecasts start from the new cutoff (weights unchanged).

    Examples
    --------
    >>> from sktime.datasets import load_airline
    >>> from tscl.integrations.sktime import TSCLForecaster
    >>> y = load_airline()
    >>> f = TSCLForecaster(lookback=24, max_epochs=2, output_dims=16, hidden_dims=16)
    >>> y_pred = f.fit(y, fh=[1, 2, 3]).predict()
    >>> y_pred.shape
    (3,)
    """

    _tags = {
        "authors": ["tscl developers"],
        "maintainers": ["tscl developers"],
        "python_dependencies": ["torch", "lightning"],
        "capability:multivariate": True,
        "capability:exogenous": True,
        "capability:insample": False,
        "capability:pred_int": False,
        "capability:missing_values": False,
        "capability:update": True,
        "capability:pretrain": True,
        "y_inner_mtype": "pd.DataFrame",
        "X_inner_mtype": "pd.DataFrame",
        "requires-fh-in-fit": True,
        "X-y-must-have-same-index": True,
        "capability:categorical_in_X": False,
        "capability:unequal_length": False,
    }
    # keep our own history (the last ``lookback`` rows) instead of sktime's copy of all data seen
    _config = {"remember_data": False}

    def __init__(
        self,
        encoder="transformer",
        strategy="e2e",
        lookback=24,
        lam=0.1,
        loss="ntxent",
        augmenter="fixed",
        revin=True,
        output_dims=64,
        hidden_dims=64,
        depth=2,
        batch_size=32,
        lr=1e-3,
        max_epochs=10,
        steps_per_epoch=None,
        pretrain_epochs=2,
        patience=3,
        valid_fraction=0.0,
        time_covariates=False,
        seed=0,
        device="cpu",
    ):
        self.encoder = encoder
        self.strategy = strategy
        self.lookback = lookback
        self.lam = lam
        self.loss = loss
        self.augmenter = augmenter
        self.revin = revin
        self.output_dims = output_dims
        self.hidden_dims = hidden_dims
        self.depth = depth
        self.batch_size = batch_size
        self.lr = lr
        self.max_epochs = max_epochs
        self.steps_per_epoch = steps_per_epoch
        self.pretrain_epochs = pretrain_epochs
        self.patience = patience
        self.valid_fraction = valid_fraction
        self.time_covariates = time_covariates
        self.seed = seed
        self.device = device
        super().__init__()
        self._y, self._X = None, None  # filled by sktime only when remember_data is switched on
        if isinstance(lookback, bool) or not isinstance(lookback, numbers.Integral) or lookback < 1:
            raise ConfigError(f"lookback must be a positive integer, got {lookback!r}")
        if not 0 <= float(valid_fraction) < 1:
            raise ConfigError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")

    # ------------------------------------------------------------------------------------------ inputs
    def _raw_inputs(self, y: pd.DataFrame, X: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
        """``(covariates (T, K), targets (T, C))`` unscaled, in the encoder's channel order."""
        parts = []
        if self.time_covariates:
            parts.append(_calendar(y.index))
        if X is not None and X.shape[1] > 0:
            xv = X.loc[y.index].to_numpy(dtype=np.float64, na_value=np.nan)
            parts.append(xv)
        cov = np.concatenate(parts, axis=1) if parts else np.zeros((len(y), 0))
        return cov, y.to_numpy(dtype=np.float64, na_value=np.nan)

    def _scaled(self, cov: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        parts = [self.cov_scaler_.transform(cov)] if cov.shape[1] else []
        parts.append(self.y_scaler_.transform(tgt))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _e2e(self, horizon: int, pretrained):
        from tscl.methods.forecast_e2e import E2EForecaster

        return E2EForecaster(
            encoder=self.encoder if _is_encoder_name(self.encoder) else "transformer",
            strategy=self.strategy,
            lookback=self.lookback,
            horizon=horizon,
            lam=self.lam,
            loss=self.loss,
            augmenter=self.augmenter,
            revin=self.revin,
            output_dims=self.output_dims,
            hidden_dims=self.hidden_dims,
            depth=self.depth,
            batch_size=self.batch_size,
            lr=self.lr,
            max_epochs=self.max_epochs,
            steps_per_epoch=self.steps_per_epoch,
            pretrain_epochs=self.pretrain_epochs,
            patience=self.patience,
            seed=self.seed,
            device=self.device,
            pretrained=pretrained,
        )

    def _relative_fh(self, fh) -> np.ndarray:
        rel = np.asarray(fh.to_relative(self.cutoff).to_numpy(), dtype=np.int64)
        if len(rel) == 0 or (rel < 1).any():
            raise ConfigError(
                f"TSCLForecaster forecasts only after the cutoff: fh must be strictly positive relative to the "
                f"cutoff {self.cutoff}, got relative steps {rel.tolist()}"
            )
        return rel

    # ------------------------------------------------------------------------------------------ fit / predict
    def _fit(self, y, X, fh):
        from tscl.data import StandardScaler
        from tscl.data.forecasting import ForecastWindows

        rel = self._relative_fh(fh)
        horizon = int(rel.max())
        if y.isna().to_numpy().any():
            raise DataError(
                f"y contains {int(y.isna().to_numpy().sum())} NaN value(s); TSCLForecaster needs complete "
                "targets: impute them first (e.g. sktime's Imputer in a TransformedTargetForecaster)"
            )
        n, need = len(y), self.lookback + horizon
        if n < need:
            raise DataError(
                f"the history is too short: y has {n} observations, but lookback ({self.lookback}) + the "
                f"longest horizon ({horizon}) needs at least {need}; pass a longer y, a shorter lookback or a "
                "shorter fh"
            )
        cov, tgt = self._raw_inputs(y, X)
        if cov.shape[1] and np.isnan(cov).all(axis=0).any():
            raise DataError("an exogenous column of X is entirely NaN")
        self.y_scaler_ = StandardScaler().fit(tgt)
        self.cov_scaler_ = StandardScaler().fit(cov) if cov.shape[1] else None
        data = self._scaled(cov, tgt)[None]
        n_valid = int(round(float(self.valid_fraction) * n))
        splits = {"train": slice(0, n)}
        valid = None
        if n_valid > horizon and n - n_valid >= need:
            splits = {"train": slice(0, n - n_valid), "valid": slice(n - n_valid, n)}
            valid = "valid"
        windows = ForecastWindows(
            data, cov.shape[1], self.lookback, horizon, splits=splits, scaler=self.y_scaler_
        )
        pretrained = getattr(self, "pretrained_encoder_", None)
        if pretrained is None and not _is_encoder_name(self.encoder):
            pretrained = _load_encoder(self.encoder)
        self.forecaster_ = self._e2e(horizon, pretrained).fit(windows, valid=valid)
        self.n_channels_ = windows.n_channels
        self._remember(y, X, replace=True)
        return self

    def _remember(self, y, X, replace=False) -> None:
        """Keep the last ``lookback`` rows of y (and X): the input of the next forecast."""
        if not replace:
            y = pd.concat([self._hist_y, y[~y.index.isin(self._hist_y.index)]]).sort_index()
            if X is not None and self._hist_X is not None:
                X = pd.concat([self._hist_X, X[~X.index.isin(self._hist_X.index)]]).sort_index()
        self._hist_y = y.iloc[-self.lookback :]
        self._hist_X = None if X is None else X.loc[X.index.isin(self._hist_y.index)]

    def _history_window(self) -> np.ndarray:
        y = self._hist_y
        X = self._hist_X
        if len(y) < self.lookback:
            raise DataError(f"the history has {len(y)} observations, fewer than lookback={self.lookback}")
        y_last = y.iloc[-self.lookback :]
        X_last = None if X is None else X.loc[y_last.index]
        cov, tgt = self._raw_inputs(y_last, X_last)
        if np.isnan(tgt).any():
            raise DataError("the last lookback observations of y contain NaN; impute them first")
        return self._scaled(cov, tgt)[None]

    def _predict(self, fh, X):
        rel = self._relative_fh(fh)
        if rel.max() > self.forecaster_.horizon:
            raise ConfigError(
                f"fh reaches {int(rel.max())} steps ahead but the model was trained for {self.forecaster_.horizon}; "
                "fit again with the longer fh"
            )
        pred = self.forecaster_.predict_windows(self._history_window())[0]  # (H, C) scaled
        pred = self.y_scaler_.inverse_transform(pred.astype(np.float64))[rel - 1]
        index = fh.to_absolute_index(self.cutoff)
        return pd.DataFrame(pred, index=index, columns=self._hist_y.columns)

    def _update(self, y, X=None, update_params=True):
        # sktime has moved the cutoff; the new observations become the history of the next forecast (the weights
        # stay as fitted).
        if y.isna().to_numpy().any():
            raise DataError("y passed to update contains NaN; impute it first")
        self._remember(y, X)
        return self

    # ------------------------------------------------------------------------------------------ pretrain
    def _panel_inputs(self, y, X) -> np.ndarray:
        """Panel ``y`` (pd-multiindex / hierarchical) -> scaled ``(N, T, C_all)`` encoder inputs."""
        from tscl.data import StandardScaler

        if not isinstance(y.index, pd.MultiIndex):
            raise DataError("pretrain expects a panel (a DataFrame with a MultiIndex: instance, time)")
        levels = list(range(y.index.nlevels - 1))
        covs, tgts = [], []
        for key, yi in y.groupby(level=levels, sort=False):
            yi = yi.droplevel(levels)
            Xi = (
                None
                if X is None
                else X.loc[key].reindex(yi.index)
                if not isinstance(key, tuple)
                else X.loc[key]
            )
            c, t = self._raw_inputs(yi, Xi)
            covs.append(c)
            tgts.append(t)
        T = max(len(t) for t in tgts)

        def pad(a):
            return np.concatenate([a, np.full((T - len(a), a.shape[1]), np.nan)], axis=0)

        cov = np.stack([pad(c) for c in covs])
        tgt = np.stack([pad(t) for t in tgts])
        parts = []
        if cov.shape[2]:
            parts.append(StandardScaler().fit(cov).transform(cov))
        parts.append(StandardScaler().fit(tgt).transform(tgt))
        return np.concatenate(parts, axis=2).astype(np.float32)

    def _pretrain(self, y, X=None, fh=None):
        from tscl.model import ContrastiveModel

        if str(self.strategy).lower() == "supervised":
            raise ConfigError(
                "strategy 'supervised' trains from scratch and would ignore pretraining; use "
                "'pretrain_finetune', 'pretrain_frozen' or 'e2e' with pretrain()"
            )
        panel = self._panel_inputs(y, X)
        init = getattr(self, "pretrained_encoder_", None)
        if init is None and not _is_encoder_name(self.encoder):
            init = _load_encoder(self.encoder)
        if init is not None:
            params = {**init.get_params(), "seed": self.seed, "device": self.device, "loss": self.loss}
            params["loss_kwargs"] = {}
        else:
            params = {
                "input_dims": panel.shape[2],
                "encoder": self.encoder,
                "output_dims": self.output_dims,
                "hidden_dims": self.hidden_dims,
                "depth": self.depth,
                "loss": self.loss,
                "seed": self.seed,
                "device": self.device,
            }
        params["batch_size"] = max(2, min(int(self.batch_size), panel.shape[0]))
        m = ContrastiveModel(**params)
        if init is not None:
            if init.input_dims != panel.shape[2]:
                raise ConfigError(
                    f"the encoder expects {init.input_dims} input channels, the panel gives {panel.shape[2]}"
                )
            _warm_start(m, init)
        m.fit(panel, n_epochs=max(int(self.pretrain_epochs), 1), progress=False)
        self.pretrained_encoder_ = m
        return self

    def _pretrain_update(self, y, X=None, fh=None):
        return self._pretrain(y, X=X, fh=fh)  # continues from pretrained_encoder_ (warm start)

    # ------------------------------------------------------------------------------------------ sktime tests
    @classmethod
    def get_test_params(cls, parameter_set="default"):
        tiny = {
            "lookback": 4,
            "output_dims": 8,
            "hidden_dims": 8,
            "depth": 1,
            "batch_size": 8,
            "max_epochs": 1,
            "steps_per_epoch": 2,
            "pretrain_epochs": 1,
        }
        return [
            {**tiny, "encoder": "transformer", "strategy": "e2e", "lam": 0.5},
            {
                **tiny,
                "encoder": "tcn",
                "strategy": "pretrain_finetune",
                "revin": False,
                "loss": "hierarchical",
            },
        ]


def _warm_start(model, init) -> None:
    """Make ``model.fit`` start from ``init``'s encoder weights (its ``_build`` then loads them)."""
    from tscl.methods.pretrain import weight_average

    build = model._build
    state = {k: v.clone() for k, v in init.net_.state_dict().items()}

    def _build_warm(data):
        module = build(data)
        module.encoder.load_state_dict(state)
        if module.swa is not None:  # restart the average from the loaded weights
            module.swa = weight_average(module.encoder)
        return module

    model._build = _build_warm


class TSCLTransformer(BaseTransformer):
    """Contrastive representations as an sktime transformer: one row of ``output_dims`` features per series.

    ``fit`` trains a :class:`tscl.ContrastiveModel` on the (panel of) series without labels, or, when ``encoder`` is a
    checkpoint folder, loads it (no training). ``transform`` returns the max-pooled (``full_series``)
    representation of each series as a DataFrame with columns ``z0 .. z{D-1}``.

    Examples
    --------
    >>> from sktime.datasets import load_unit_test
    >>> from tscl.integrations.sktime import TSCLTransformer
    >>> X, _ = load_unit_test(split="train")
    >>> t = TSCLTransformer(output_dims=16, hidden_dims=16, depth=2, n_iters=5)
    >>> t.fit_transform(X).shape
    (20, 16)
    """

    _tags = {
        "authors": ["tscl developers"],
        "maintainers": ["tscl developers"],
        "python_dependencies": ["torch", "lightning"],
        "scitype:transform-input": "Series",
        "scitype:transform-output": "Primitives",
        "scitype:instancewise": True,
        "X_inner_mtype": "numpy3D",
        "y_inner_mtype": "None",
        "capability:multivariate": True,
        "requires_y": False,
        "fit_is_empty": False,
        "capability:missing_values": False,
        "capability:unequal_length": False,
        "capability:categorical_in_X": False,
    }

    def __init__(
        self,
        encoder="tcn",
        output_dims=320,
        hidden_dims=64,
        depth=None,
        loss="hierarchical",
        n_iters=None,
        batch_size=8,
        lr=1e-3,
        scale=True,
        seed=0,
        device="cpu",
    ):
        self.encoder = encoder
        self.output_dims = output_dims
        self.hidden_dims = hidden_dims
        self.depth = depth
        self.loss = loss
        self.n_iters = n_iters
        self.batch_size = batch_size
        self.lr = lr
        self.scale = scale
        self.seed = seed
        self.device = device
        super().__init__()

    def _fit(self, X, y=None):
        from tscl.model import ContrastiveModel

        panel = np.ascontiguousarray(np.transpose(X, (0, 2, 1)), dtype=np.float32)  # (N, C, T) -> (N, T, C)
        if not _is_encoder_name(self.encoder):
            self.model_ = _load_encoder(self.encoder)
            if self.model_.input_dims != panel.shape[2]:
                raise ConfigError(
                    f"the encoder in {self.encoder} expects {self.model_.input_dims} channels, X has {panel.shape[2]}"
                )
            return self
        self.model_ = ContrastiveModel(
            input_dims=panel.shape[2],
            encoder=self.encoder,
            output_dims=self.output_dims,
            hidden_dims=self.hidden_dims,
            depth=self.depth,
            loss=self.loss,
            batch_size=max(2, min(int(self.batch_size), panel.shape[0])),
            lr=self.lr,
            scale=self.scale,
            seed=self.seed,
            device=self.device,
        ).fit(panel, n_iters=self.n_iters, progress=False)
        return self

    def _transform(self, X, y=None):
        panel = np.ascontiguousarray(np.transpose(X, (0, 2, 1)), dtype=np.float32)
        if panel.shape[2] != self.model_.input_dims:
            raise DataError(
                f"X has {panel.shape[2]} channels, the encoder was fitted on {self.model_.input_dims}"
            )
        Z = self.model_.encode(panel, encoding_window="full_series")
        return pd.DataFrame(Z, columns=[f"z{i}" for i in range(Z.shape[1])])

    @classmethod
    def get_test_params(cls, parameter_set="default"):
        return [
            {"encoder": "tcn", "output_dims": 8, "hidden_dims": 8, "depth": 1, "n_iters": 2},
            {
                "encoder": "transformer",
                "output_dims": 4,
                "hidden_dims": 8,
                "depth": 1,
                "n_iters": 1,
                "scale": False,
            },
        ]
