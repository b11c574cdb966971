"""TS2Vec's hierarchical contrastive loss (Yue et al. AAAI 2022, Sec. 3.3, Alg. 1)."""

from __future__ import annotations

import torch
from torch import nn

from tscl.errors import ConfigError
from tscl.losses.functional import bf16_score_products, check_first_order
from tscl.losses.infonce import NTXentLoss, check_pair

__all__ = ["HierarchicalContrastiveLoss"]


class HierarchicalContrastiveLoss(nn.Module):
    r"""Instance-wise + temporal contrast on the overlap of two views, repeated at every scale.

    Inputs ``z1, z2`` are ``(B, T, D)``: row ``(i, t)`` of both is the same time step of the same series seen through
    two augmented contexts. At scale :math:`k` (``z`` max-pooled along time by :math:`2^k`):

    * instance-wise term: for every time step, contrast series :math:`i` against the other :math:`2B-2` series
      representations at that step,
      :math:`\ell^{inst}_{i,t} = -\log \frac{\exp(z_{i,t}\cdot z'_{i,t})}{\sum_j \exp(z_{i,t}\cdot z'_{j,t}) +
      \sum_{j\ne i}\exp(z_{i,t}\cdot z_{j,t})}`;
    * temporal term: for every series, contrast step :math:`t` against the other :math:`2T-2` steps of the same series,
      :math:`\ell^{temp}_{i,t} = -\log \frac{\exp(z_{i,t}\cdot z'_{i,t})}{\sum_s \exp(z_{i,t}\cdot z'_{i,s}) +
      \sum_{s\ne t}\exp(z_{i,t}\cdot z_{i,s})}` (only at scales :math:`k \ge` ``temporal_unit``).

    :math:`\mathcal{L} = \frac{1}{K}\sum_k \big[\alpha\,\mathcal{L}^{inst}_k + (1-\alpha)\,\mathcal{L}^{temp}_k\big]`,
    pooling until one step is left (the last level has only the instance term), :math:`K` = number of levels.
    Both terms use raw dot products with no temperature, as in the paper; both are symmetric over the two views.

    ``instance_loss`` / ``temporal_loss`` can replace the two terms by any pairwise loss that follows the
    ``loss(z1, z2)`` convention with leading group dimensions (default: :class:`NTXentLoss` with
    ``temperature=1, normalize=False``, i.e. exactly TS2Vec's terms): either an ``nn.Module`` or a name from
    :data:`tscl.losses.PAIRWISE_LOSSES` (e.g. ``instance_loss="dcl"``), built with ``instance_loss_kwargs`` /
    ``temporal_loss_kwargs`` on top of TS2Vec's setting ``temperature=1.0, normalize=False``. So by default a
    named term works on the same raw dot products as TS2Vec and only the set of negatives changes: "ntxent"
    (TS2Vec: the positive is in the denominator), "dcl" (the positive removed from the denominator; unbounded
    below on raw dot products, see :class:`~tscl.losses.DCLLoss`), "mochi"
    (NT-Xent plus synthetic hard negatives, mixed at the interpolated norm of their sources). Names keep the loss
    JSON-serialisable in recipes (``loss_kwargs: {instance_loss: dcl}``).
    """

    def __init__(
        self,
        alpha: float = 0.5,
        temporal_unit: int = 0,
        instance_loss: nn.Module | str | None = None,
        temporal_loss: nn.Module | str | None = None,
        instance_loss_kwargs: dict | None = None,
        temporal_loss_kwargs: dict | None = None,
    ):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        if temporal_unit < 0:
            raise ConfigError(f"temporal_unit must be >= 0, got {temporal_unit}")
        self.alpha, self.temporal_unit = float(alpha), int(temporal_unit)
        self.instance_loss = _term(instance_loss, instance_loss_kwargs, "instance_loss")
        self.temporal_loss = _term(temporal_loss, temporal_loss_kwargs, "temporal_loss")
        # Both terms plain NT-Xent with a fixed temperature (TS2Vec's loss): every level runs in one autograd node.
        scales = (_fixed_ntxent_scale(self.instance_loss), _fixed_ntxent_scale(self.temporal_loss))
        self._fused = None if None in scales else scales

    def _instance(self, z1, z2):
        if z1.shape[0] < 2:
            return z1.sum() * 0.0
        return self.instance_loss(
            z1.transpose(0, 1), z2.transpose(0, 1)
        )  # (T, B, D): contrast within each step

    def _temporal(self, z1, z2):
        if z1.shape[1] < 2:
            return z1.sum() * 0.0
        return self.temporal_loss(z1, z2)  # (B, T, D): contrast within each series

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_pair(z1, z2, what="HierarchicalContrastiveLoss")
        if z1.dim() != 3:
            raise ConfigError(f"HierarchicalContrastiveLoss expects (B, T, D) inputs, got {tuple(z1.shape)}")
        # The loss runs in (at least) float32 even under autocast: its log-sum-exps over raw dot products need the
        # precision, and on CPU float32 batched matmuls at these sizes are faster than bfloat16 ones (measured).
        # Inputs from a bfloat16 encoder are exact in bfloat16: the tiled score products (long crops) may then run
        # with bfloat16 arithmetic and float32 accumulation on the CPU (bf16_score_products).
        bf16_in = z1.dtype == torch.bfloat16 and z2.dtype == torch.bfloat16
        dtype = torch.promote_types(z1.dtype, torch.float32)
        with torch.autocast(z1.device.type, enabled=False):
            z1, z2 = z1.to(dtype), z2.to(dtype)
            if self._fused is not None and 2 * max(z1.shape[0], z1.shape[1]) < 1024:
                return _FusedTS2VecLoss.apply(z1, z2, self.alpha, self.temporal_unit, *self._fused)
            with bf16_score_products(bf16_in):
                return self._levels(z1, z2)

    def _levels(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        a = self.alpha
        loss = z1.new_zeros(())
        depth = 0
        while z1.shape[1] > 1:
            if a != 0:
                loss = loss + a * self._instance(z1, z2)
            if depth >= self.temporal_unit and a != 1:
                loss = loss + (1 - a) * self._temporal(z1, z2)
            depth += 1
            z1, z2 = _halve(z1), _halve(z2)
        if z1.shape[1] == 1:
            if a != 0:
                loss = loss + a * self._instance(z1, z2)
            depth += 1
        return loss / depth


def _fixed_ntxent_scale(term: nn.Module) -> float | None:
    """``1 / temperature`` if ``term`` is a plain NT-Xent on raw dot products with a fixed temperature, else None."""
    if type(term) is not NTXentLoss or term.normalize or term.chunk_size is not None:
        return None
    if isinstance(term.log_temperature, nn.Parameter):
        return None
    return float((-term.log_temperature).exp())


def _ntxent_groups(z: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent within each group of ``z`` ``(G, 2N, D)`` (row ``i``'s positive is row ``(i + N) mod 2N``):
    returns the mean loss, ``-mean_i log softmax_{j != i}(c z_i . z_j)[partner(i)]``, and that softmax ``P``
    (``(G, 2N, 2N)``, 0 on the diagonal), which is all the backward pass needs."""
    G, M, _ = z.shape
    s = z @ z.transpose(1, 2)
    if c != 1.0:
        s.mul_(c)
    s.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    ls = torch.log_softmax(s, dim=-1)
    n = M // 2
    loss = -(ls.diagonal(n, 1, 2).sum() + ls.diagonal(-n, 1, 2).sum()) / (G * M)
    return loss, ls.exp_()


def _ntxent_groups_grad(z: torch.Tensor, p: torch.Tensor, c: float, w: float) -> torch.Tensor:
    """Gradient of ``w * loss`` from :func:`_ntxent_groups` with respect to ``z``. The scores are symmetric, so
    ``dz = w c / (G 2N) (P + P^T) z - w c / (G N) z_partner``: one batched product."""
    G, M, _ = z.shape
    n = M // 2
    g = ((p + p.transpose(1, 2)) @ z).mul_(w * c / (G * M))
    g[:, :n].sub_(z[:, n:], alpha=w * c / (G * n))
    g[:, n:].sub_(z[:, :n], alpha=w * c / (G * n))
    return g


class _FusedTS2VecLoss(torch.autograd.Function):
    """TS2Vec's hierarchical loss with NT-Xent terms at fixed temperatures, as one autograd node.

    Same value as :meth:`HierarchicalContrastiveLoss._levels` (and the same gradient, up to how ties of the max
    pooling are split). Written out because at TS2Vec's sizes the loss is hundreds of tiny ops whose autograd
    bookkeeping cost more than their arithmetic: per level, one score product per term forward and one backward.
    The views are kept as one ``(B, 2, T, D)`` tensor, whose ``(B, 2T, D)`` view is the temporal term's groups as
    it stands. Dense scores: used for groups of fewer than 1,024 rows.
    """

    @staticmethod
    def forward(ctx, z1, z2, alpha, temporal_unit, c_inst, c_temp):
        B, D = z1.shape[0], z1.shape[2]
        z = torch.stack([z1, z2], dim=1)  # (B, 2, T, D)
        levels, total, depth = [], z1.new_zeros(()), 0
        while True:
            T = z.shape[2]
            inst = temp = None
            if alpha != 0 and B > 1:  # within each step: (T, 2B, D), view-major rows (partner = row + B)
                zi = z.permute(2, 1, 0, 3).reshape(T, 2 * B, D)
                loss, p = _ntxent_groups(zi, c_inst)
                total += alpha * loss
                inst = (zi, p)
            if T > 1 and depth >= temporal_unit and alpha != 1:  # within each series: (B, 2T, D)
                zt = z.view(B, 2 * T, D)
                loss, p = _ntxent_groups(zt, c_temp)
                total += (1 - alpha) * loss
                temp = (zt, p)
            depth += 1
            if T == 1:
                levels.append((T, inst, temp, None))
                break
            a, b = z[:, :, 0 : T - 1 : 2], z[:, :, 1:T:2]  # max pooling by 2, an odd last step dropped
            levels.append((T, inst, temp, (a >= b).to(z.dtype)))
            z = torch.maximum(a, b)
        ctx.levels, ctx.shape, ctx.depth = levels, (B, D), depth
        ctx.cfg = (alpha, c_inst, c_temp)
        return total / depth

    @staticmethod
    def backward(ctx, grad):
        check_first_order("_FusedTS2VecLoss")
        alpha, c_inst, c_temp = ctx.cfg
        (B, D), w = ctx.shape, 1.0 / ctx.depth
        g = None  # gradient of the level above (the pooled one)
        for T, inst, temp, first in reversed(ctx.levels):
            if g is None:
                out = grad.new_zeros((B, 2, T, D))
            else:  # route each pooled gradient to the step that won the max
                won = g * first
                out = torch.stack([won, g - won], dim=3).view(B, 2, -1, D)
                if out.shape[2] < T:
                    out = torch.cat([out, out.new_zeros((B, 2, 1, D))], dim=2)
            if temp is not None:
                out += _ntxent_groups_grad(*temp, c_temp, (1 - alpha) * w).view(B, 2, T, D)
            if inst is not None:
                out += _ntxent_groups_grad(*inst, c_inst, alpha * w).view(T, 2, B, D).permute(2, 1, 0, 3)
            g = out
        g = g * grad
        return g[:, 0], g[:, 1], None, None, None, None


def _halve(z: torch.Tensor) -> torch.Tensor:
    """Max-pool ``(B, T, D)`` along time with kernel and stride 2 (an odd last step is dropped, as max_pool1d)."""
    B, T, D = z.shape
    return z[:, : T - T % 2].reshape(B, T // 2, 2, D).amax(dim=2)


def _term(loss: nn.Module | str | None, kwargs: dict | None, what: str) -> nn.Module:
    """One term of the hierarchical loss: a module, or a pairwise loss by name at TS2Vec's raw-dot-product setting."""
    from tscl.losses import PAIRWISE_LOSSES, get

    if isinstance(loss, nn.Module):
        if kwargs:
            raise ConfigError(f"{what}_kwargs only apply when {what} is given by name")
        return loss
    if loss is None and not kwargs:
        return NTXentLoss(1.0, normalize=False)
    name = "ntxent" if loss is None else str(loss).lower()
    if name not in PAIRWISE_LOSSES:
        raise ConfigError(
            f"{what} must be a pairwise loss (loss(z1, z2)); got {loss!r}, choose one of {sorted(PAIRWISE_LOSSES)}"
        )
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ConfigError(f"{what}_kwargs must be a mapping, got {type(kwargs).__name__}")
    return get(name, **{"temperature": 1.0, "normalize": False, **(kwargs or {})})
