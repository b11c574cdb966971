"""Numerical building blocks shared by the losses."""

from __future__ import annotations

import contextlib
import contextvars

import torch

__all__ = ["accumulate_dtype", "exclusive_logsumexp", "cross_logsumexp", "bf16_score_products"]

_BF16_PRODUCTS: contextvars.ContextVar[bool] = contextvars.ContextVar("tscl_bf16_products", default=False)


@contextlib.contextmanager
def bf16_score_products(enabled: bool = True):
    """Within this context the tiled log-sum-exp (:func:`exclusive_logsumexp` on long inputs, e.g. TS2Vec's
    temporal term on 3,000-step crops) runs its float32 tile products through oneDNN with bfloat16 arithmetic and
    float32 accumulation on the CPU (AMX / AVX-512 BF16): measured 2.4x faster per (2, 512, 320) tile. Its backward
    pass does the same, whenever it runs. Used by the hierarchical loss when its inputs come from a bfloat16
    encoder (``precision="bf16-mixed"``): their values are exact in bfloat16, so the score products are exact up to
    float32 accumulation order; the gradient products round the softmax weights to bfloat16, as autocast does for
    every matmul. Outside this context, and on other devices, the products are IEEE float32."""
    token = _BF16_PRODUCTS.set(bool(enabled))
    try:
        yield
    finally:
        _BF16_PRODUCTS.reset(token)


@contextlib.contextmanager
def _matmul_precision(bf16: bool):
    """Set oneDNN's float32 matmul precision to bfloat16 for the block (restored afterwards); no-op if not ``bf16``."""
    if not bf16:
        yield
        return
    prev = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = prev


def _bf16_products_for(z: torch.Tensor) -> bool:
    return (
        _BF16_PRODUCTS.get()
        and z.device.type == "cpu"
        and z.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
    )


def accumulate_dtype(x: torch.Tensor) -> torch.Tensor:
    """Upcast half / bfloat16 scores to float32 for the log-sum-exp (float32 and float64 stay as they are)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _tiles(M, c):
    return [(a, min(M, a + c)) for a in range(0, M, c)]


def _mask_tile(s, a, b, c, d, M, pair):
    """Set the excluded entries of the score tile ``s = scores[a:b, c:d]`` to -inf, in place (``s`` must be a
    tensor of its own): the diagonal ``j == i`` and, with ``pair``, the partner ``j == (i + M/2) mod M`` (the other
    view of the same sample in ``[z1; z2]``). Each is one diagonal of the tile (local ``col - row`` is ``a - c``,
    ``a - c + M/2`` or ``a - c - M/2``), filled directly; tiles they miss are left alone."""
    offsets = (a - c, a - c + M // 2, a - c - M // 2) if pair else (a - c,)
    for k in offsets:
        if -(b - a) < k < d - c:
            s.diagonal(k, -2, -1).fill_(float("-inf"))
    return s


def _is_one(scale: torch.Tensor) -> bool:
    """``scale`` is exactly 1 and needs no gradient, so its multiplications can be skipped (checked on the CPU
    only: on an accelerator it would cost a device sync)."""
    return (
        scale.device.type == "cpu" and scale.numel() == 1 and not scale.requires_grad and float(scale) == 1.0
    )


def check_first_order(name: str) -> None:
    """Called first in a hand-written ``backward``: such backwards reuse forward-time intermediates that carry no
    graph, so a ``create_graph=True`` pass (a gradient penalty, say) would get a silently wrong second derivative.
    Raise instead. (Autograd runs ``backward`` with grad mode on only under ``create_graph=True``.)"""
    if torch.is_grad_enabled():
        raise RuntimeError(f"{name} has no second derivative (create_graph=True is not supported)")


class _ExclusiveLSE(torch.autograd.Function):
    """Tiled ``lse_i = log sum_{j != i} exp(scale * <z_i, z_j>)``; never holds the (M, M) score matrix.

    The score matrix is symmetric, so only tiles ``(a, c)`` with ``a <= c`` are computed: an off-diagonal tile
    serves the rows of both blocks (online log-sum-exp in the forward pass). The backward pass recomputes each tile
    (as memory-efficient attention does) and, with ``P[i, j] = g_i * softmax_j(s_i)``, adds
    ``scale * (P[a, c] + P[c, a]^T) @ z_c`` to block ``a`` and its transpose product to block ``c``: half the matrix
    products of a dense pass and no (M, M) buffer.
    """

    @staticmethod
    def forward(ctx, z, scale, chunk, pair):
        G, M, _ = z.shape
        acc = _acc(z.dtype)
        sc = scale.to(acc)
        bf16 = _bf16_products_for(z)
        zt, Mt = _pad_for_tiles(z, chunk, bf16)
        mx = torch.full((G, Mt), float("-inf"), dtype=acc, device=z.device)
        sm = torch.zeros((G, Mt), dtype=acc, device=z.device)
        tiles = _tiles(Mt, chunk)

        def update(a, b, block):  # block (G, b-a, k): scores of rows a:b against k columns
            bm = block.amax(-1)
            new = torch.maximum(mx[:, a:b], bm)
            safe = torch.where(torch.isinf(new), torch.zeros_like(new), new)
            sm[:, a:b] = sm[:, a:b] * torch.exp(mx[:, a:b] - safe) + torch.exp(block - safe[..., None]).sum(
                -1
            )
            mx[:, a:b] = new

        unit = _is_one(scale)
        for ti, (a, b) in enumerate(tiles):
            for c, d in tiles[ti:]:
                with _matmul_precision(bf16):
                    s = (zt[:, a:b] @ zt[:, c:d].transpose(1, 2)).to(acc)
                if not unit:
                    s = s * sc
                s = _mask_padding(_mask_tile(s, a, b, c, d, M, pair), a, b, c, d, M)
                if a == c:
                    update(a, b, s)
                else:
                    update(a, b, s)
                    update(c, d, s.transpose(1, 2))
        lse = (mx + torch.log(sm))[:, :M]
        ctx.save_for_backward(z, scale, lse)
        ctx.chunk, ctx.pair, ctx.bf16 = chunk, pair, bf16
        return lse

    @staticmethod
    def backward(ctx, g):
        check_first_order("_ExclusiveLSE")
        z, scale, lse = ctx.saved_tensors
        G, M, _ = z.shape
        acc = lse.dtype
        sc = scale.to(acc)
        g = g.to(acc)
        zt, Mt = _pad_for_tiles(z, ctx.chunk, ctx.bf16)
        gz = torch.zeros(zt.shape, dtype=acc, device=z.device)
        g_scale = torch.zeros((), dtype=acc, device=z.device) if ctx.needs_input_grad[1] else None
        tiles = _tiles(Mt, ctx.chunk)
        # Fast path (TS2Vec's setting: scale 1, float32, positive upstream gradients, as the NT-Xent terms give):
        # g_i * exp(s - lse_i) = exp(s - (lse_i - log g_i)), the scale multiplications are skipped and the
        # products accumulate in place (baddbmm_): fewer passes over each tile, the same values.
        fast = g_scale is None and _is_one(scale) and z.dtype == acc and bool((g > 0).all())
        # padded rows / columns (scores -inf) get shift / lse 0 and g 0: their weights are exactly 0
        shift = _pad_last(lse - torch.log(g), Mt) if fast else None
        lse_t, g_t = _pad_last(lse, Mt), _pad_last(g, Mt)
        for ti, (a, b) in enumerate(tiles):
            for c, d in tiles[ti:]:
                with _matmul_precision(ctx.bf16):
                    dots = (zt[:, a:b] @ zt[:, c:d].transpose(1, 2)).to(acc)
                if fast:
                    s = _mask_padding(_mask_tile(dots, a, b, c, d, M, ctx.pair), a, b, c, d, M)
                    q = torch.sub(s, shift[:, a:b, None]).exp_()  # P[a:b, c:d]
                    q += torch.sub(s, shift[:, None, c:d]).exp_()  # + P[c:d, a:b]^T
                    with _matmul_precision(ctx.bf16):
                        gz[:, a:b].baddbmm_(q, zt[:, c:d])
                        if a != c:
                            gz[:, c:d].baddbmm_(q.transpose(1, 2), zt[:, a:b])
                    continue
                s = _mask_padding(_mask_tile(dots * sc, a, b, c, d, M, ctx.pair), a, b, c, d, M)
                rows = torch.exp(s - lse_t[:, a:b, None]) * g_t[:, a:b, None]  # P[a:b, c:d]
                cols = torch.exp(s - lse_t[:, None, c:d]) * g_t[:, None, c:d]  # P[c:d, a:b]^T
                q = rows + cols
                qz = q.to(z.dtype)
                with _matmul_precision(ctx.bf16):
                    gz[:, a:b] += (qz @ zt[:, c:d]).to(acc) * sc
                    if a != c:
                        gz[:, c:d] += (qz.transpose(1, 2) @ zt[:, a:b]).to(acc) * sc
                if g_scale is not None:
                    dots = dots.masked_fill(torch.isinf(s), 0.0)
                    g_scale += (rows * dots).sum() if a == c else (q * dots).sum()
        gz = gz[:, :M]
        return gz.to(z.dtype), (None if g_scale is None else g_scale.to(scale.dtype)), None, None


def _pad_for_tiles(z: torch.Tensor, chunk: int, pad: bool) -> tuple[torch.Tensor, int]:
    """With ``pad``, ``z`` (G, M, D) with zero rows appended up to a multiple of ``chunk``, so that every tile has
    the same shape: oneDNN builds a kernel per product shape (about 1 ms each), and a new sequence length would
    otherwise bring new edge-tile shapes every step. The padding's scores are masked (:func:`_mask_padding`)."""
    M = z.shape[1]
    if not pad or M % chunk == 0:
        return z, M
    Mt = -(-M // chunk) * chunk
    return torch.cat([z, z.new_zeros(z.shape[0], Mt - M, z.shape[2])], dim=1), Mt


def _pad_last(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` (G, M) padded with zeros to (G, n)."""
    return x if x.shape[-1] == n else torch.cat([x, x.new_zeros(x.shape[0], n - x.shape[-1])], dim=-1)


def _mask_padding(s: torch.Tensor, a: int, b: int, c: int, d: int, M: int) -> torch.Tensor:
    """Set the tile's scores of padded rows (``i >= M``) and columns (``j >= M``) to -inf, in place."""
    if d > M:
        s[:, :, max(M - c, 0) :] = float("-inf")
    if b > M:
        s[:, max(M - a, 0) :, :] = float("-inf")
    return s


class _DenseExclusiveLSE(torch.autograd.Function):
    """Dense ``lse_i = log sum_{j != i} exp(scale * <z_i, z_j>)`` with a symmetric backward pass.

    The scores ``S = scale * z z^T`` are symmetric, so with ``Q = g * softmax(S)`` row-wise the gradient is
    ``dz = scale * (Q + Q^T) z``: one batched product instead of the two autograd takes for ``z @ z^T`` (one per
    operand), and no chain of elementwise backward ops. Saves the ``(G, M, M)`` dot products (the dense path
    holds them anyway).
    """

    @staticmethod
    def forward(ctx, z, scale, pair):
        M = z.shape[-2]
        dots = (z @ z.transpose(1, 2)).to(_acc(z.dtype))
        s = _mask_tile(dots * scale.to(dots.dtype), 0, M, 0, M, M, pair)
        lse = torch.logsumexp(s, dim=-1)
        ctx.save_for_backward(z, scale, dots, lse)
        ctx.pair = pair
        return lse

    @staticmethod
    def backward(ctx, g):
        check_first_order("_DenseExclusiveLSE")
        z, scale, dots, lse = ctx.saved_tensors
        M = z.shape[-2]
        sc = scale.to(dots.dtype)
        s = _mask_tile(dots * sc, 0, M, 0, M, M, ctx.pair)
        q = torch.exp(s - lse[..., None]) * g.to(dots.dtype)[..., None]  # (G, M, M), 0 on excluded entries
        gz = ((q + q.transpose(1, 2)).to(z.dtype) @ z).to(dots.dtype) * sc
        g_scale = (q * dots).sum().to(scale.dtype) if ctx.needs_input_grad[1] else None
        return gz.to(z.dtype), g_scale, None


def exclusive_logsumexp(
    z: torch.Tensor,
    scale: torch.Tensor | float = 1.0,
    chunk: int | None = None,
    exclude_pair: bool = False,
) -> torch.Tensor:
    """``lse[..., i] = log sum_{j != i} exp(scale * <z_i, z_j>)`` for ``z`` of shape ``(..., M, D)``.

    With ``exclude_pair`` (``M`` even, ``z = [z1; z2]``) the partner ``j = (i + M/2) mod M`` is excluded as well:
    the log-sum-exp over the negatives only (DCL's decoupled denominator), computed exactly (no subtraction).

    Dense for small ``M``; tiled in ``chunk x chunk`` blocks (memory ``O(chunk^2)`` instead of ``O(M^2)``, half the
    matrix products thanks to symmetry, same result) when ``chunk`` is given or ``M >= 1024``; ``chunk=0`` forces
    the dense path. Under autocast the products of ``z`` run in the autocast dtype; the log-sum-exp and its gradient
    are computed in float32 for half/bfloat16.
    """
    lead, (M, D) = z.shape[:-2], z.shape[-2:]
    if exclude_pair and M % 2:
        raise ValueError(f"exclude_pair needs an even number of rows, got {M}")
    scale = torch.as_tensor(scale, device=z.device)
    if torch.is_autocast_enabled(z.device.type) and z.is_floating_point():
        # Under mixed precision the score products run in the autocast dtype (bf16 on AMX CPUs / tensor cores);
        # cast once so that the tiled forward and backward passes use the very same rounded inputs.
        z = z.to(torch.get_autocast_dtype(z.device.type))
    if chunk == 0 or (chunk is None and M < 1024):
        lse = _DenseExclusiveLSE.apply(z.reshape(-1, M, D), scale, bool(exclude_pair))
    else:
        lse = _ExclusiveLSE.apply(
            z.reshape(-1, M, D), scale, 512 if chunk is None else int(chunk), bool(exclude_pair)
        )
    return lse.reshape(*lead, M)


class _CrossLSE(torch.autograd.Function):
    """Tiled row and column log-sum-exp of ``S = scale * a @ b^T`` (``a``: (G, N, D), ``b``: (G, K, D)).

    ``row[i] = log sum_j exp(S_ij)``, ``col[j] = log sum_i exp(S_ij)``; one pass over ``chunk x chunk`` tiles with
    online log-sum-exp for both, the backward pass recomputes each tile. Memory ``O(chunk^2)``.
    """

    @staticmethod
    def forward(ctx, a, b, scale, chunk):
        G, N, _ = a.shape
        K = b.shape[1]
        acc = _acc(a.dtype)
        sc = scale.to(acc)
        rmx = torch.full((G, N), float("-inf"), dtype=acc, device=a.device)
        rsm = torch.zeros((G, N), dtype=acc, device=a.device)
        cmx = torch.full((G, K), float("-inf"), dtype=acc, device=a.device)
        csm = torch.zeros((G, K), dtype=acc, device=a.device)

        def update(mx, sm, i0, i1, block):
            new = torch.maximum(mx[:, i0:i1], block.amax(-1))
            sm[:, i0:i1] = sm[:, i0:i1] * torch.exp(mx[:, i0:i1] - new) + torch.exp(
                block - new[..., None]
            ).sum(-1)
            mx[:, i0:i1] = new

        for r0, r1 in _tiles(N, chunk):
            for c0, c1 in _tiles(K, chunk):
                s = (a[:, r0:r1] @ b[:, c0:c1].transpose(1, 2)).to(acc) * sc
                update(rmx, rsm, r0, r1, s)
                update(cmx, csm, c0, c1, s.transpose(1, 2))
        row, col = rmx + torch.log(rsm), cmx + torch.log(csm)
        ctx.save_for_backward(a, b, scale, row, col)
        ctx.chunk = chunk
        return row, col

    @staticmethod
    def backward(ctx, g_row, g_col):
        check_first_order("_CrossLSE")
        a, b, scale, row, col = ctx.saved_tensors
        acc = row.dtype
        sc = scale.to(acc)
        g_row = torch.zeros_like(row) if g_row is None else g_row.to(acc)
        g_col = torch.zeros_like(col) if g_col is None else g_col.to(acc)
        ga = torch.zeros(a.shape, dtype=acc, device=a.device)
        gb = torch.zeros(b.shape, dtype=acc, device=b.device)
        g_scale = torch.zeros((), dtype=acc, device=a.device) if ctx.needs_input_grad[2] else None
        for r0, r1 in _tiles(a.shape[1], ctx.chunk):
            for c0, c1 in _tiles(b.shape[1], ctx.chunk):
                dots = (a[:, r0:r1] @ b[:, c0:c1].transpose(1, 2)).to(acc)
                s = dots * sc
                q = torch.exp(s - row[:, r0:r1, None]) * g_row[:, r0:r1, None]
                q = q + torch.exp(s - col[:, None, c0:c1]) * g_col[:, None, c0:c1]
                qz = q.to(a.dtype)
                ga[:, r0:r1] += (qz @ b[:, c0:c1]).to(acc) * sc
                gb[:, c0:c1] += (qz.transpose(1, 2) @ a[:, r0:r1]).to(acc) * sc
                if g_scale is not None:
                    g_scale += (q * dots).sum()
        gs = None if g_scale is None else g_scale.to(scale.dtype)
        return ga.to(a.dtype), gb.to(b.dtype), gs, None


def cross_logsumexp(
    a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float = 1.0, chunk: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column log-sum-exp of ``S = scale * a @ b^T`` for ``a``: ``(..., N, D)``, ``b``: ``(..., K, D)``.

    Returns ``(row, col)`` with ``row[..., i] = log sum_j exp(S_ij)`` and ``col[..., j] = log sum_i exp(S_ij)``
    (the two denominators of a symmetric CLIP-style loss). Dense unless ``chunk`` is given (or ``N * K >= 2**20``
    with ``chunk=None``); ``chunk=0`` forces the dense path. The tiled path never holds the ``(N, K)`` matrix.
    """
    if a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"cross_logsumexp: incompatible shapes {tuple(a.shape)} and {tuple(b.shape)}")
    lead, (N, D), K = a.shape[:-2], a.shape[-2:], b.shape[-2]
    scale = torch.as_tensor(scale, device=a.device)
    if torch.is_autocast_enabled(a.device.type) and a.is_floating_point():
        dt = torch.get_autocast_dtype(a.device.type)
        a, b = a.to(dt), b.to(dt)
    if chunk == 0 or (chunk is None and N * K < 2**20):
        s = accumulate_dtype(a @ b.transpose(-1, -2)) * scale.to(_acc(a.dtype))
        return torch.logsumexp(s, dim=-1), torch.logsumexp(s, dim=-2)
    if chunk is None:
        chunk = 512
    row, col = _CrossLSE.apply(a.reshape(-1, N, D), b.reshape(-1, K, D), scale, int(chunk))
    return row.reshape(*lead, N), col.reshape(*lead, K)
