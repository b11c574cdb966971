"""CoST-style season-trend encoder, trend branch (Woo et al., ICLR 2022), as used by AutoTCL's public code.

Architecture: TS2Vec's dilated convolutional trunk (:class:`~tscl.encoders.tcn.TCNEncoder`: input projection, ``depth``
residual blocks, a final block to ``output_dims``; no representation dropout here) followed by CoST's trend feature
disentangler: a mixture of causal auto-regressive experts, ``len(kernels)`` causal convolutions ``output_dims ->
output_dims`` with kernel sizes 1, 2, 4, ..., 128, whose outputs are averaged:

.. math:: r_t = \\frac{1}{|K|} \\sum_{k \\in K} \\sum_{j=0}^{k-1} W^{(k)}_j \\, h_{t-k+1+j} + b^{(k)}

(each expert sees only the past, so the representation of step ``t`` is causal beyond the trunk's own context).
AutoTCL's code returns the trend representation only (its seasonal Fourier branch is disabled); so does this module.

Because the average of causal convolutions is itself one causal convolution (kernel ``max(kernels)``, weights the
kernel-aligned mean of the experts' weights), the forward pass runs a single convolution: the same result as the
eight separate ones. Done directly that costs ``max(kernels) * output_dims**2`` multiply-adds per step (13 M at the
defaults, about 30x the TCN trunk), so for long kernels (``>= 16`` taps) it runs as an overlap-save FFT convolution
(:func:`causal_conv_fft`): blocks of ``L = 2K`` steps, the channel mixing as one complex matmul per frequency, about
``(L/2+1) / (L-K+1) * 4 * output_dims**2`` real multiply-adds per step (0.8 M at the defaults). Same result to
rounding (float64 tests), measured 5-7x faster than the direct convolution on CPU (forward + backward, 3,000 steps).

Shapes: ``(B, T, C) -> (B, T, output_dims)``; same ``mask`` / ``valid`` contract as the TCN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tscl.encoders.tcn import TCNEncoder

__all__ = ["CoSTEncoder", "causal_conv_fft"]


class CoSTEncoder(nn.Module):
    """Args: input_dims, output_dims (320), hidden_dims (64), depth (10), kernels (1, 2, ..., 128), dropout on the
    trunk's output (0: AutoTCL's CoST encoder applies none before the trend experts)."""

    def __init__(
        self,
        input_dims: int,
        output_dims: int = 320,
        hidden_dims: int = 64,
        depth: int = 10,
        kernels: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128),
        dropout: float = 0.0,
    ):
        super().__init__()
        from tscl.errors import ConfigError

        kernels = tuple(int(k) for k in kernels)
        if not kernels or min(kernels) < 1:
            raise ConfigError(f"kernels must be a non-empty list of sizes >= 1, got {kernels!r}")
        self.input_dims, self.output_dims = int(input_dims), int(output_dims)
        self.kernels = kernels
        self.trunk = TCNEncoder(input_dims, output_dims, hidden_dims, depth, dropout=dropout)
        self.trend = nn.ModuleList([nn.Conv1d(output_dims, output_dims, k) for k in kernels])

    def merged_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single causal convolution equal to the mean of the experts: ``(weight, bias)``, kernel max(kernels),
        each expert's taps aligned to the most recent step."""
        K = max(self.kernels)
        w = sum(F.pad(conv.weight, (K - conv.kernel_size[0], 0)) for conv in self.trend) / len(self.trend)
        b = sum(conv.bias for conv in self.trend) / len(self.trend)
        return w, b

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.trunk(x, mask, valid).transpose(1, 2)  # (B, D, T)
        if valid is not None:  # padded steps act as zeros for the causal experts too
            h = h * valid.to(device=h.device, dtype=h.dtype).unsqueeze(1)
        w, b = self.merged_kernel()
        if w.shape[-1] >= 16:
            out = causal_conv_fft(h, w, b)
        else:
            out = F.conv1d(F.pad(h, (w.shape[-1] - 1, 0)), w.to(h.dtype), b.to(h.dtype))
        return out.transpose(1, 2)


def causal_conv_fft(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    r"""Causal convolution ``y[b, o, t] = sum_i sum_j weight[o, i, j] h[b, i, t-K+1+j] + bias[o]`` (zeros before
    ``t = 0``), i.e. ``conv1d(pad(h, (K-1, 0)), weight, bias)``, by overlap-save FFT blocks.

    The padded input is cut into blocks of ``L`` (``2K`` rounded up to a power of two) steps overlapping by ``K-1``;
    per block, the circular convolution with the flipped kernel (``rfft`` / ``irfft`` of length ``L``) is exact on
    its last ``L-K+1`` steps. The channel mixing is one batched complex matmul over the ``L/2+1`` frequencies,
    ``Y_f = X_f W_f^T``. Runs in float32 (float64 stays float64) with autocast off, since FFTs have no bfloat16
    kernels; the result is cast back to ``h``'s dtype. ``h``: ``(B, C, T)``; ``weight``: ``(O, C, K)``.
    """
    out_dtype = h.dtype
    dtype = torch.float64 if h.dtype == torch.float64 else torch.float32
    with torch.autocast(h.device.type, enabled=False):
        h, w = h.to(dtype), weight.to(dtype)
        B, C, T = h.shape
        n_out, _, K = w.shape
        L = 1 << (max(2 * K, 16) - 1).bit_length()
        step = L - K + 1
        n = -(-T // step)  # blocks
        blocks = F.pad(h, (K - 1, n * step - T)).unfold(-1, L, step)  # (B, C, n, L)
        Hf = torch.fft.rfft(blocks, n=L)  # (B, C, n, F)
        Wf = torch.fft.rfft(w.flip(-1), n=L)  # (O, C, F)
        nf = Hf.shape[-1]
        Y = torch.bmm(Hf.permute(3, 0, 2, 1).reshape(nf, B * n, C), Wf.permute(2, 1, 0))  # (F, B*n, n_out)
        Y = Y.reshape(nf, B, n, n_out).permute(1, 3, 2, 0)  # (B, n_out, n, F)
        y = torch.fft.irfft(Y, n=L)[..., K - 1 :].reshape(B, n_out, n * step)[..., :T]
        if bias is not None:
            y = y + bias.to(dtype).view(1, -1, 1)
    return y.to(out_dtype)
