"""Numerical building blocks shared by the losses."""

from __future__ import annotations

import torch

__all__ = ["accumulate_dtype", "exclusive_logsumexp"]


def accumulate_dtype(x: torch.Tensor) -> torch.Tensor:
    """Upcast half / bfloat16 scores to float32 for the log-sum-exp (float32 and float64 stay as they are)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _tiles(M, c):
    return [(a, min(M, a + c)) for a in range(0, M, c)]


class _ExclusiveLSE(torch.autograd.Function):
    """Tiled ``lse_i = log sum_{j != i} exp(scale * <z_i, z_j>)``; never holds the (M, M) score matrix.

    The score matrix is symmetric, so only tiles ``(a, c)`` with ``a <= c`` are computed: an off-diagonal tile
    serves the rows of both blocks (online log-sum-exp in the forward pass). The backward pass recomputes each tile
    (as memory-efficient attention does) and, with ``P[i, j] = g_i * softmax_j(s_i)``, adds
    ``scale * (P[a, c] + P[c, a]^T) @ z_c`` to block ``a`` and its transpose product to block ``c``: half the matrix
    products of a dense pass and no (M, M) buffer.
    """

    @staticmethod
    def forward(ctx, z, scale, chunk):
        G, M, _ = z.shape
        acc = _acc(z.dtype)
        sc = scale.to(acc)
        mx = torch.full((G, M), float("-inf"), dtype=acc, device=z.device)
        sm = torch.zeros((G, M), dtype=acc, device=z.device)
        tiles = _tiles(M, chunk)

        def update(a, b, block):  # block (G, b-a, k): scores of rows a:b against k columns
            bm = block.amax(-1)
            new = torch.maximum(mx[:, a:b], bm)
            safe = torch.where(torch.isinf(new), torch.zeros_like(new), new)
            sm[:, a:b] = sm[:, a:b] * torch.exp(mx[:, a:b] - safe) + torch.exp(block - safe[..., None]).sum(
                -1
            )
            mx[:, a:b] = new

        for ti, (a, b) in enumerate(tiles):
            for c, d in tiles[ti:]:
                s = (z[:, a:b] @ z[:, c:d].transpose(1, 2)).to(acc) * sc
                if a == c:
                    idx = torch.arange(b - a, device=z.device)
                    s[:, idx, idx] = float("-inf")
                    update(a, b, s)
                else:
                    update(a, b, s)
                    update(c, d, s.transpose(1, 2))
        lse = mx + torch.log(sm)
        ctx.save_for_backward(z, scale, lse)
        ctx.chunk = chunk
        return lse

    @staticmethod
    def backward(ctx, g):
        z, scale, lse = ctx.saved_tensors
        G, M, _ = z.shape
        acc = lse.dtype
        sc = scale.to(acc)
        g = g.to(acc)
        gz = torch.zeros(z.shape, dtype=acc, device=z.device)
        g_scale = torch.zeros((), dtype=acc, device=z.device) if ctx.needs_input_grad[1] else None
        tiles = _tiles(M, ctx.chunk)
        for ti, (a, b) in enumerate(tiles):
            for c, d in tiles[ti:]:
                dots = (z[:, a:b] @ z[:, c:d].transpose(1, 2)).to(acc)
                s = dots * sc
                if a == c:
                    idx = torch.arange(b - a, device=z.device)
                    s[:, idx, idx] = float("-inf")
                rows = torch.exp(s - lse[:, a:b, None]) * g[:, a:b, None]  # P[a:b, c:d]
                cols = torch.exp(s - lse[:, None, c:d]) * g[:, None, c:d]  # P[c:d, a:b]^T
                q = rows + cols
                qz = q.to(z.dtype)
                gz[:, a:b] += (qz @ z[:, c:d]).to(acc) * sc
                if a != c:
                    gz[:, c:d] += (qz.transpose(1, 2) @ z[:, a:b]).to(acc) * sc
                if g_scale is not None:
                    if a == c:
                        dots[:, idx, idx] = 0.0
                        g_scale += (rows * dots).sum()
                    else:
                        g_scale += (q * dots).sum()
        return gz.to(z.dtype), (None if g_scale is None else g_scale.to(scale.dtype)), None


def exclusive_logsumexp(
    z: torch.Tensor, scale: torch.Tensor | float = 1.0, chunk: int | None = None
) -> torch.Tensor:
    """``lse[..., i] = log sum_{j != i} exp(scale * <z_i, z_j>)`` for ``z`` of shape ``(..., M, D)``.

    Dense for small ``M``; tiled in ``chunk x chunk`` blocks (memory ``O(chunk^2)`` instead of ``O(M^2)``, half the
    matrix products thanks to symmetry, same result) when ``chunk`` is given or ``M >= 1024``. Under autocast the
    products of ``z`` run in the autocast dtype; the log-sum-exp and its gradient are computed in float32 for
    half/bfloat16.
    """
    lead, (M, D) = z.shape[:-2], z.shape[-2:]
    scale = torch.as_tensor(scale, device=z.device)
    if torch.is_autocast_enabled(z.device.type) and z.is_floating_point():
        # Under mixed precision the score products run in the autocast dtype (bf16 on AMX CPUs / tensor cores);
        # cast once so that the tiled forward and backward passes use the very same rounded inputs.
        z = z.to(torch.get_autocast_dtype(z.device.type))
    if chunk is None and M < 1024:
        s = accumulate_dtype(z @ z.transpose(-1, -2)) * scale.to(_acc(z.dtype))
        eye = torch.eye(M, dtype=torch.bool, device=z.device)
        return torch.logsumexp(s.masked_fill(eye, float("-inf")), dim=-1)
    if chunk is None:
        chunk = 512
    lse = _ExclusiveLSE.apply(z.reshape(-1, M, D), scale, int(chunk))
    return lse.reshape(*lead, M)
