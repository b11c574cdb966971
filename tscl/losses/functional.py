"""Numerical building blocks shared by the losses."""

from __future__ import annotations

import torch

__all__ = ["accumulate_dtype", "exclusive_logsumexp"]


def accumulate_dtype(x: torch.Tensor) -> torch.Tensor:
    """Upcast half / bfloat16 scores to float32 for the log-sum-exp (float32 and float64 stay as they are)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _ExclusiveLSE(torch.autograd.Function):
    """Tiled ``lse_i = log sum_{j != i} exp(scale * <z_i, z_j>)``; never holds the (M, M) matrix in memory.

    Backward recomputes one tile of scores at a time (as memory-efficient attention does). Because the score matrix
    is symmetric, the gradient of tile ``r`` is ``scale * (P[r, :] + P[:, r]^T) @ z`` with
    ``P[i, j] = g_i * softmax_j(s_i)``: two matrix products per tile and no (M, M) buffer.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, scale: torch.Tensor, chunk: int):
        G, M, _ = z.shape
        acc = _acc(z.dtype)
        zt = z.transpose(1, 2)
        lse = torch.empty(G, M, dtype=acc, device=z.device)
        s_acc = scale.to(acc)
        for r0 in range(0, M, chunk):
            r1 = min(M, r0 + chunk)
            s = (z[:, r0:r1] @ zt).to(acc) * s_acc
            idx = torch.arange(r1 - r0, device=z.device)
            s[:, idx, idx + r0] = float("-inf")
            lse[:, r0:r1] = torch.logsumexp(s, dim=-1)
        ctx.save_for_backward(z, scale, lse)
        ctx.chunk = chunk
        return lse

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        z, scale, lse = ctx.saved_tensors
        G, M, _ = z.shape
        acc = lse.dtype
        zt = z.transpose(1, 2)
        s_acc = scale.to(acc)
        g = g.to(acc)
        gz = torch.empty(z.shape, dtype=acc, device=z.device)
        g_scale = torch.zeros((), dtype=acc, device=z.device) if ctx.needs_input_grad[1] else None
        for r0 in range(0, M, ctx.chunk):
            r1 = min(M, r0 + ctx.chunk)
            dots = (z[:, r0:r1] @ zt).to(acc)  # (G, c, M)
            s = dots * s_acc
            idx = torch.arange(r1 - r0, device=z.device)
            s[:, idx, idx + r0] = float("-inf")
            rows = torch.exp(s - lse[:, r0:r1, None]) * g[:, r0:r1, None]  # P[r, :]
            cols = torch.exp(s - lse[:, None, :]) * g[:, None, :]  # P[:, r]^T
            if g_scale is not None:
                dots[:, idx, idx + r0] = 0.0
                g_scale += (rows * dots).sum()
            gz[:, r0:r1] = ((rows + cols).to(z.dtype) @ z).to(acc) * s_acc
        return gz.to(z.dtype), (None if g_scale is None else g_scale.to(scale.dtype)), None


def exclusive_logsumexp(z: torch.Tensor, scale: torch.Tensor | float = 1.0, chunk: int | None = None) -> torch.Tensor:
    """``lse[..., i] = log sum_{j != i} exp(scale * <z_i, z_j>)`` for ``z`` of shape ``(..., M, D)``.

    Dense for small ``M``; tiled over row blocks of ``chunk`` rows (memory ``O(chunk * M)`` instead of ``O(M^2)``,
    same result) when ``chunk`` is given or ``M >= 1024``. Scores are accumulated in float32 for half/bf16 inputs.
    """
    lead, (M, D) = z.shape[:-2], z.shape[-2:]
    scale = torch.as_tensor(scale, device=z.device)
    if chunk is None and M < 1024:
        s = accumulate_dtype(z @ z.transpose(-1, -2)) * scale.to(_acc(z.dtype))
        eye = torch.eye(M, dtype=torch.bool, device=z.device)
        return torch.logsumexp(s.masked_fill(eye, float("-inf")), dim=-1)
    if chunk is None:
        chunk = max(16, (1 << 19) // M)
    lse = _ExclusiveLSE.apply(z.reshape(-1, M, D), scale, int(chunk))
    return lse.reshape(*lead, M)
