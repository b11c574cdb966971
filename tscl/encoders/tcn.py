"""Dilated convolutional encoder (TS2Vec, Yue et al. AAAI 2022, Sec. 3.1).

Architecture (the paper's defaults): a per-step linear input projection to ``hidden_dims`` channels, then
``depth`` residual blocks of two dilated convolutions (kernel 3, dilation ``2**i`` in block ``i``, GELU before each
conv, "same" padding) and one final block that maps to ``output_dims`` (with a 1x1 projection on its residual path),
then dropout 0.1 on the representations. Missing steps (NaN in any channel) and timestamp-masked steps are zeroed
right after the input projection, as in the paper.

Shapes: ``(B, T, C) -> (B, T, D)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TCNEncoder", "DilatedConvBlock", "apply_input_mask", "dropout"]


def apply_input_mask(x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace NaN steps by zeros and return ``(x_clean, observed)`` where ``observed`` is ``(B, T)`` bool.

    ``mask`` (optional, ``(B, T)`` bool, True = keep) is combined with the observed-steps mask.
    """
    observed = ~torch.isnan(x).any(dim=-1)
    x = torch.nan_to_num(x, nan=0.0)
    keep = observed if mask is None else observed & mask.to(device=x.device, dtype=torch.bool)
    return x, keep


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution of ``x`` ``(B, C_in, 1, T)`` (channels-last) with ``weight`` ``(C_out, C_in)``: a plain
    matmul over the contiguous ``(B, 1, T, C_in)`` view, no copy in or out."""
    return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)


class DilatedConvBlock(nn.Module):
    """``y = conv2(gelu(conv1(gelu(x)))) + proj(x)`` with dilated, length-preserving convolutions.

    Activations are ``(B, C, 1, T)`` tensors in channels-last memory (each time step's channels contiguous) and
    the convolutions run as ``conv2d`` with a ``1 x k`` kernel: the same arithmetic as ``conv1d`` on ``(B, C, T)``
    (the weights keep ``nn.Conv1d``'s shape), but oneDNN's channels-last kernels skip the layout reorders that
    dominate at TS2Vec's sizes (measured 1.5-1.7x faster forward + backward on CPU). ``(B, C, T)`` inputs are
    accepted too and give ``(B, C, T)`` outputs.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, final: bool = False
    ):
        super().__init__()
        rf = (kernel_size - 1) * dilation + 1
        self._trim = 1 if rf % 2 == 0 else 0
        pad = rf // 2
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, padding=pad, dilation=dilation)
        self.projector = (
            nn.Conv1d(in_channels, out_channels, 1) if (in_channels != out_channels or final) else None
        )

    def _same(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, 1, T) channels-last
        k, d = conv.kernel_size[0], conv.dilation[0]
        if not self._trim and d >= x.shape[-1]:
            # Every tap but the centre one falls entirely into the zero padding: the convolution is exactly a
            # 1x1 convolution with the centre tap (skips (k-1)/k of the work for short series, same result).
            return _pointwise(x, conv.weight[:, :, k // 2], conv.bias)
        out = F.conv2d(x, conv.weight.unsqueeze(2), conv.bias, padding=(0, conv.padding[0]), dilation=(1, d))
        return out[..., : out.shape[-1] - self._trim] if self._trim else out

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, C, 1, T)`` channels-last (or ``(B, C, T)``). ``valid`` (broadcastable to ``x``, 1 = real
        step, 0 = padding) zeroes padded steps before each convolution, so a series padded to a longer length gets
        exactly the outputs it would get alone (zero padding per layer)."""
        if x.dim() == 3:
            v = None if valid is None else valid.unsqueeze(-2)
            return self.forward(_channels_last(x), v).squeeze(2)
        if valid is not None:
            x = x * valid
        residual = (
            x
            if self.projector is None
            else _pointwise(x, self.projector.weight[:, :, 0], self.projector.bias)
        )
        h = self._same(self.conv1, F.gelu(x))
        if valid is not None:
            h = h * valid
        return self._same(self.conv2, F.gelu(h)) + residual


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T)`` -> ``(B, C, 1, T)`` in channels-last memory."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


class TCNEncoder(nn.Module):
    """TS2Vec's dilated convolutional encoder.

    Args:
        input_dims: channels of the input series.
        output_dims: representation size ``D`` (paper: 320).
        hidden_dims: width of the residual blocks (paper: 64).
        depth: number of hidden residual blocks (paper: 10); one more block maps to ``output_dims``.
        kernel_size: convolution kernel (paper: 3).
        dropout: dropout on the output representations (paper: 0.1).
    """

    def __init__(
        self,
        input_dims: int,
        output_dims: int = 320,
        hidden_dims: int = 64,
        depth: int = 10,
        kernel_size: int = 3,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.input_dims, self.output_dims = int(input_dims), int(output_dims)
        self.input_fc = nn.Linear(input_dims, hidden_dims)
        widths = [hidden_dims] * depth + [output_dims]
        self.blocks = nn.Sequential(
            *[
                DilatedConvBlock(
                    widths[i - 1] if i > 0 else hidden_dims,
                    widths[i],
                    kernel_size,
                    dilation=2**i,
                    final=(i == len(widths) - 1),
                )
                for i in range(len(widths))
            ]
        )
        self.repr_dropout = nn.Dropout(dropout)

    @property
    def receptive_field(self) -> int:
        """Number of input steps that can influence one output step."""
        rf = 1
        for blk in self.blocks:
            k, d = blk.conv1.kernel_size[0], blk.conv1.dilation[0]
            rf += 2 * (k - 1) * d
        return rf

    #: ``forward`` takes ``window=`` (see :meth:`tscl.augment.PaddedPair.encode_overlap`).
    accepts_window = True

    def pointwise_from(self, T: int) -> int:
        """Index of the first block from which every block acts per step on series of length ``T`` (its dilation
        reaches past both ends, so only the centre tap sees data); ``len(self.blocks)`` if there is none."""
        i = len(self.blocks)
        while i > 0 and not self.blocks[i - 1]._trim and self.blocks[i - 1].conv1.dilation[0] >= T:
            i -= 1
        return i

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        window: tuple[torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        """Encode ``x`` ``(B, T, C)`` (NaN = missing) into ``(B, T, D)``.

        ``mask`` ``(B, T)`` True = keep (timestamp masking on the latent). ``valid`` ``(B, T)`` True = real step,
        False = padding added to batch series of different lengths: padded steps act as the convolutions' zero
        padding at every layer (unlike missing steps, which are zeroed only at the input, as in TS2Vec).

        ``window = (start, length)`` (``start`` an int tensor ``(B,)``) returns only the steps
        ``start[b] .. start[b] + length - 1`` of each row, ``(B, length, D)``: the same values as slicing the full
        output, but the trailing blocks that act per step (dilation >= ``T``; on short series the last blocks,
        which hold most of the multiply-adds: the 320-wide final block alone is ~40% at TS2Vec's sizes) run on
        those steps only. TS2Vec's loss reads only the overlap of its two crops, so training uses this."""
        x, keep = apply_input_mask(x, mask)
        h = self.input_fc(x).masked_fill(~keep.unsqueeze(-1), 0.0)  # (B, T, H)
        h = h.unsqueeze(1).permute(0, 3, 1, 2)  # (B, H, 1, T) channels-last: a view, no copy
        v = None if valid is None else valid.to(device=h.device, dtype=h.dtype)[:, None, None, :]
        # From block `pointwise` on every block acts per step: padding can no longer reach a real step, so `valid`
        # is not needed there, and with a window only the window's steps are computed.
        pointwise = self.pointwise_from(h.shape[-1])
        if window is not None:
            index = _window_index(window, h.shape[0], h.shape[-1], h.device)
            n_keep = index.shape[1]
            if (
                self.training
                and pointwise < len(self.blocks)
                and h.device.type == "cpu"
                and h.dtype != torch.float32
            ):
                index = _bucket_window(index)
        for i, blk in enumerate(self.blocks):
            if i == pointwise and window is not None:
                h = _take_steps(h, index)
            h = blk(h, v if i < pointwise else None)
        if window is not None and pointwise == len(self.blocks):
            h = _take_steps(h, index)
        if window is not None and h.shape[-1] != n_keep:
            h = h[..., :n_keep]  # the bucket's padding steps
        h = dropout(h, self.repr_dropout.p, self.training)
        return h.permute(0, 2, 3, 1).squeeze(1)  # (B, T, D), contiguous


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout`` (zero with probability ``p``, scale the rest by ``1 / (1 - p)``). On the CPU the keep-mask
    comes from ``torch.rand`` instead of ``bernoulli_``: measured 2.3x faster for a (16, 100, 320) batch on 2
    cores (1.3 vs 3.0 ms), the largest single op of a TS2Vec step after the convolutions. Elsewhere (CUDA's
    fused kernel is faster still) it is ``F.dropout``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p == 1.0:
        return F.dropout(x, p, True)
    # float32 uniforms whatever x's dtype (exact p), laid out as x (channels-last activations stay channels-last:
    # a mask in another layout made the multiply and its backward strided, 4x slower)
    keep = torch.rand_like(x, dtype=torch.float32) >= p
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


def _window_index(window, B: int, T: int, device) -> torch.Tensor:
    """``(B, length)`` step indices of ``window = (start, length)``, checked to lie inside ``[0, T)``."""
    start, length = window
    start = torch.as_tensor(start, device=device)
    length = int(length)
    if start.shape != (B,) or start.is_floating_point() or length < 1:
        raise ValueError(
            f"window must be (int tensor of shape ({B},), length >= 1), got {tuple(start.shape)}, {length}"
        )
    if bool(((start < 0) | (start + length > T)).any()):  # one host sync per forward
        raise ValueError(f"window runs outside the {T} encoded steps")
    return start.long()[:, None] + torch.arange(length, device=device)


def _bucket_window(index: torch.Tensor) -> torch.Tensor:
    """Pad the window's step indices ``(B, L')`` to :func:`~tscl.augment.fixed.bucket_length` ``(L')`` columns by
    repeating the last step. Used for the per-step blocks when training under bf16 on the CPU: oneDNN builds (JIT-compiles) a
    bf16 matmul kernel for every new shape, about 1 ms each at TS2Vec's sizes against 0.23 ms for the product
    itself, and the overlap length changes every training step; with bucketed lengths the kernels are reused. The extra
    steps are computed per step and cut off before dropout, so the window's values are unchanged. (float32 uses
    MKL's GEMM, which builds nothing per shape, so it is left unpadded.)"""
    from tscl.augment.fixed import bucket_length

    extra = bucket_length(index.shape[1]) - index.shape[1]
    return torch.cat([index, index[:, -1:].expand(-1, extra)], dim=1) if extra else index


def _take_steps(h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather steps ``index`` ``(B, L')`` from ``h`` ``(B, C, 1, T)`` (channels-last) -> ``(B, C, 1, L')``, still
    channels-last: one row gather over the contiguous ``(B, T, C)`` view."""
    rows = torch.arange(h.shape[0], device=h.device)[:, None]
    return h.permute(0, 2, 3, 1)[:, 0][rows, index].unsqueeze(1).permute(0, 3, 1, 2)
