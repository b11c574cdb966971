"""Transformer encoder for per-step time-series representations.

Input projection to ``hidden_dims``, sinusoidal positional encoding (Vaswani et al. 2017), a stack of pre-norm
``nn.TransformerEncoderLayer`` s, and a linear map to ``output_dims``. Missing steps (NaN) are excluded as attention
keys; timestamp-masked steps are zeroed after the input projection (the same masking contract as the TCN), so the
two backbones are interchangeable. Shapes: ``(B, T, C) -> (B, T, D)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tscl.encoders.tcn import apply_input_mask

__all__ = ["TransformerEncoder", "sinusoidal_positions"]


def sinusoidal_positions(T: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``PE[t, 2i] = sin(t / 10000^(2i/dim))``, ``PE[t, 2i+1] = cos(...)``; shape ``(T, dim)``."""
    pos = torch.arange(T, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(T, dim, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe.to(dtype)


class TransformerEncoder(nn.Module):
    """Args: input_dims, output_dims (320), hidden_dims (64, the model width), depth (layers, 3), n_heads (4),
    ff_mult (feed-forward width = ff_mult * hidden_dims), dropout (0.1)."""

    def __init__(
        self,
        input_dims: int,
        output_dims: int = 320,
        hidden_dims: int = 64,
        depth: int = 3,
        n_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.input_dims, self.output_dims = int(input_dims), int(output_dims)
        self.input_fc = nn.Linear(input_dims, hidden_dims)
        layer = nn.TransformerEncoderLayer(
            hidden_dims,
            n_heads,
            dim_feedforward=ff_mult * hidden_dims,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_dims)
        self.output_fc = nn.Linear(hidden_dims, output_dims)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``valid`` (``(B, T)``, False = padding) excludes padded steps as attention keys, like missing ones;
        padding must come after the real steps so that positions are unchanged."""
        observed = ~torch.isnan(x).any(dim=-1)
        x, keep = apply_input_mask(x, mask)
        h = self.input_fc(x).masked_fill(~keep.unsqueeze(-1), 0.0)
        h = h + sinusoidal_positions(h.shape[1], h.shape[2], device=h.device, dtype=h.dtype)
        # Keys that are missing (NaN in the input) are not attended to; a row with no observed step keeps all keys
        # so that softmax never sees an all -inf row.
        pad = ~observed if valid is None else ~(observed & valid.to(observed.device))
        pad = pad & ~pad.all(dim=1, keepdim=True)
        h = self.layers(h, src_key_padding_mask=pad)
        return self.output_fc(self.norm(h))
