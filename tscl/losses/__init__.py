"""Contrastive losses, found by name with :func:`get`.

Call conventions: pairwise losses ``loss(z1, z2)`` (row ``i`` of each is a positive pair; leading dims are groups);
sequence losses ``loss(z1, z2)`` on ``(B, T, D)`` (hierarchical).
"""

from __future__ import annotations

from torch import nn

from tscl.errors import ConfigError
from tscl.losses.hierarchical import HierarchicalContrastiveLoss
from tscl.losses.infonce import InfoNCELoss, NTXentLoss

__all__ = ["HierarchicalContrastiveLoss", "NTXentLoss", "InfoNCELoss", "get", "LOSSES"]

LOSSES: dict[str, type[nn.Module]] = {
    "hierarchical": HierarchicalContrastiveLoss,
    "ntxent": NTXentLoss,
    "nt_xent": NTXentLoss,
    "infonce": InfoNCELoss,
}

#: losses that take (B, T, D) sequences; the others are applied to max-pooled (B, D) instance representations
SEQUENCE_LOSSES = {"hierarchical"}


def get(name: str, **kwargs) -> nn.Module:
    """Build the loss called ``name`` with its keyword options, e.g. ``get("ntxent", temperature=0.2)``."""
    key = str(name).lower()
    if key not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose one of {sorted(set(LOSSES))}")
    try:
        return LOSSES[key](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad option for loss {name!r}: {exc}") from exc
