"""Global + local InfoNCE: the encoder objective of AutoTCL's public forecasting code (Zheng et al., ICLR 2024),
whose local term is InfoTS's segment contrast (Luo et al., AAAI 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tscl.errors import ConfigError
from tscl.losses.functional import accumulate_dtype
from tscl.losses.infonce import check_pair

__all__ = ["GlobalLocalInfoNCELoss"]


class GlobalLocalInfoNCELoss(nn.Module):
    r"""``loss(z1, z2)`` on ``(B, T, D)`` sequences: :math:`\mathcal{L} = \mathcal{L}_{global} + \beta\,\mathcal{L}_{local}`.

    * Global (instance) term: :math:`g^{(v)}_i = \mathrm{normalize}(\max_t z^{(v)}_{i,t})`,
      :math:`s_{ij} = g^{(1)}_i \cdot g^{(2)}_j / \tau_g` and
      :math:`\mathcal{L}_{global} = \frac{1}{B}\sum_i -\log \frac{e^{s_{ii}}}{\sum_j e^{s_{ij}}}`
      (view 1 anchors, the other series' view-2 representations are the negatives; ``symmetric=True`` averages
      both directions).
    * Local (segment) term, on view 1 only: every step normalised, a window of :math:`K c` steps
      (:math:`K` = ``n_segments``, :math:`c = \lfloor T / K \rfloor`, one random offset per batch) cut into
      :math:`K` consecutive segments, each max-pooled to :math:`u_{i,k}`; with :math:`m_{kl} = u_{i,k}\cdot
      u_{i,l} / \tau_l`, segment :math:`k`'s positive is its right neighbour (the last segment's is its left one)
      and its negatives are the segments that are neither itself nor adjacent (the first and last segment also
      skip their second neighbour, so every segment has :math:`K - 3` negatives):
      :math:`\mathcal{L}_{local} = \frac{1}{BK}\sum_{i,k} -\log \frac{e^{m_{k,p(k)}}}{e^{m_{k,p(k)}} +
      \sum_{l \in N(k)} e^{m_{kl}}}`. AutoTCL's code applies it to the first series of the batch only; here it
      is averaged over all of them.

    Defaults are AutoTCL's ETTh1 configuration: :math:`\tau_g = \tau_l = 1`, :math:`\beta` = ``local_weight`` =
    0.3, :math:`K = 16`. Series shorter than 4 segments of one step have no local negatives: the local term is 0.
    """

    def __init__(
        self,
        local_weight: float = 0.3,
        n_segments: int = 16,
        temperature: float = 1.0,
        local_temperature: float = 1.0,
        symmetric: bool = False,
    ):
        super().__init__()
        if local_weight < 0:
            raise ConfigError(f"local_weight must be >= 0, got {local_weight}")
        if int(n_segments) < 4:
            raise ConfigError(
                f"n_segments must be >= 4 (a segment needs a non-adjacent negative), got {n_segments}"
            )
        if not (temperature > 0 and local_temperature > 0):
            raise ConfigError(f"temperatures must be > 0, got {temperature}, {local_temperature}")
        self.local_weight, self.n_segments = float(local_weight), int(n_segments)
        self.temperature, self.local_temperature = float(temperature), float(local_temperature)
        self.symmetric = bool(symmetric)

    def global_term(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        g1 = F.normalize(z1.amax(dim=1), dim=-1)
        g2 = F.normalize(z2.amax(dim=1), dim=-1)
        s = accumulate_dtype(g1 @ g2.T) / self.temperature
        target = torch.arange(s.shape[0], device=s.device)
        loss = F.cross_entropy(s, target)
        return 0.5 * (loss + F.cross_entropy(s.T, target)) if self.symmetric else loss

    def local_term(self, z: torch.Tensor) -> torch.Tensor:
        B, T, D = z.shape
        K = min(self.n_segments, T)
        if K < 4:
            return z.sum() * 0.0
        c = T // K
        off = int(torch.randint(T - K * c + 1, ()).item())
        u = F.normalize(z[:, off : off + K * c], dim=-1).reshape(B, K, c, D).amax(dim=2)
        m = accumulate_dtype(u @ u.transpose(1, 2)) / self.local_temperature  # (B, K, K)
        k = torch.arange(K, device=z.device)
        pos = torch.where(k < K - 1, k + 1, K - 2)
        dist = (k[None, :] - k[:, None]).abs()
        neg = dist > 1
        neg[0, 2] = neg[K - 1, K - 3] = False
        logits = m.masked_fill(~neg, float("-inf"))
        logits[:, k, pos] = m[:, k, pos]  # the positive joins its row's negatives in the denominator
        return (torch.logsumexp(logits, dim=-1) - m[:, k, pos]).mean()

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_pair(z1, z2, min_n=1, what="GlobalLocalInfoNCELoss")
        if z1.dim() != 3:
            raise ConfigError(f"GlobalLocalInfoNCELoss expects (B, T, D) inputs, got {tuple(z1.shape)}")
        loss = self.global_term(z1, z2) if z1.shape[0] > 1 else z1.sum() * 0.0
        if self.local_weight:
            loss = loss + self.local_weight * self.local_term(z1)
        return loss
