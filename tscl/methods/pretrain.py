"""Contrastive pretraining as a LightningModule (TS2Vec's training procedure, any encoder / loss / augmenter).

One training step (TS2Vec, Yue et al. 2022, Sec. 3.2): take a batch of series, cut a random window of at most
``max_train_length`` steps, draw two random overlapping crops, encode both (with random timestamp masking on the
latent), keep the representations of the overlapping steps and apply the contrastive loss to them. The encoder used
for inference is an equal-weight running average of the weights after every step (SWA, as TS2Vec does).

Reproducibility and resume: batch ``k`` and every random draw inside step ``k`` depend only on ``(seed, k)``, so a run
resumed from a Lightning checkpoint continues exactly as the uninterrupted run would.

Distributed data parallel (DDP): batches are drawn by the module, not by a sampler, so Lightning's
``DistributedSampler`` does not apply. Instead rank ``r`` of ``W`` processes takes draw ``k * W + r`` at step ``k``
(:meth:`ContrastivePretraining.draw_index`): every rank gets its own batch (and its own crops and masks), and the
ranks together consume the same stream of batches a single process would over ``W`` times as many steps.
``batch_size`` is per process, as in Lightning. On one process the draw is the step, as before.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_swa_multi_avg_fn
from torch.utils.data import Dataset

from tscl.augment.fixed import OverlapCrop, TimestampMask, crop_pair_padded, take_per_row

__all__ = ["ContrastivePretraining", "StepIndex", "AtomicLastCheckpoint", "step_seed", "weight_average"]


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for (run seed, step, stream), well mixed (SplitMix64 finaliser)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(step) * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) & (
        2**64 - 1
    )
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) & (2**63 - 1)


def seed_step(seed: int, device: torch.device) -> None:
    """Seed the random streams that a training step on ``device`` draws from (the CPU's always; ``device``'s own
    when it is an accelerator). On the CPU this skips ``torch.manual_seed``'s lazy CUDA seeding, which on a
    machine without a GPU captures a Python stack trace on every call (measured 0.5 ms per step)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(int(seed))
    else:
        torch.manual_seed(int(seed))


class _WeightAverage(AveragedModel):
    """torch's :class:`AveragedModel` (same state dict, same update) with a lean update on the CPU: one foreach lerp
    over the parameter lists, without torch's per-step regrouping by device and dtype and its tensor-valued weight
    (measured 1.4 -> 0.5 ms per step for the TS2Vec encoder, 1-3% of a GunPoint step). The weight is
    ``1 / (n + 1)`` computed in float32, as torch computes it, so the averages are bit-identical."""

    def update_parameters(self, model: nn.Module) -> None:
        n_avg = self.n_averaged
        if self.use_buffers or n_avg.device.type != "cpu" or int(n_avg) == 0 or self.avg_fn is not None:
            return super().update_parameters(model)
        avg = [p.detach() for p in self.module.parameters()]
        cur = [p.detach() for p in model.parameters()]
        if len(avg) != len(cur) or any(
            a.device != c.device or a.dtype != c.dtype or not a.is_floating_point()
            for a, c in zip(avg, cur, strict=True)
        ):
            return super().update_parameters(model)
        n = int(n_avg)
        torch._foreach_lerp_(avg, cur, float(np.float32(1.0) / np.float32(n + 1)))
        for b_avg, b_model in zip(self.module.buffers(), model.buffers(), strict=True):
            b_avg.detach().copy_(b_model.detach().to(b_avg.device))
        n_avg += 1


def weight_average(encoder: nn.Module) -> AveragedModel:
    """An equal-weight running average of ``encoder``'s weights that already holds ``w_0`` (TS2Vec averages the
    initial weights too: w_0 .. w_n). Updated with one foreach lerp over all parameters per step; its parameters
    take no gradients (DDP must not wait for them)."""
    avg = _WeightAverage(encoder, multi_avg_fn=_swa_update)
    avg.update_parameters(encoder)
    avg.requires_grad_(False)
    return avg


def adamw(params, lr: float) -> torch.optim.AdamW:
    """AdamW (TS2Vec's optimiser, torch's defaults besides ``lr``), with torch's fused kernel when every parameter
    lives on the CPU or a CUDA device: one kernel for all tensors instead of a dozen ops per tensor (measured
    4.1 -> 1.5 ms per step for the TS2Vec encoder on 2 CPU cores). Same update rule."""
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, fused=fused or None)


def _swa_update(averaged, current, num_averaged) -> None:
    """torch's foreach SWA update, from a module-level function so that models stay picklable."""
    get_swa_multi_avg_fn()(averaged, current, num_averaged)


class StepIndex(Dataset):
    """A dataset of step numbers. The module draws each step's batch from ``(seed, global_step)`` itself, so the
    dataloader carries no state that a resume could lose."""

    def __init__(self, n_steps: int):
        self.n_steps = int(n_steps)

    def __len__(self) -> int:
        return self.n_steps

    def __getitem__(self, i: int) -> int:
        return i


class AtomicLastCheckpoint(L.Callback):
    """Save the full training state (weights, optimizer, SWA average, step) to ``dirpath/last.ckpt`` every
    ``every_n_steps`` steps and at the end. Written to a temporary file and renamed into place, so a process killed
    at any moment leaves either the previous or the new checkpoint, never a truncated one. These are Lightning's own
    resume files for our own runs; the portable, pickle-free format is :mod:`tscl.io`."""

    def __init__(self, dirpath, every_n_steps: int = 20):
        super().__init__()
        self.dirpath = Path(dirpath)
        self.every_n_steps = max(int(every_n_steps), 1)

    def _save(self, trainer) -> None:
        # Every rank calls save_checkpoint (it ends with a barrier); only rank 0 writes and renames.
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        tmp = self.dirpath / ".last.ckpt.tmp"
        trainer.save_checkpoint(str(tmp), weights_only=False)
        if trainer.is_global_zero:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.dirpath / "last.ckpt")
            fd = os.open(self.dirpath, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer, pl_module):
        self._save(trainer)


class ContrastivePretraining(L.LightningModule):
    """Args:
    encoder: ``(B, T, C) -> (B, T, D)`` module taking ``mask`` (``(B, T)`` bool, True = keep).
    loss: a sequence loss on ``(B, T, D)`` pairs (hierarchical) or a pairwise loss on ``(B, D)`` pairs
        (then the overlap representations are max-pooled over time first); ``sequence_loss`` says which.
    data: training panel ``(N, T, C)`` float tensor (NaN = missing); kept on the CPU, batches move to the device.
    transforms: optional transform (e.g. a ``Compose`` of fixed augmentations) applied to each view after cropping.
    crop / timestamp_mask: TS2Vec's view generator (overlapping crops, latent timestamp masking).
    single_pass: encode both views in one batched forward (padded to a common length with missing steps).
    """

    def __init__(
        self,
        encoder: nn.Module,
        loss: nn.Module,
        data: torch.Tensor,
        *,
        sequence_loss: bool = True,
        batch_size: int = 8,
        lr: float = 1e-3,
        seed: int = 0,
        max_train_length: int | None = 3000,
        transforms: nn.Module | None = None,
        crop: OverlapCrop | None = None,
        timestamp_mask: TimestampMask | None = None,
        swa: bool = True,
        single_pass: bool = True,
    ):
        super().__init__()
        self.encoder = encoder
        self.loss_fn = loss
        self.transforms = transforms
        self.crop = crop if crop is not None else OverlapCrop()
        self.timestamp_mask = timestamp_mask if timestamp_mask is not None else TimestampMask(p=0.5)
        self.swa = weight_average(encoder) if swa else None
        self.data = data  # plain attribute: not a buffer, never written into checkpoints
        self.sequence_loss = sequence_loss
        self.batch_size = min(int(batch_size), data.shape[0])
        self.lr, self.seed = float(lr), int(seed)
        self.max_train_length = max_train_length
        self.single_pass = single_pass
        self.losses: list[float] = []
        self.fingerprint: dict = {}  # identifies the run; a resumed checkpoint must carry the same one
        self.step_end_times: list[float] = []  # perf_counter() after each step (benchmarks read it)
        self.val_metric = (
            None  # optional callable -> {name: value}, logged by validation_step (e.g. for pruning)
        )

    # ----------------------------------------------------------------------------------------------- batching
    def batch_indices(self, step: int) -> torch.Tensor:
        """Indices of the series in batch ``step``: shuffled epochs without replacement, last partial batch dropped
        (TS2Vec's ``DataLoader(shuffle=True, drop_last=True)``)."""
        n = self.data.shape[0]
        per_epoch = max(n // self.batch_size, 1)
        epoch, j = divmod(int(step), per_epoch)
        g = torch.Generator().manual_seed(step_seed(self.seed, epoch, stream=1))
        perm = torch.randperm(n, generator=g)
        return perm[j * self.batch_size : (j + 1) * self.batch_size]

    def draw_index(self, step: int | None = None) -> int:
        """Index of the batch (and random stream) drawn at ``step`` (default: the current global step) by this
        process: ``step`` on one process, ``step * W + rank`` under DDP with ``W`` processes."""
        step = int(self.global_step if step is None else step)
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.world_size <= 1:
            return step
        return step * trainer.world_size + trainer.global_rank

    def encoder_for_inference(self) -> nn.Module:
        return self.swa.module if self.swa is not None else self.encoder

    # ----------------------------------------------------------------------------------------------- training
    def on_train_batch_start(self, batch, batch_idx):
        # Every random draw of this step (window, crops, masks, dropout) depends on (seed, step) only.
        seed_step(step_seed(self.seed, self.draw_index()), self.device)

    def contrastive_views(self, x: torch.Tensor):
        """Return the representations of the overlapping part of two views, ``(z1, z2)`` each ``(B, crop_l, D)``.

        Single pass: both views are left-aligned in one ``(2B, L)`` batch, ``L = max(len1, len2)``; the steps after
        a view's end are padding, which the encoder treats as zero padding at every layer, so the result equals
        encoding the two views separately (TS2Vec), in one batched forward and backward pass.
        """
        B, T = x.shape[:2]
        if self.max_train_length is not None and T > self.max_train_length:
            off = int(torch.randint(T - self.max_train_length + 1, ()).item())
            x = x[:, off : off + self.max_train_length]
        p = self.crop.sample(B, x.shape[1], device=x.device)
        len1, len2 = p.len1, p.len2
        if self.single_pass:
            views, layout = crop_pair_padded(x, p, bucket=True)
            if self.transforms is not None:  # independent draws for every view
                views = self.transforms(views)
            mask = self.timestamp_mask.sample(2 * B, layout.L, device=x.device)
            return layout.encode_overlap(self.encoder, views, mask)
        v1 = take_per_row(x, p.start1, len1)
        v2 = take_per_row(x, p.start2, len2)
        if self.transforms is not None:
            v1, v2 = self.transforms(v1), self.transforms(v2)
        z1 = self.encoder(v1, self.timestamp_mask.sample(B, len1, device=x.device))
        z2 = self.encoder(v2, self.timestamp_mask.sample(B, len2, device=x.device))
        return z1[:, -p.crop_l :], z2[:, : p.crop_l]

    def training_step(self, batch, batch_idx):
        x = self.data[self.batch_indices(self.draw_index())].to(self.device, non_blocking=True)
        z1, z2 = self.contrastive_views(x)
        if not self.sequence_loss:
            z1, z2 = z1.amax(dim=1), z2.amax(dim=1)
        loss = self.loss_fn(z1, z2)
        self.losses.append(float(loss.detach()))
        self.log_loss(x.shape[0])
        return loss

    #: the training loss is logged (and shown in the progress bar) as the mean over this many steps
    log_every: int = 10

    def log_loss(self, batch_size: int) -> None:
        """Log ``loss``, the mean of the last :attr:`log_every` steps' losses, every :attr:`log_every` steps and at
        the last step. Every ``losses`` entry is kept in ``self.losses``; a Lightning ``self.log`` call costs about
        0.6 ms (1-3% of a TS2Vec step on GunPoint), so it is not made every step."""
        step = int(self.global_step) + 1  # steps done once this one ends
        trainer = getattr(self, "_trainer", None)
        last = trainer is not None and trainer.max_steps is not None and step >= trainer.max_steps
        if step % self.log_every == 0 or last or step == 1:
            recent = self.losses[-self.log_every :]
            self.log(
                "loss",
                float(np.mean(recent)),
                prog_bar=True,
                on_step=True,
                on_epoch=False,
                batch_size=batch_size,
            )

    def validation_step(self, batch, batch_idx):
        """Log ``self.val_metric()`` (e.g. a probe's score on a validation split) when one is set. ``fit`` runs it
        every ``val_every`` steps; callbacks such as Optuna's pruning callback read the logged value."""
        if self.val_metric is not None:
            for name, value in self.val_metric().items():
                self.log(name, float(value), prog_bar=True, batch_size=1, sync_dist=True)

    def optimizer_step(self, *args, **kwargs):
        # SWA update and bookkeeping happen here, inside the step, so that any callback that runs after the step
        # (checkpointing) sees a consistent state.
        super().optimizer_step(*args, **kwargs)
        if self.swa is not None:
            self.swa.update_parameters(self.encoder)
        self.step_end_times.append(time.perf_counter())

    def configure_optimizers(self):
        params = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("swa.")]
        return adamw(params, self.lr)

    # ----------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint):
        checkpoint["tscl_losses"] = list(self.losses)
        checkpoint["tscl_fingerprint"] = dict(self.fingerprint)

    def on_load_checkpoint(self, checkpoint):
        self.losses = list(checkpoint.get("tscl_losses", []))
