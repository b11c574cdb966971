"""``tscl.ContrastiveModel``: the user-facing estimator (fit / encode / save) and ``tscl.load``."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tscl import encoders as _encoders
from tscl import losses as _losses
from tscl.errors import CheckpointError, ConfigError, DataError
from tscl.io import check_state_dict, load_checkpoint, save_checkpoint

__all__ = ["ContrastiveModel", "load", "ts2vec_n_iters"]

_PRECISIONS = {"32", "32-true", "bf16", "bf16-mixed", "16-mixed"}


def ts2vec_n_iters(n_values: int) -> int:
    """TS2Vec's rule of thumb: 200 iterations when the training array has <= 100,000 values, else 600."""
    return 200 if n_values <= 100_000 else 600


def _fingerprint(params: dict, n_iters: int, train: np.ndarray) -> dict:
    """What identifies a training run: its parameters (not the device), its length and its data."""
    import hashlib

    keep = {k: v for k, v in params.items() if k not in ("device",)}
    digest = hashlib.sha1(np.ascontiguousarray(train, dtype=np.float32).tobytes()).hexdigest()
    return {"params": keep, "n_iters": int(n_iters), "data_shape": list(train.shape), "data_sha1": digest}


def _check_resumable(ckpt_path: str, module) -> None:
    """Refuse to resume from a Lightning checkpoint of another run (other data, settings or length)."""
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable / truncated / not a checkpoint
        raise CheckpointError(
            f"cannot resume from {ckpt_path}: the file is not a readable checkpoint "
            f"({type(exc).__name__}: {str(exc)[:200]}); delete it to start afresh"
        ) from exc
    theirs = ckpt.get("tscl_fingerprint") if isinstance(ckpt, dict) else None
    ours = json.loads(json.dumps(module.fingerprint))
    if theirs != ours:
        diffs = []
        if isinstance(theirs, dict):
            for key in ("n_iters", "data_shape", "data_sha1"):
                if theirs.get(key) != ours.get(key):
                    diffs.append(f"{key}: {theirs.get(key)} there, {ours.get(key)} now")
            tp, op = theirs.get("params", {}), ours["params"]
            diffs += [
                f"{k}: {tp.get(k)!r} there, {op.get(k)!r} now"
                for k in sorted(set(tp) | set(op))
                if tp.get(k) != op.get(k)
            ]
        raise CheckpointError(
            f"{ckpt_path} belongs to a different run ({'; '.join(diffs[:6]) or 'no run fingerprint'}); "
            "use another output folder, or delete that checkpoint to start afresh"
        )
    expected = set(module.state_dict())
    found = set(ckpt.get("state_dict", {}))
    if expected != found:
        raise CheckpointError(
            f"{ckpt_path} does not match the model (missing {sorted(expected - found)[:3]}, "
            f"unexpected {sorted(found - expected)[:3]}); delete it to start afresh"
        )


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def _quiet_lightning():
    """Hide Lightning's start-up chatter (GPU/TPU availability, tips); keep warnings and the progress bar."""
    import logging

    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


class ContrastiveModel:
    """Contrastive representation learner for ``(N, T, C)`` time series (TS2Vec-style by default).

    Parameters follow TS2Vec's defaults: batch 8, lr 1e-3, 320 output dims, hidden 64, depth 10 (TCN),
    max_train_length 3000, hierarchical loss with ``temporal_unit=0``.

    Args:
        input_dims: channels ``C``; inferred from the data at the first ``fit`` when None.
        encoder: "tcn" or "transformer" (see :mod:`tscl.encoders`).
        augmenter: "autotcl" (AutoTCL's learned augmentation network, trained alternately with the encoder; options
            in ``augmenter_kwargs``, see :mod:`tscl.methods.autotcl`; the fitted network is ``model.augmenter_``,
            with ``model.augmenter_.explain(X)``), or
            "fixed" (TS2Vec's overlapping crops + timestamp masking, plus optional ``augmenter_kwargs``
            {"transforms": ["jitter", ...]} applied to the input first).
        loss: a name from :mod:`tscl.losses` ("hierarchical" or a pairwise loss applied to max-pooled overlaps).
        seed: every random draw (initialisation, batches, crops, masks, dropout) follows from it.
        precision: "32-true" or "bf16-mixed" (autocast; uses AMX on recent x86 CPUs, tensor cores on GPUs).
        device: "auto", "cpu", "cuda", ...
        swa: encode with the running average of the weights (TS2Vec does).
        single_pass: encode both views in one batched forward pass.
        scale: standardise each channel with statistics of the training data (saved in the checkpoint and applied
            by ``encode``). Off by default: the dataset loaders already scale as the papers' protocols prescribe.
    """

    def __init__(
        self,
        input_dims: int | None = None,
        encoder: str = "tcn",
        augmenter: str = "fixed",
        output_dims: int = 320,
        hidden_dims: int = 64,
        depth: int | None = None,
        loss: str = "hierarchical",
        temporal_unit: int = 0,
        lr: float = 1e-3,
        batch_size: int = 8,
        max_train_length: int | None = 3000,
        seed: int = 0,
        precision: str = "32-true",
        device: str = "auto",
        swa: bool = True,
        single_pass: bool = True,
        scale: bool = False,
        encoder_kwargs: dict | None = None,
        loss_kwargs: dict | None = None,
        augmenter_kwargs: dict | None = None,
    ):
        self.input_dims = None if input_dims is None else int(input_dims)
        self.encoder = str(encoder).lower()
        self.augmenter = str(augmenter).lower()
        self.output_dims, self.hidden_dims = int(output_dims), int(hidden_dims)
        self.depth = depth
        self.loss = str(loss).lower()
        self.temporal_unit = int(temporal_unit)
        self.lr, self.batch_size = float(lr), int(batch_size)
        self.max_train_length = None if max_train_length is None else int(max_train_length)
        self.seed = int(seed)
        self.precision = str(precision)
        self.device = str(device)
        self.swa, self.single_pass = bool(swa), bool(single_pass)
        self.scale = bool(scale)
        self.encoder_kwargs = dict(encoder_kwargs or {})
        self.loss_kwargs = dict(loss_kwargs or {})
        self.augmenter_kwargs = dict(augmenter_kwargs or {})
        self._validate_params()
        self.module_ = None  # the LightningModule once built
        self.scaler_ = None  # fitted StandardScaler when scale=True
        self.n_iters_ = 0
        self.losses_: list[float] = []

    # ------------------------------------------------------------------------------------------- configuration
    def get_params(self) -> dict[str, Any]:
        return {
            "input_dims": self.input_dims,
            "encoder": self.encoder,
            "augmenter": self.augmenter,
            "output_dims": self.output_dims,
            "hidden_dims": self.hidden_dims,
            "depth": self.depth,
            "loss": self.loss,
            "temporal_unit": self.temporal_unit,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "max_train_length": self.max_train_length,
            "seed": self.seed,
            "precision": self.precision,
            "device": self.device,
            "swa": self.swa,
            "single_pass": self.single_pass,
            "scale": self.scale,
            "encoder_kwargs": self.encoder_kwargs,
            "loss_kwargs": self.loss_kwargs,
            "augmenter_kwargs": self.augmenter_kwargs,
        }

    def _validate_params(self) -> None:
        if self.encoder not in _encoders.ENCODERS:
            raise ConfigError(f"unknown encoder {self.encoder!r}; choose one of {sorted(_encoders.ENCODERS)}")
        if self.loss not in _losses.LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose one of {sorted(_losses.LOSSES)}")
        if self.loss not in _losses.SEQUENCE_LOSSES | _losses.PAIRWISE_LOSSES:
            raise ConfigError(
                f"loss {self.loss!r} does not follow loss(z1, z2) (it needs labels or another input), so it cannot "
                f"train a ContrastiveModel; choose hierarchical or a pairwise loss: {sorted(_losses.PAIRWISE_LOSSES)}"
            )
        if self.augmenter not in ("fixed", "autotcl"):
            raise ConfigError(f"unknown augmenter {self.augmenter!r}; choose one of ['autotcl', 'fixed']")
        if self.precision not in _PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of {sorted(_PRECISIONS)}")
        for name in ("output_dims", "hidden_dims", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.max_train_length is not None and self.max_train_length < 2:
            raise ConfigError(f"max_train_length must be >= 2 or None, got {self.max_train_length}")
        if self.augmenter == "autotcl":
            from tscl.methods.autotcl import split_autotcl_kwargs

            split_autotcl_kwargs(self.augmenter_kwargs)
        unknown = set(self.augmenter_kwargs) - {"transforms", "mask_p", "mask_mode"}
        if unknown and self.augmenter == "fixed":
            raise ConfigError(
                f"unknown augmenter_kwargs {sorted(unknown)}; allowed: transforms, mask_p, mask_mode"
            )

    @property
    def bf16(self) -> bool:
        return self.precision.startswith("bf16")

    def _build(self, data: torch.Tensor):
        from tscl.augment import fixed
        from tscl.methods.pretrain import ContrastivePretraining

        torch.manual_seed(self.seed)
        enc = _encoders.get(
            self.encoder,
            input_dims=self.input_dims,
            output_dims=self.output_dims,
            hidden_dims=self.hidden_dims,
            depth=self.depth,
            **self.encoder_kwargs,
        )
        loss_kwargs = dict(self.loss_kwargs)
        if self.loss == "hierarchical":
            if "temporal_unit" in loss_kwargs:
                raise ConfigError("set temporal_unit as a model parameter, not in loss_kwargs")
            loss_kwargs["temporal_unit"] = self.temporal_unit
        loss = _losses.get(self.loss, **loss_kwargs)
        names = self.augmenter_kwargs.get("transforms") or []
        transforms = fixed.Compose([fixed.get(n) for n in names]) if names else None
        tmask = fixed.TimestampMask(
            p=float(self.augmenter_kwargs.get("mask_p", 0.5)),
            mode=self.augmenter_kwargs.get("mask_mode", "binomial"),
        )
        if self.augmenter == "autotcl":
            from tscl.methods.autotcl import build_autotcl

            self.module_ = build_autotcl(self, enc, loss, data, tmask)
            return self.module_
        self.module_ = ContrastivePretraining(
            enc,
            loss,
            data,
            sequence_loss=self.loss in _losses.SEQUENCE_LOSSES,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            max_train_length=self.max_train_length,
            transforms=transforms,
            crop=fixed.OverlapCrop(temporal_unit=self.temporal_unit),
            timestamp_mask=tmask,
            swa=self.swa,
            single_pass=self.single_pass,
        )
        return self.module_

    # ------------------------------------------------------------------------------------------- data
    def _panel(self, X, *, min_length: int = 1) -> np.ndarray:
        from tscl.data import as_panel

        arr = as_panel(X, name="X", min_length=min_length)
        if self.input_dims is not None and arr.shape[2] != self.input_dims:
            raise DataError(
                f"X has {arr.shape[2]} channels but the model expects input_dims={self.input_dims}"
            )
        return arr

    # ------------------------------------------------------------------------------------------- fit
    def fit(
        self,
        X,
        n_iters: int | None = None,
        n_epochs: int | None = None,
        *,
        checkpoint_dir: str | None = None,
        checkpoint_every: int = 20,
        progress: bool = True,
        callbacks: list | None = None,
        val_metric=None,
        val_every: int | None = None,
        accelerator: str | None = None,
        devices: int | str | list | None = None,
        num_nodes: int = 1,
        strategy: str = "auto",
    ) -> ContrastiveModel:
        """Train the encoder on ``X`` without labels.

        ``n_iters`` / ``n_epochs``: when neither is given, TS2Vec's rule (200 iterations for <= 100,000 values, else
        600). ``checkpoint_dir``: Lightning checkpoints (``last.ckpt`` every ``checkpoint_every`` steps); when it
        already holds one, training resumes from it and ends exactly as an uninterrupted run would.

        ``val_metric``: a callable returning ``{name: value}`` (e.g. a probe's score on a validation split), logged
        every ``val_every`` steps (one Lightning epoch) so that ``callbacks`` (e.g. Optuna's pruning callback) can
        monitor it. ``accelerator`` / ``devices`` / ``num_nodes`` / ``strategy`` go to Lightning's ``Trainer``
        (default: one device from ``device``); ``strategy="ddp"`` with several devices or nodes trains data-parallel
        (launched by Lightning, torchrun or SLURM), each process drawing its own batches. Afterwards
        ``global_rank_`` says which process this is: only rank 0 writes (``save`` is a no-op elsewhere).
        """
        import lightning as L

        from tscl.methods.pretrain import StepIndex

        arr = self._panel(X, min_length=2)
        if self.input_dims is None:
            self.input_dims = int(arr.shape[2])
        if self.scale:
            from tscl.data import StandardScaler

            self.scaler_ = StandardScaler().fit(arr)
            arr = self.scaler_.transform(arr).astype(np.float32)
        from tscl.data.windows import prepare_train_panel

        train = prepare_train_panel(arr, self.max_train_length)
        if train.shape[0] == 0:
            raise DataError("X has no observed values (every sample is all-NaN)")
        if n_iters is not None and n_epochs is not None:
            raise ConfigError("give n_iters or n_epochs, not both")
        if n_epochs is not None:
            per_epoch = max(train.shape[0] // min(self.batch_size, train.shape[0]), 1)
            n_iters = int(n_epochs) * per_epoch
        elif n_iters is None:
            n_iters = ts2vec_n_iters(arr.size)
        n_iters = int(n_iters)
        if n_iters < 1:
            raise ConfigError(f"n_iters must be >= 1, got {n_iters}")

        if self.loss not in _losses.SEQUENCE_LOSSES and min(self.batch_size, train.shape[0]) < 2:
            raise ConfigError(
                f"loss {self.loss!r} contrasts series within a batch and needs at least 2 training "
                f"series per batch; got {train.shape[0]} series with batch_size={self.batch_size}"
            )

        data = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32))
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG state untouched
            module = self._build(data)
        module.fingerprint = _fingerprint(self.get_params(), n_iters, train)
        device = _resolve_device(self.device)
        module.val_metric = val_metric
        callbacks, ckpt_path = list(callbacks or []), None
        if checkpoint_dir is not None:
            from tscl.methods.pretrain import AtomicLastCheckpoint

            ckdir = Path(checkpoint_dir)
            callbacks.append(AtomicLastCheckpoint(ckdir, every_n_steps=checkpoint_every))
            if (ckdir / "last.ckpt").exists():
                ckpt_path = str(ckdir / "last.ckpt")
                _check_resumable(ckpt_path, module)
        precision = {"32": "32-true", "bf16": "bf16-mixed"}.get(self.precision, self.precision)
        if val_every is not None and int(val_every) < 1:
            raise ConfigError(f"val_every must be >= 1, got {val_every}")
        steps_per_epoch = n_iters if val_metric is None or val_every is None else min(int(val_every), n_iters)
        with (
            tempfile.TemporaryDirectory(prefix="tscl-") as root,
            warnings.catch_warnings(),
            _quiet_lightning(),
        ):
            warnings.filterwarnings(
                "ignore",
                message=r".*(num_workers|does not have many workers|"
                r"LeafSpec|treespec|GPU available|TPU available|Checkpoint directory|no `val_dataloader`).*",
            )
            trainer = L.Trainer(
                max_steps=n_iters,
                max_epochs=-(-n_iters // steps_per_epoch),
                accelerator=accelerator or ("gpu" if device.type == "cuda" else device.type),
                devices=devices or ([device.index] if device.index is not None else 1),
                num_nodes=int(num_nodes),
                strategy=strategy,
                use_distributed_sampler=False,  # batches are drawn per rank by the module (draw_index)
                precision=precision,
                logger=False,
                enable_checkpointing=False,
                callbacks=callbacks,
                enable_progress_bar=progress,
                enable_model_summary=False,
                default_root_dir=root,
                num_sanity_val_steps=0,
                deterministic=False,
                log_every_n_steps=1,
            )
            loader = torch.utils.data.DataLoader(StepIndex(steps_per_epoch), batch_size=1, shuffle=False)
            val = None if val_metric is None else torch.utils.data.DataLoader(StepIndex(1), batch_size=1)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                trainer.fit(module, loader, val, ckpt_path=ckpt_path, weights_only=True)
        self.global_rank_, self.world_size_ = int(trainer.global_rank), int(trainer.world_size)
        module.to(device)
        self.n_iters_ = int(module.global_step)
        self.losses_ = list(module.losses)
        if hasattr(
            module, "collapse_events"
        ):  # AutoTCL: augmenter collapses detected (and undone) in training
            self.collapse_events_ = list(module.collapse_events)
        return self

    # ------------------------------------------------------------------------------------------- encode
    def _check_fitted(self):
        if self.module_ is None:
            raise ConfigError("the model is not fitted: call fit(X) or load a checkpoint first")

    @property
    def augmenter_(self):
        """The fitted learned augmenter (augmenter="autotcl"): an :class:`~tscl.augment.AutoTCLAugmenter` with
        ``explain(X)``. ``X`` is in the encoder's input space (apply ``model.scaler_`` first when ``scale=True``)."""
        self._check_fitted()
        aug = getattr(self.module_, "augmenter", None)
        if aug is None:
            raise ConfigError(
                f"augmenter={self.augmenter!r} has no learned augmenter; use augmenter='autotcl'"
            )
        return aug

    @property
    def net_(self) -> nn.Module:
        """The encoder used for inference (the SWA-averaged one when ``swa``)."""
        self._check_fitted()
        return self.module_.encoder_for_inference()

    def _autocast(self, device: torch.device):
        if self.bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @staticmethod
    def _pool(out: torch.Tensor, encoding_window) -> torch.Tensor:
        if encoding_window is None:
            return out
        if encoding_window == "full_series":
            return out.amax(dim=1, keepdim=True)
        if isinstance(encoding_window, (int, np.integer)) and not isinstance(encoding_window, bool):
            w = int(encoding_window)
            if w < 1:
                raise ConfigError(f"encoding_window must be >= 1, got {w}")
            pooled = torch.nn.functional.max_pool1d(
                out.transpose(1, 2), kernel_size=w, stride=1, padding=w // 2
            )
            if w % 2 == 0:
                pooled = pooled[..., :-1]
            return pooled.transpose(1, 2)
        raise ConfigError(f"encoding_window must be None, 'full_series' or an int, got {encoding_window!r}")

    def encode(
        self,
        X,
        mask=None,
        encoding_window=None,
        causal: bool = False,
        sliding_length: int | None = None,
        sliding_padding: int = 0,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Representations of ``X`` ``(N, T, C)``.

        * ``encoding_window=None``: per step, ``(N, T, D)``; ``"full_series"``: max-pooled, ``(N, D)``;
          an int ``w``: max-pooled over a sliding window of ``w`` steps, ``(N, T, D)``.
        * ``sliding_length=s``: encode windows of ``s`` steps with ``sliding_padding`` steps of context before
          them (and after them unless ``causal``). ``causal=True, sliding_length=1, sliding_padding=P`` gives the
          leakage-safe encoding used for forecasting: step ``t`` sees only steps ``t-P .. t``.
        * ``mask``: optional ``(N, T)`` bool, True = keep (masked steps are zeroed in the latent).
        """
        self._check_fitted()
        arr = self._panel(X)
        if self.scaler_ is not None:
            arr = self.scaler_.transform(arr).astype(np.float32)
        N, T, _ = arr.shape
        if batch_size is None:
            batch_size = self.batch_size
        batch_size = max(int(batch_size), 1)
        net = self.net_
        device = next(net.parameters()).device
        was_training = net.training
        net.eval()
        x_all = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        m_all = None if mask is None else torch.as_tensor(np.asarray(mask), dtype=torch.bool)
        if m_all is not None and tuple(m_all.shape) != (N, T):
            raise DataError(f"mask must have shape (N, T) = {(N, T)}, got {tuple(m_all.shape)}")
        try:
            with torch.inference_mode(), self._autocast(device):
                if sliding_length is None:
                    outs = []
                    for i in range(0, N, batch_size):
                        xb = x_all[i : i + batch_size].to(device)
                        mb = None if m_all is None else m_all[i : i + batch_size].to(device)
                        outs.append(self._pool(net(xb, mb).float(), encoding_window).cpu())
                    out = torch.cat(outs, 0)
                else:
                    out = self._encode_sliding(
                        net,
                        x_all,
                        m_all,
                        int(sliding_length),
                        int(sliding_padding),
                        causal,
                        encoding_window,
                        batch_size,
                        device,
                    )
        finally:
            net.train(was_training)
        if encoding_window == "full_series":
            out = out.squeeze(1)
        return out.numpy()

    def _encode_sliding(
        self, net, x_all, m_all, length, padding, causal, encoding_window, batch_size, device
    ):
        """All windows ``[s - padding, s + length (+ padding))`` for ``s = 0, length, 2*length, ...``, batched
        ``batch_size`` windows at a time across series and positions (missing context is NaN)."""
        from tscl.augment.fixed import take_windows

        if length < 1 or padding < 0:
            raise ConfigError(
                f"sliding_length must be >= 1 and sliding_padding >= 0, got {length}, {padding}"
            )
        N, T, _ = x_all.shape
        starts = torch.arange(0, T, length)
        win = padding + length + (0 if causal else padding)
        # (window id) -> (series, start); windows of one series are consecutive.
        series = torch.arange(N).repeat_interleave(len(starts))
        offs = starts.repeat(N) - padding
        outs = []
        m_float = None if m_all is None else m_all.unsqueeze(-1).float()
        # Encoders that take ``window=`` compute only the target steps (the same values as slicing the output).
        use_window = getattr(net, "accepts_window", False) and encoding_window in (None, "full_series")
        for i in range(0, len(series), batch_size):
            rows, st = series[i : i + batch_size], offs[i : i + batch_size]
            xb = take_windows(x_all, rows, st, win).to(device)
            mb = None
            if m_float is not None:
                mb = (
                    torch.nan_to_num(take_windows(m_float, rows, st, win).squeeze(-1), nan=0.0)
                    .bool()
                    .to(device)
                )
            if use_window:
                z = net(xb, mb, window=(torch.full((len(rows),), padding, device=device), length)).float()
            else:  # pool inside the window, then keep the target steps: never looks past the window
                z = net(xb, mb).float()
                if encoding_window != "full_series":
                    z = self._pool(z, encoding_window)
                z = z[:, padding : padding + length]
            if encoding_window == "full_series":
                z = z.amax(dim=1, keepdim=True)
            outs.append(z.cpu())
        out = torch.cat(outs, 0)  # (N * n_windows, length or 1, D)
        out = out.reshape(N, len(starts) * out.shape[1], out.shape[2])
        if encoding_window == "full_series":
            return out.amax(dim=1, keepdim=True)
        return out[:, :T]

    # ------------------------------------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write ``path/config.json`` + ``path/model.safetensors`` (the inference encoder's weights). Under DDP
        only rank 0 writes; the other ranks return ``path`` without writing."""
        self._check_fitted()
        if getattr(self, "global_rank_", 0) != 0:
            return Path(path)
        tensors = {f"encoder.{k}": v.detach() for k, v in self.net_.state_dict().items()}
        if getattr(self.module_, "augmenter", None) is not None:  # AutoTCL: the augmenter in the same file
            tensors.update(
                {f"augmenter.{k}": v.detach() for k, v in self.module_.augmenter.state_dict().items()}
            )
        config = {
            "params": self.get_params(),
            "n_iters": self.n_iters_,
            "losses": self.losses_,
            "scaler": None if self.scaler_ is None else self.scaler_.state_dict(),
        }
        return save_checkpoint(path, kind="ContrastiveModel", config=config, tensors=tensors, extra=extra)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> ContrastiveModel:
        return load(path, device=device)

    def __repr__(self) -> str:
        p = self.get_params()
        return (
            "ContrastiveModel(" + ", ".join(f"{k}={v!r}" for k, v in p.items() if v not in ({}, None)) + ")"
        )


def load(path: str | os.PathLike, device: str | None = None) -> ContrastiveModel:
    """Load a checkpoint written by :meth:`ContrastiveModel.save`; refuses anything but the safe format."""
    cfg, tensors = load_checkpoint(path)
    if cfg.get("kind") != "ContrastiveModel":
        raise CheckpointError(f"{path}: checkpoint kind is {cfg.get('kind')!r}, expected 'ContrastiveModel'")
    try:
        params = dict(cfg["config"]["params"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: config.json has no config.params section") from exc
    if device is not None:
        params["device"] = device
    allowed = set(
        ContrastiveModel.__init__.__code__.co_varnames[1 : ContrastiveModel.__init__.__code__.co_argcount]
    )
    unknown = set(params) - allowed
    if unknown:
        raise CheckpointError(f"{path}: unknown parameters in config.json: {sorted(unknown)}")
    try:
        model = ContrastiveModel(**params)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: invalid parameters in config.json: {exc}") from exc
    if model.input_dims is None:
        raise CheckpointError(f"{path}: config.json lacks input_dims")
    with torch.random.fork_rng(devices=[]):
        module = model._build(torch.zeros(1, 1, model.input_dims))
    net = module.encoder_for_inference()
    enc_tensors = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
    aug = getattr(module, "augmenter", None)
    aug_tensors = {k[len("augmenter.") :]: v for k, v in tensors.items() if k.startswith("augmenter.")}
    if aug is not None:
        check_state_dict({k: v.shape for k, v in aug.state_dict().items()}, aug_tensors, what="augmenter")
        aug.load_state_dict(aug_tensors)
    extra_keys = sorted(set(tensors) - {f"encoder.{k}" for k in enc_tensors})
    extra_keys = [k for k in extra_keys if not (aug is not None and k.startswith("augmenter."))]
    if extra_keys:
        raise CheckpointError(f"{path}: unexpected tensors in model.safetensors: {extra_keys[:5]}")
    check_state_dict({k: v.shape for k, v in net.state_dict().items()}, enc_tensors, what="encoder")
    net.load_state_dict(enc_tensors)
    if net is not module.encoder:
        module.encoder.load_state_dict(enc_tensors)
    module.to(_resolve_device(model.device))
    model.n_iters_ = int(cfg["config"].get("n_iters", 0))
    model.losses_ = [float(v) for v in cfg["config"].get("losses", [])]
    if cfg["config"].get("scaler") is not None:
        from tscl.data import StandardScaler

        try:
            model.scaler_ = StandardScaler.from_state_dict(cfg["config"]["scaler"])
        except Exception as exc:  # malformed scaler state
            raise CheckpointError(f"{path}: invalid scaler state in config.json: {exc}") from exc
        if len(model.scaler_.mean_) != model.input_dims:
            raise CheckpointError(
                f"{path}: the scaler has {len(model.scaler_.mean_)} channels, the model {model.input_dims}"
            )
    model.checkpoint_extra_ = cfg.get("extra", {})
    return model
