"""AutoTCL training (Zheng et al., ICLR 2024): alternating optimisation of a learned augmenter and the encoder.

Every step ``k`` (Lightning manual optimisation, one encoder optimizer step per training step):

1. **Augmenter step** (when ``k % aug_every == 0``): the encoder is frozen (eval mode, no timestamp masking, no
   parameter gradients), the augmenter draws a view ``v`` of the batch and takes one AdamW step (lr ``aug_lr``) on
   :class:`tscl.augment.autotcl.AutoTCLObjective` (MMD(f(x), f(v)) + sparsity + smoothness). Gradients are taken
   with ``torch.autograd.grad`` w.r.t. the augmenter's parameters only, so no encoder weight gradient is computed.
2. **Encoder step**: the augmenter (no gradient) draws a fresh view ``v``; the positive pair is ``(x, v)`` (the
   paper's pair: the original and its learned view). With ``crop=True`` (default) TS2Vec's overlapping crops are
   applied on top (view 1 a crop of ``x``, view 2 the other crop of ``v``), and with TS2Vec's timestamp masking;
   with ``crop=False`` both are the whole window. The encoder's contrastive loss is the model's ``loss`` unchanged
   (hierarchical by default), so AutoTCL and the fixed augmentation differ only in the views. The step's crops and
   timestamp masks are drawn first, in the fixed path's order, so at equal seed both methods train on the same
   batches, crops and masks (and a timing comparison sees the same encoder work).

The authors update the augmenter every ``ratio_step`` iterations (1 in their code); ``aug_every=3`` is our default
to keep the cost at <= 1.5x a fixed-augmentation step (measured on GunPoint: an augmenter step costs about one
encoder step, and every step also runs the augmenter's forward pass; ``aug_every=2`` measured 1.57x).
The encoder used for encoding is the SWA average (as in the paper's code and in TS2Vec).

Collapse: after each augmenter update the next encoder step checks the sampled hard mask; a mask that keeps all or
nothing of the whole batch is a collapse. It is logged (``logging.getLogger("tscl.autotcl")`` warning, the
``aug_collapse`` metric and :attr:`AutoTCLPretraining.collapse_events`), and the augmenter is restored to its last
healthy weights (optimizer moments reset), so a collapsed augmenter is never silently kept.

Reproducibility and resume: inherited from :class:`~tscl.methods.pretrain.ContrastivePretraining` (every draw of
step ``k`` depends on ``(seed, k)``); the augmenter's optimizer state, healthy snapshot and collapse log are saved in
the Lightning checkpoint, so a resumed run ends as the uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import torch
from torch import nn

from tscl.augment.autotcl import AutoTCLAugmenter, AutoTCLObjective, mask_collapse
from tscl.augment.fixed import bucket_length, crop_pair_padded
from tscl.errors import ConfigError
from tscl.methods.pretrain import ContrastivePretraining, adamw

__all__ = ["AutoTCLPretraining", "AUGMENTER_KEYS", "OBJECTIVE_KEYS", "METHOD_KEYS", "AUTOTCL_KWARGS"]

log = logging.getLogger("tscl.autotcl")

#: augmenter_kwargs accepted with augmenter="autotcl", by the object they configure
AUGMENTER_KEYS = (
    "hidden_dims",
    "embed_dims",
    "depth",
    "mask_channels",
    "temperature",
    "gamma",
    "zeta",
    "eps_bias",
    "hard",
    "noise_std",
    "location",
)
OBJECTIVE_KEYS = ("sparsity_weight", "smooth_weight", "keep_threshold", "kernel_mul", "kernel_num")
METHOD_KEYS = ("aug_lr", "aug_every", "crop", "mask_p", "mask_mode")
AUTOTCL_KWARGS = AUGMENTER_KEYS + OBJECTIVE_KEYS + METHOD_KEYS


def split_autotcl_kwargs(kwargs: dict) -> tuple[dict, dict, dict]:
    """Split ``augmenter_kwargs`` into (augmenter, objective, method) options; unknown keys raise ConfigError."""
    unknown = set(kwargs) - set(AUTOTCL_KWARGS)
    if unknown:
        raise ConfigError(
            f"unknown augmenter_kwargs for augmenter='autotcl': {sorted(unknown)}; allowed: {list(AUTOTCL_KWARGS)}"
        )
    pick = lambda keys: {k: kwargs[k] for k in keys if k in kwargs}  # noqa: E731
    return pick(AUGMENTER_KEYS), pick(OBJECTIVE_KEYS), pick(METHOD_KEYS)


class AutoTCLPretraining(ContrastivePretraining):
    """ContrastivePretraining whose views come from a learned :class:`AutoTCLAugmenter`.

    Args (besides :class:`ContrastivePretraining`'s): ``augmenter``, ``objective``; ``aug_lr`` (0.01, the authors'
    ``meta_lr``); ``aug_every`` (one augmenter step every ``aug_every`` encoder steps, 3); ``crop_views`` (TS2Vec crops
    on top of the learned views, True; ``augmenter_kwargs={"crop": ...}`` in the model).
    """

    def __init__(
        self,
        encoder: nn.Module,
        loss: nn.Module,
        data: torch.Tensor,
        *,
        augmenter: AutoTCLAugmenter,
        objective: AutoTCLObjective | None = None,
        aug_lr: float = 0.01,
        aug_every: int = 3,
        crop_views: bool = True,
        **kwargs,
    ):
        super().__init__(encoder, loss, data, **kwargs)
        if not float(aug_lr) > 0:
            raise ConfigError(f"aug_lr must be > 0, got {aug_lr!r}")
        if int(aug_every) < 1:
            raise ConfigError(f"aug_every must be >= 1, got {aug_every!r}")
        self.augmenter = augmenter
        self.objective = objective if objective is not None else AutoTCLObjective()
        self.aug_lr, self.aug_every, self.crop_views = float(aug_lr), int(aug_every), bool(crop_views)
        self.automatic_optimization = False
        # A plain optimizer (not a Lightning one): Lightning's global_step counts encoder steps only.
        self.aug_opt = adamw(self.augmenter.parameters(), self.aug_lr)
        self._healthy = self._snapshot()
        self.collapse_events: list[dict] = []
        self.aug_history: list[dict] = []  # per augmenter step: step, loss terms, mean keep probability

    # ----------------------------------------------------------------------------------------------- helpers
    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.augmenter.state_dict().items()}

    def configure_optimizers(self):
        params = [
            p
            for n, p in self.named_parameters()
            if p.requires_grad and not n.startswith(("swa.", "augmenter.", "objective."))
        ]
        return adamw(params, self.lr)

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        if self.max_train_length is not None and T > self.max_train_length:
            off = int(torch.randint(T - self.max_train_length + 1, ()).item())
            x = x[:, off : off + self.max_train_length]
        return x

    # ----------------------------------------------------------------------------------------------- steps
    def augmenter_step(self, x: torch.Tensor) -> dict[str, float]:
        """One update of the augmenter on batch ``x`` with the encoder frozen; returns the loss terms."""
        was_training = self.encoder.training
        self.encoder.eval()
        self.augmenter.train()
        # The encoder is frozen here: its weights leave the graph, so no backward op computes their gradients.
        frozen = [p for p in self.encoder.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            out = self.augmenter(x)
            with torch.no_grad():
                z_x = self.encoder(x)
            z_v = self.encoder(out.view)
            loss, parts = self.objective(z_x, z_v, out.weight)
            params = [p for p in self.augmenter.parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = None if g is None else g.to(p.dtype)
            self.aug_opt.step()
            self.aug_opt.zero_grad(set_to_none=True)
        finally:
            self.encoder.train(was_training)
            for p in frozen:
                p.requires_grad_(True)
        parts.update(loss=float(loss.detach()), keep_prob=float(out.keep_prob.detach().float().mean()))
        return parts

    def _restore_healthy(self) -> None:
        self.augmenter.load_state_dict(self._healthy)
        self.aug_opt.state = defaultdict(dict)  # drop the moments that drove it into collapse

    def learned_view(self, x: torch.Tensor):
        """A view of ``x`` from the augmenter (no gradient), with collapse detection and recovery."""
        with torch.no_grad():
            out = self.augmenter(x, sample=True)
            kind = mask_collapse(out.mask)
            if kind is not None:
                event = {"step": int(self.global_step), "kind": kind}
                self.collapse_events.append(event)
                log.warning(
                    "AutoTCL augmenter collapsed at step %d: the mask is %s for the whole batch; "
                    "restoring its last healthy weights",
                    event["step"],
                    kind.replace("_", " "),
                )
                self._restore_healthy()
                out = self.augmenter(x, sample=True)
            elif self.global_step % self.aug_every == 0:  # the update just taken is healthy: remember it
                self._healthy = self._snapshot()
        return out, kind

    def draw_crops(self, B: int, T: int, device) -> tuple | None:
        """TS2Vec's crop and timestamp masks for the step, drawn first, in the fixed path's order.

        Drawn before any augmenter draw, so at equal seed AutoTCL and the fixed augmentation crop and mask the same
        steps: the two methods differ only in the views (and timing comparisons see equal encoder work). ``None``
        with ``crop=False`` (the mask is then drawn with the views).
        """
        if not self.crop_views:
            return None
        p = self.crop.sample(B, T, device=device)
        return p, self.timestamp_mask.sample(2 * B, bucket_length(max(p.len1, p.len2)), device=device)

    def contrastive_views(self, x: torch.Tensor, crops: tuple | None = None):
        """Representations ``(z1, z2)`` of the pair (x, learned view of x), cropped as TS2Vec when ``crop``.

        ``crops``: ``(CropParams, mask)`` from :meth:`draw_crops` (drawn here when None and ``crop=True``).
        """
        B, T, C = x.shape
        if self.crop_views and crops is None:
            crops = self.draw_crops(B, T, x.device)
        out, _ = self.learned_view(x)
        v = out.view
        if self.crop_views:
            p, mask = crops
            both, layout = crop_pair_padded(torch.cat([x, v], dim=-1), p, bucket=True)
            views = torch.cat([both[:B, :, :C], both[B:, :, C:]])
            return layout.encode_overlap(self.encoder, views, mask)
        mask = self.timestamp_mask.sample(2 * B, T, device=x.device)
        z = self.encoder(torch.cat([x, v]), mask)
        return z[:B], z[B:]

    def training_step(self, batch, batch_idx):
        step = int(self.global_step)
        x = self.data[self.batch_indices(self.draw_index())].to(self.device, non_blocking=True)
        x = self._window(x)
        crops = self.draw_crops(x.shape[0], x.shape[1], x.device)
        opt = self.optimizers()
        if step % self.aug_every == 0:
            parts = self.augmenter_step(x)
            self.aug_history.append({"step": step, **parts})
            self.log("aug_loss", parts["loss"], on_step=True, on_epoch=False, batch_size=x.shape[0])
            self.log(
                "keep", parts["keep_prob"], prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0]
            )
        n_events = len(self.collapse_events)
        z1, z2 = self.contrastive_views(x, crops)
        if not self.sequence_loss:
            z1, z2 = z1.amax(dim=1), z2.amax(dim=1)
        loss = self.loss_fn(z1, z2)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        if self.swa is not None:
            self.swa.update_parameters(self.encoder)
        self.step_end_times.append(time.perf_counter())
        self.losses.append(float(loss.detach()))
        self.log_loss(x.shape[0])
        self.log(
            "aug_collapse",
            float(len(self.collapse_events) > n_events),
            on_step=True,
            on_epoch=False,
            batch_size=x.shape[0],
        )
        return loss.detach()

    # ----------------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        checkpoint["tscl_aug_opt"] = self.aug_opt.state_dict()
        checkpoint["tscl_aug_healthy"] = dict(self._healthy)
        checkpoint["tscl_aug_collapse"] = [[e["step"], e["kind"]] for e in self.collapse_events]

    def on_load_checkpoint(self, checkpoint):
        super().on_load_checkpoint(checkpoint)
        if "tscl_aug_opt" in checkpoint:
            self.aug_opt.load_state_dict(checkpoint["tscl_aug_opt"])
        if "tscl_aug_healthy" in checkpoint:
            self._healthy = {k: v.clone() for k, v in checkpoint["tscl_aug_healthy"].items()}
        self.collapse_events = [
            {"step": int(s), "kind": str(k)} for s, k in checkpoint.get("tscl_aug_collapse", [])
        ]


def build_autotcl(
    model, encoder: nn.Module, loss: nn.Module, data: torch.Tensor, timestamp_mask
) -> AutoTCLPretraining:
    """The AutoTCL training module for a :class:`tscl.ContrastiveModel` (``augmenter="autotcl"``): the encoder is
    built first from the model's seed, so it starts from the same weights as with the fixed augmentation."""
    from tscl import losses as _losses
    from tscl.augment.fixed import OverlapCrop

    aug_kw, obj_kw, method_kw = split_autotcl_kwargs(model.augmenter_kwargs)
    method_kw = {k: v for k, v in method_kw.items() if k not in ("mask_p", "mask_mode")}  # in timestamp_mask
    try:
        augmenter = AutoTCLAugmenter(model.input_dims, **aug_kw)
        objective = AutoTCLObjective(**obj_kw)
    except TypeError as exc:
        raise ConfigError(f"bad augmenter_kwargs for augmenter='autotcl': {exc}") from exc
    return AutoTCLPretraining(
        encoder,
        loss,
        data,
        augmenter=augmenter,
        objective=objective,
        sequence_loss=model.loss in _losses.SEQUENCE_LOSSES,
        batch_size=model.batch_size,
        lr=model.lr,
        seed=model.seed,
        max_train_length=model.max_train_length,
        crop=OverlapCrop(temporal_unit=model.temporal_unit),
        timestamp_mask=timestamp_mask,
        swa=model.swa,
        single_pass=True,
        crop_views=bool(method_kw.pop("crop", True)),
        **method_kw,
    )
