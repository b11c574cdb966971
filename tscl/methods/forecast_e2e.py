"""End-to-end forecasting with an auxiliary contrastive term (Zhang et al. 2023, "What Constitutes Good Contrastive
Learning in Time-Series Forecasting?").

Model: ``x (B, L, C_cov + C) -> [RevIN on the target channels] -> encoder (B, L, D) -> head -> (B, H, C)``; the head
reads the last step's representation and the max over the window (``[z_L ; max_t z_t]``, a linear map to
``H * C``). Training objective, on a batch of windows with their next ``H`` values ``y``:

.. math:: \\mathcal{L} = \\mathrm{MSE}(\\hat y, y) + \\lambda \\, \\mathcal{L}_{con}(f(v_1), f(v_2))

where ``v_1, v_2`` are two augmented views of the (normalised) input window: TS2Vec's overlapping crops with latent
timestamp masking, optionally followed by fixed transforms (:mod:`tscl.augment`), or a learned augmenter chosen by
name; ``L_con`` is any loss of :mod:`tscl.losses` (sequence losses on the overlap's per-step representations,
pairwise losses on their max-pool).

One switch, ``strategy``, selects the training recipe compared in the paper:

* ``"supervised"``: MSE only, from scratch (``lambda`` ignored);
* ``"pretrain_finetune"``: contrastive-only pretraining of the encoder on the training windows (or an imported
  encoder), then MSE training of encoder + head;
* ``"pretrain_frozen"``: the same pretraining, then the encoder is frozen and only the head is trained (a probe);
* ``"e2e"``: MSE + lambda * contrastive, jointly from the start (or from an imported encoder).

Early stopping and the kept weights use the validation split's MSE only. Predictions are on the data's scaled
values; :class:`E2EForecaster` maps them back to the original units and to pandas objects.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn

from tscl import encoders as _encoders
from tscl import losses as _losses
from tscl.data.forecasting import ForecastWindows, check_window_args
from tscl.errors import CheckpointError, ConfigError, DataError
from tscl.methods.pretrain import adamw

__all__ = [
    "STRATEGIES",
    "AUGMENTERS",
    "RevIN",
    "ForecastHead",
    "ForecastingModule",
    "E2EForecaster",
    "load_forecaster",
]

#: state_dict prefixes not written by save (training-time only)
_NOT_SAVED = ("loss_fn.", "learned_augmenter.")

STRATEGIES = ("supervised", "pretrain_finetune", "pretrain_frozen", "e2e")
#: augmenter names: "fixed" (crops + timestamp masks + optional transforms); "autotcl" (the frozen learned augmenter
#: of a pretrained ContrastiveModel(augmenter="autotcl"): contrast x with its learned view)
AUGMENTERS = ("fixed", "autotcl")


# ------------------------------------------------------------------------------------------------- modules
class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al., ICLR 2022) of the target channels of each window.

    ``norm``: ``x' = (x - mu) / sigma * gamma + beta`` with ``mu, sigma`` the per-window, per-channel mean and std
    over the lookback (NaN-aware); ``denorm`` applies the inverse to the forecast with the same statistics."""

    def __init__(self, n_channels: int, affine: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(n_channels)) if affine else None

    def norm(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        mu = torch.nanmean(x, dim=1, keepdim=True).nan_to_num(0.0)
        sigma = (torch.nanmean((x - mu) ** 2, dim=1, keepdim=True).nan_to_num(0.0) + self.eps).sqrt()
        out = (x - mu) / sigma
        if self.weight is not None:
            out = out * self.weight + self.bias
        return out, (mu, sigma)

    def denorm(self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mu, sigma = stats
        if self.weight is not None:
            y = (y - self.bias) / (self.weight + self.eps**2)
        return y * sigma + mu


class ForecastHead(nn.Module):
    """``(B, L, D) -> (B, H, C)``: a linear map of ``[z_L ; max_t z_t]`` (last step and max-pool) to ``H * C``."""

    def __init__(self, repr_dims: int, horizon: int, n_targets: int):
        super().__init__()
        self.horizon, self.n_targets = int(horizon), int(n_targets)
        self.fc = nn.Linear(2 * repr_dims, self.horizon * self.n_targets)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        feats = torch.cat([z[:, -1], z.amax(dim=1)], dim=-1)
        return self.fc(feats).view(z.shape[0], self.horizon, self.n_targets)


def build_augmenter(name: str, kwargs: dict | None):
    """``(crop, timestamp_mask, transforms)`` for the named augmenter (see :data:`AUGMENTERS`)."""
    from tscl.augment import fixed

    kwargs = dict(kwargs or {})
    if (
        name == "autotcl"
    ):  # views from a learned AutoTCL augmenter (given to ForecastingModule), cropped as TS2Vec
        return fixed.OverlapCrop(), fixed.TimestampMask(p=float(kwargs.get("mask_p", 0.5))), None
    if name != "fixed":
        raise ConfigError(f"unknown augmenter {name!r}; choose one of {list(AUGMENTERS)}")
    unknown = set(kwargs) - {"transforms", "mask_p", "mask_mode", "temporal_unit"}
    if unknown:
        raise ConfigError(
            f"unknown augmenter_kwargs {sorted(unknown)}; allowed: transforms, mask_p, mask_mode"
        )
    names = kwargs.get("transforms") or []
    transforms = fixed.Compose([fixed.get(n) for n in names]) if names else None
    tmask = fixed.TimestampMask(p=float(kwargs.get("mask_p", 0.5)), mode=kwargs.get("mask_mode", "binomial"))
    return fixed.OverlapCrop(temporal_unit=int(kwargs.get("temporal_unit", 0))), tmask, transforms


class ForecastingModule(L.LightningModule):
    """Encoder + head (+ RevIN) trained with ``MSE + lam * contrastive`` (or contrastive only, ``phase="contrastive"``).

    Batches are ``(rows, t)`` origin indices; the windows are gathered from ``self.windows`` (a
    :class:`~tscl.data.forecasting.ForecastWindows`, set before training; never saved)."""

    def __init__(
        self,
        encoder: nn.Module,
        n_covariate_cols: int,
        n_targets: int,
        horizon: int,
        *,
        contrastive_loss: nn.Module | None = None,
        sequence_loss: bool = False,
        lam: float = 0.0,
        revin: bool = True,
        lr: float = 1e-3,
        augmenter: str = "fixed",
        augmenter_kwargs: dict | None = None,
        learned_augmenter: nn.Module | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        if augmenter == "autotcl" and learned_augmenter is None:
            raise ConfigError(
                "augmenter 'autotcl' needs a learned augmenter (from a ContrastiveModel fitted with it)"
            )
        self.learned_augmenter = learned_augmenter  # frozen: a training-time view generator, never saved
        if learned_augmenter is not None:
            learned_augmenter.requires_grad_(False).eval()
        self.head = ForecastHead(encoder.output_dims, horizon, n_targets)
        self.revin = RevIN(n_targets) if revin else None
        self.loss_fn = contrastive_loss
        self.n_cov, self.horizon = int(n_covariate_cols), int(horizon)
        self.sequence_loss, self.lam, self.lr = bool(sequence_loss), float(lam), float(lr)
        # attributes read by ContrastivePretraining.contrastive_views (shared view generation)
        self.crop, self.timestamp_mask, self.transforms = build_augmenter(augmenter, augmenter_kwargs)
        self.single_pass, self.max_train_length = True, None
        self.phase = "forecast"  # or "contrastive"
        self.freeze_encoder = False
        self.windows: ForecastWindows | None = None
        self._val_sse, self._val_n = 0.0, 0

    # ----------------------------------------------------------------------------------------------- model
    def _normalise(self, x: torch.Tensor):
        if self.revin is None:
            return x, None
        tgt, stats = self.revin.norm(x[..., self.n_cov :])
        return torch.cat([x[..., : self.n_cov], tgt], dim=-1), stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast ``(B, H, C)`` (scaled units) from input windows ``(B, L, C_cov + C)``."""
        xn, stats = self._normalise(x)
        pred = self.head(self.encoder(xn))
        return pred if stats is None else self.revin.denorm(pred, stats)

    def _learned_views(self, xn: torch.Tensor):
        """(x, learned AutoTCL view of x), cropped and encoded as TS2Vec's pair (AutoTCL's pairing)."""
        from tscl.augment.fixed import crop_pair_padded

        with torch.no_grad():
            self.learned_augmenter.eval()
            v = self.learned_augmenter(xn, sample=True).view
        B, T, C = xn.shape
        both, layout = crop_pair_padded(
            torch.cat([xn, v], dim=-1), self.crop.sample(B, T, device=xn.device), bucket=True
        )
        views = torch.cat([both[:B, :, :C], both[B:, :, C:]])
        mask = self.timestamp_mask.sample(2 * B, layout.L, device=xn.device)
        return layout.encode_overlap(self.encoder, views, mask)

    def contrastive(self, xn: torch.Tensor) -> torch.Tensor:
        from tscl.methods.pretrain import ContrastivePretraining

        if self.learned_augmenter is not None:
            z1, z2 = self._learned_views(xn)
        else:
            z1, z2 = ContrastivePretraining.contrastive_views(self, xn)
        if not self.sequence_loss:
            z1, z2 = z1.amax(dim=1), z2.amax(dim=1)
        return self.loss_fn(z1, z2)

    # ----------------------------------------------------------------------------------------------- training
    def on_train_epoch_start(self):
        if self.freeze_encoder:
            self.encoder.eval()  # a frozen probe: fixed features, no dropout

    def training_step(self, batch, batch_idx):
        rows, t = batch
        x, y = self.windows.batch(rows, t)
        x, y = x.to(self.device), y.to(self.device)
        if self.phase == "contrastive":
            loss = self.contrastive(self._normalise(x)[0])
            self.log("con", loss.detach(), prog_bar=True, batch_size=x.shape[0])
            return loss
        mse = torch.mean((self(x) - y) ** 2)
        loss = mse
        if self.lam > 0 and self.loss_fn is not None:
            con = self.contrastive(self._normalise(x)[0])
            loss = mse + self.lam * con
            self.log("con", con.detach(), prog_bar=True, batch_size=x.shape[0])
        self.log("mse", mse.detach(), prog_bar=True, batch_size=x.shape[0])
        return loss

    def on_validation_epoch_start(self):
        self._val_sse, self._val_n = 0.0, 0

    def validation_step(self, batch, batch_idx):
        rows, t = batch
        x, y = self.windows.batch(rows, t)
        err = self(x.to(self.device)) - y.to(self.device)
        self._val_sse += float((err.float() ** 2).sum())
        self._val_n += err.numel()

    def on_validation_epoch_end(self):
        if self._val_n:
            self.log("val_mse", self._val_sse / self._val_n, prog_bar=True)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return adamw(params, self.lr)


class _KeepBest(L.Callback):
    """Keep (in memory) the weights of the epoch with the lowest validation MSE."""

    def __init__(self):
        self.best, self.state, self.history = float("inf"), None, []

    def on_validation_end(self, trainer, pl_module):
        v = trainer.callback_metrics.get("val_mse")
        if v is None or trainer.sanity_checking:
            return
        v = float(v)
        self.history.append(v)
        if v < self.best:
            self.best, self.state = v, copy.deepcopy(pl_module.state_dict())


@contextlib.contextmanager
def _quiet():
    from tscl.model import _quiet_lightning

    with warnings.catch_warnings(), _quiet_lightning():
        warnings.filterwarnings(
            "ignore",
            message=r".*(num_workers|does not have many workers|LeafSpec|treespec|GPU available|TPU available|"
            r"Checkpoint directory|smaller than the logging interval|exists and is not empty|no `val_dataloader`|"
            r"module\(s\) in eval mode).*",
        )
        yield


# ------------------------------------------------------------------------------------------------- estimator
class E2EForecaster:
    """Windowed multi-horizon forecaster: encoder (by name) + head, trained by one of :data:`STRATEGIES`.

    Args:
        encoder: "transformer" or "tcn"; ``pretrained`` (a folder written by ``ContrastiveModel.save`` / ``tscl fit``,
            or a fitted :class:`~tscl.ContrastiveModel`) replaces it by that encoder (its architecture and weights).
        strategy: "supervised", "pretrain_finetune", "pretrain_frozen" or "e2e".
        lookback, horizon: window length and number of forecast steps.
        lam: weight of the contrastive term for "e2e".
        loss / loss_kwargs: contrastive loss by name (:func:`tscl.losses.get`).
        augmenter / augmenter_kwargs: view generator by name ("fixed": crops + timestamp masks + optional
            ``{"transforms": [...]}``; "autotcl": the learned augmenter of ``pretrained``, frozen, contrasting each
            window with its learned view).
        revin: reversible instance normalisation of the target channels.
        max_epochs, steps_per_epoch (None = all training windows), patience (early stopping on validation MSE),
        pretrain_epochs (contrastive phase of the pretrain_* strategies), batch_size, lr, seed, device.
    """

    def __init__(
        self,
        encoder: str = "transformer",
        strategy: str = "e2e",
        lookback: int = 96,
        horizon: int = 24,
        lam: float = 0.1,
        loss: str = "ntxent",
        augmenter: str = "fixed",
        revin: bool = True,
        output_dims: int = 64,
        hidden_dims: int = 64,
        depth: int | None = 2,
        batch_size: int = 32,
        lr: float = 1e-3,
        max_epochs: int = 10,
        steps_per_epoch: int | None = None,
        pretrain_epochs: int = 2,
        patience: int = 3,
        valid_stride: int = 1,
        seed: int = 0,
        device: str = "auto",
        pretrained: Any = None,
        progress: bool = False,
        encoder_kwargs: dict | None = None,
        loss_kwargs: dict | None = None,
        augmenter_kwargs: dict | None = None,
    ):
        self.encoder, self.strategy = str(encoder).lower(), str(strategy).lower()
        self.lookback, self.horizon, _ = check_window_args(lookback, horizon)
        self.lam, self.loss, self.augmenter, self.revin = (
            float(lam),
            str(loss).lower(),
            str(augmenter),
            bool(revin),
        )
        self.output_dims, self.hidden_dims, self.depth = int(output_dims), int(hidden_dims), depth
        self.batch_size, self.lr = int(batch_size), float(lr)
        self.max_epochs, self.steps_per_epoch = int(max_epochs), steps_per_epoch
        self.pretrain_epochs, self.patience, self.valid_stride = (
            int(pretrain_epochs),
            int(patience),
            int(valid_stride),
        )
        self.seed, self.device, self.pretrained, self.progress = (
            int(seed),
            str(device),
            pretrained,
            bool(progress),
        )
        self.encoder_kwargs = dict(encoder_kwargs or {})
        self.loss_kwargs = dict(loss_kwargs or {})
        self.augmenter_kwargs = dict(augmenter_kwargs or {})
        self._validate()
        self.module_: ForecastingModule | None = None
        self.history_: dict[str, list[float]] = {}
        self.best_val_mse_ = float("nan")
        self.encoder_params_: dict[str, Any] = {}

    def _validate(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose one of {list(STRATEGIES)}")
        if self.encoder not in _encoders.ENCODERS:
            raise ConfigError(f"unknown encoder {self.encoder!r}; choose one of {sorted(_encoders.ENCODERS)}")
        if self.loss not in _losses.LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose one of {sorted(_losses.LOSSES)}")
        if self.augmenter not in AUGMENTERS:
            raise ConfigError(f"unknown augmenter {self.augmenter!r}; choose one of {list(AUGMENTERS)}")
        if not np.isfinite(self.lam) or self.lam < 0:
            raise ConfigError(f"lam must be a finite number >= 0, got {self.lam}")
        for name in ("output_dims", "hidden_dims", "batch_size", "max_epochs", "valid_stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pretrain_epochs < 0 or self.patience < 0 or self.lr <= 0:
            raise ConfigError("pretrain_epochs and patience must be >= 0 and lr > 0")
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}")

    def get_params(self) -> dict[str, Any]:
        keys = E2EForecaster.__init__.__code__.co_varnames[1 : E2EForecaster.__init__.__code__.co_argcount]
        out = {k: getattr(self, k) for k in keys}
        if out["pretrained"] is not None and not isinstance(out["pretrained"], (str, os.PathLike)):
            out["pretrained"] = "<ContrastiveModel>"
        elif out["pretrained"] is not None:
            out["pretrained"] = str(out["pretrained"])
        return out

    # ----------------------------------------------------------------------------------------------- building
    def _pretrained_model(self):
        if self.pretrained is None:
            return None
        from tscl.model import ContrastiveModel, load

        m = self.pretrained
        if isinstance(m, (str, os.PathLike)):
            m = load(m, device="cpu")
        if not isinstance(m, ContrastiveModel) or m.module_ is None:
            raise ConfigError("pretrained must be a checkpoint folder or a fitted tscl.ContrastiveModel")
        return m

    def _build(self, n_channels: int, n_cov: int, n_targets: int) -> ForecastingModule:
        pre = self._pretrained_model()
        if pre is not None:
            if self.strategy == "supervised":
                raise ConfigError(
                    "strategy 'supervised' trains the encoder from scratch; with a pretrained encoder use "
                    "'pretrain_finetune', 'pretrain_frozen' or 'e2e'"
                )
            if pre.input_dims != n_channels:
                raise ConfigError(
                    f"the pretrained encoder expects {pre.input_dims} input channels but the data has {n_channels} "
                    f"({n_cov} covariates + {n_targets} targets); pretrain on data with the same channels"
                )
            p = pre.get_params()
            self.encoder_params_ = {
                "name": p["encoder"],
                "output_dims": p["output_dims"],
                "hidden_dims": p["hidden_dims"],
                "depth": p["depth"],
                "kwargs": dict(p["encoder_kwargs"]),
            }
        else:
            self.encoder_params_ = {
                "name": self.encoder,
                "output_dims": self.output_dims,
                "hidden_dims": self.hidden_dims,
                "depth": self.depth,
                "kwargs": dict(self.encoder_kwargs),
            }
        e = self.encoder_params_
        torch.manual_seed(self.seed)
        enc = _encoders.get(
            e["name"],
            input_dims=n_channels,
            output_dims=e["output_dims"],
            hidden_dims=e["hidden_dims"],
            depth=e["depth"],
            **e["kwargs"],
        )
        if pre is not None:
            enc.load_state_dict(pre.net_.state_dict())
        learned = None
        if self.augmenter == "autotcl":
            if pre is None or getattr(pre, "augmenter", None) != "autotcl":
                raise ConfigError(
                    "augmenter='autotcl' uses the learned augmenter of a pretrained encoder: pass pretrained= a "
                    "ContrastiveModel (or its folder) fitted with augmenter='autotcl'"
                )
            learned = copy.deepcopy(pre.augmenter_)
        loss_kwargs = dict(self.loss_kwargs)
        if self.loss == "hierarchical":
            loss_kwargs.setdefault("temporal_unit", 0)
        return ForecastingModule(
            enc,
            n_cov,
            n_targets,
            self.horizon,
            contrastive_loss=_losses.get(self.loss, **loss_kwargs),
            sequence_loss=self.loss in _losses.SEQUENCE_LOSSES,
            lam=self.lam if self.strategy == "e2e" else 0.0,
            revin=self.revin,
            lr=self.lr,
            augmenter=self.augmenter,
            augmenter_kwargs=self.augmenter_kwargs,
            learned_augmenter=learned,
        )

    def _trainer(self, max_epochs: int, callbacks: list, limit_val: bool, root: str):
        from tscl.model import _resolve_device

        device = _resolve_device(self.device)
        return L.Trainer(
            max_epochs=max_epochs,
            accelerator="gpu" if device.type == "cuda" else device.type,
            devices=[device.index] if device.index is not None else 1,
            logger=False,
            enable_checkpointing=False,
            callbacks=callbacks,
            enable_progress_bar=self.progress,
            enable_model_summary=False,
            default_root_dir=root,
            num_sanity_val_steps=0,
            limit_train_batches=int(self.steps_per_epoch) if self.steps_per_epoch else 1.0,
            limit_val_batches=1.0 if limit_val else 0,
            log_every_n_steps=1,
        )

    # ----------------------------------------------------------------------------------------------- fit
    def fit(
        self, windows: ForecastWindows, train: str = "train", valid: str | None = "valid"
    ) -> E2EForecaster:
        """Train on the ``train`` split's windows; early-stop on (and keep the best weights for) the ``valid``
        split's MSE when given. ``windows.horizon`` must be at least ``self.horizon``."""
        if not isinstance(windows, ForecastWindows):
            raise DataError(
                f"fit expects a tscl.data.forecasting.ForecastWindows, got {type(windows).__name__}"
            )
        if windows.lookback != self.lookback:
            raise ConfigError(f"windows have lookback {windows.lookback}, the forecaster {self.lookback}")
        rows, t = windows.origins(train, horizon=self.horizon)
        keep = t >= self.lookback - 1  # complete histories only
        rows, t = rows[keep], t[keep]
        if len(t) == 0:
            a, b = windows.split_range(train)
            raise DataError(
                f"the {train} split ({b - a} steps) is too short for lookback {self.lookback} + horizon "
                f"{self.horizon}: it needs at least {self.lookback + self.horizon} steps"
            )
        _, y_chk = windows.batch(rows, t, self.horizon)
        if torch.isnan(y_chk).any():
            raise DataError("the training targets contain NaN; fill or drop missing target values first")
        with torch.random.fork_rng(devices=[]):
            module = self._build(windows.n_channels, windows.n_covariate_cols, windows.n_targets)
            module.windows = windows
            g = torch.Generator().manual_seed(self.seed)
            bs = min(self.batch_size, len(t))
            loader = torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(rows, t),
                batch_size=bs,
                shuffle=True,
                generator=g,
                drop_last=True,
            )
            vloader = None
            if valid is not None:
                vr, vt = windows.origins(valid, horizon=self.horizon)
                sel = slice(None, None, self.valid_stride)
                vloader = torch.utils.data.DataLoader(
                    torch.utils.data.TensorDataset(vr[sel], vt[sel]), batch_size=256, shuffle=False
                )
            self.history_ = {"pretrain": [], "val_mse": []}
            with tempfile.TemporaryDirectory(prefix="tscl-e2e-") as root, _quiet():
                pre_done = self.pretrained is not None
                if (
                    self.strategy in ("pretrain_finetune", "pretrain_frozen")
                    and not pre_done
                    and self.pretrain_epochs
                ):
                    module.phase = "contrastive"
                    torch.manual_seed(self.seed + 1)
                    self._trainer(self.pretrain_epochs, [], False, root).fit(module, loader)
                    self.history_["pretrain"] = [
                        float(v) for v in [module.trainer.callback_metrics.get("con", np.nan)]
                    ]
                module.phase = "forecast"
                if self.strategy == "pretrain_frozen":
                    module.freeze_encoder = True
                    module.encoder.requires_grad_(False)
                keep_best = _KeepBest()
                callbacks: list = [keep_best]
                if vloader is not None and self.patience > 0:
                    callbacks.append(
                        L.pytorch.callbacks.EarlyStopping("val_mse", patience=self.patience, mode="min")
                    )
                torch.manual_seed(self.seed + 2)
                self._trainer(self.max_epochs, callbacks, vloader is not None, root).fit(
                    module, loader, vloader
                )
                if keep_best.state is not None:
                    module.load_state_dict(keep_best.state)
                self.history_["val_mse"] = keep_best.history
                self.best_val_mse_ = keep_best.best if keep_best.state is not None else float("nan")
        module.windows = None
        module.eval()
        self.module_ = module
        self.n_channels_, self.n_covariate_cols_ = windows.n_channels, windows.n_covariate_cols
        return self

    # ----------------------------------------------------------------------------------------------- predict
    def _check_fitted(self):
        if self.module_ is None:
            raise ConfigError("the forecaster is not fitted: call fit(...) or load a saved one first")

    def predict_windows(self, x, batch_size: int = 256) -> np.ndarray:
        """Forecasts ``(B, horizon, C)`` (scaled units) for input windows ``x`` ``(B, lookback, C_all)``."""
        self._check_fitted()
        x = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
        if x.dim() != 3 or x.shape[1] != self.lookback or x.shape[2] != self.n_channels_:
            raise DataError(
                f"input windows must have shape (B, {self.lookback}, {self.n_channels_}), got {tuple(x.shape)}"
            )
        m = self.module_
        dev = next(m.parameters()).device
        m.eval()
        with torch.inference_mode():
            out = [m(x[i : i + batch_size].to(dev)).float().cpu() for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out).numpy()

    def predict_origins(self, windows: ForecastWindows, rows, t) -> np.ndarray:
        return self.predict_windows(windows.inputs(torch.as_tensor(rows), torch.as_tensor(t)))

    def encode(self, X) -> np.ndarray:
        """Per-step representations ``(N, T, D)`` of ``X`` ``(N, T, C_all)`` by the fitted encoder (eval mode)."""
        self._check_fitted()
        from tscl.data import as_panel

        x = torch.from_numpy(as_panel(X))
        enc = self.module_.encoder
        was = enc.training
        enc.eval()
        try:
            with torch.inference_mode():
                return enc(x.to(next(enc.parameters()).device)).float().cpu().numpy()
        finally:
            enc.train(was)

    def forecast(self, windows: ForecastWindows, t: int, row: int = 0) -> pd.DataFrame:
        """The forecast made at origin ``t`` (the last observed step), in original units, as a DataFrame indexed by
        the ``horizon`` future time stamps (extended past the end of the index with its frequency)."""
        pred = self.predict_origins(windows, torch.tensor([row]), torch.tensor([int(t)]))[0]
        if windows.scaler is not None:
            pred = windows.scaler.inverse_transform(pred)
        return pd.DataFrame(
            pred, index=future_index(windows.index, int(t), self.horizon), columns=windows.target_cols or None
        )

    def evaluate(self, windows: ForecastWindows, horizons=None, split: str = "test") -> pd.DataFrame:
        """MSE / MAE per horizon on ``split`` (scaled units, the reported metric; ``*_raw`` in original units).

        For horizon ``h <= self.horizon`` the samples are all origins of the split with ``h`` future steps inside
        it (as in the ridge probe), and the forecast is the first ``h`` steps of the model's output."""
        from tscl.eval.forecasting import _check_horizons

        self._check_fitted()
        horizons = _check_horizons(horizons if horizons is not None else (self.horizon,))
        if max(horizons) > self.horizon:
            raise ConfigError(f"horizons {horizons} exceed the model's horizon {self.horizon}")
        rows, t = windows.origins(split, horizon=min(horizons))
        pred_all = self.predict_origins(windows, rows, t)
        rows_out = []
        for h in horizons:
            n = len(windows.origins(split, horizon=h)[1]) // windows.data.shape[0]
            per_row = len(t) // windows.data.shape[0]
            sel = (torch.arange(len(t)) % per_row) < n
            _, y = windows.batch(rows[sel], t[sel], h)
            pred, y = pred_all[sel.numpy(), :h], y.numpy().astype(np.float64)
            err = pred - y
            row = {"horizon": h, "mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err)))}
            if windows.scaler is not None:
                C = y.shape[-1]
                er = windows.scaler.inverse_transform(pred.reshape(-1, C)) - windows.scaler.inverse_transform(
                    y.reshape(-1, C)
                )
                row.update(mse_raw=float(np.mean(er**2)), mae_raw=float(np.mean(np.abs(er))))
            rows_out.append(row)
        df = pd.DataFrame(rows_out)
        df.attrs["avg"] = {k: float(df[k].mean()) for k in df.columns if k != "horizon"}
        return df

    # ----------------------------------------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """``path/config.json`` + ``path/model.safetensors`` (safe format, :mod:`tscl.io`)."""
        from tscl.io import save_checkpoint

        self._check_fitted()
        tensors = {
            k: v.detach() for k, v in self.module_.state_dict().items() if not k.startswith(_NOT_SAVED)
        }
        config = {
            "params": self.get_params(),
            "encoder": self.encoder_params_,
            "n_channels": self.n_channels_,
            "n_covariate_cols": self.n_covariate_cols_,
            "best_val_mse": None if not np.isfinite(self.best_val_mse_) else self.best_val_mse_,
        }
        return save_checkpoint(path, kind="E2EForecaster", config=config, tensors=tensors, extra=extra)


def future_index(index: pd.Index | None, t: int, horizon: int) -> pd.Index:
    """The ``horizon`` time stamps after position ``t`` of ``index`` (continued with its frequency past the end)."""
    if index is None:
        return pd.RangeIndex(t + 1, t + 1 + horizon)
    index = pd.Index(index)
    avail = index[t + 1 : t + 1 + horizon]
    if len(avail) == horizon:
        return avail
    if isinstance(index, pd.DatetimeIndex):
        freq = index.freq or pd.infer_freq(index[-min(len(index), 50) :])
        if freq is None:
            raise DataError("cannot extend the time index past its end: it has no regular frequency")
        return pd.date_range(index[t], periods=horizon + 1, freq=freq)[1:]
    if isinstance(index, pd.RangeIndex) or pd.api.types.is_integer_dtype(index):
        step = int(index[1] - index[0]) if len(index) > 1 else 1
        return pd.Index([int(index[t]) + step * (k + 1) for k in range(horizon)])
    raise DataError(f"cannot extend an index of type {type(index).__name__} past its end")


def load_forecaster(path: str | os.PathLike, device: str | None = None) -> E2EForecaster:
    """Load a forecaster written by :meth:`E2EForecaster.save` (refuses anything but the safe format)."""
    from tscl.io import check_state_dict, load_checkpoint

    cfg, tensors = load_checkpoint(path)
    if cfg.get("kind") != "E2EForecaster":
        raise CheckpointError(f"{path}: checkpoint kind is {cfg.get('kind')!r}, expected 'E2EForecaster'")
    try:
        c = cfg["config"]
        params = dict(c["params"])
        params["pretrained"] = None
        params["augmenter"] = "fixed"  # views are a training-time component; a loaded forecaster predicts
        if device is not None:
            params["device"] = device
        f = E2EForecaster(**params)
        e = c["encoder"]
        f.encoder, f.output_dims, f.hidden_dims, f.depth = (
            e["name"],
            e["output_dims"],
            e["hidden_dims"],
            e["depth"],
        )
        f.encoder_kwargs = dict(e["kwargs"])
        n_ch, n_cov = int(c["n_channels"]), int(c["n_covariate_cols"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: invalid config.json for an E2EForecaster: {exc}") from exc
    with torch.random.fork_rng(devices=[]):
        module = f._build(n_ch, n_cov, n_ch - n_cov)
    state = {k: v for k, v in module.state_dict().items() if not k.startswith(_NOT_SAVED)}
    check_state_dict({k: v.shape for k, v in state.items()}, tensors, what="forecaster")
    module.load_state_dict(tensors, strict=False)
    from tscl.model import _resolve_device

    module.to(_resolve_device(f.device)).eval()
    f.module_, f.n_channels_, f.n_covariate_cols_ = module, n_ch, n_cov
    f.best_val_mse_ = float(c.get("best_val_mse") or np.nan)
    return f
