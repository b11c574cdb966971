"""Contrastive losses, found by name with :func:`get` (one module per family, the formula in each docstring).

Call conventions (every loss is an ``nn.Module``; inputs are ``(..., N, D)`` with row ``i`` the same sample and any
leading dimensions independent groups, unless said otherwise):

* pairwise ``loss(z1, z2)``: :data:`PAIRWISE_LOSSES` (ntxent, infonce, dcl, dclw, mochi, and the multi-view and
  cross-modal losses with two inputs). Usable as a :class:`~tscl.model.ContrastiveModel` loss (on max-pooled
  instance representations) and as the instance / temporal term of the hierarchical loss;
* sequence ``loss(z1, z2)`` on ``(B, T, D)``: :data:`SEQUENCE_LOSSES` (hierarchical, global_local);
* supervised ``loss(z, labels, anchor_mask=None)`` with ``z``: ``(N, D)`` or ``(N, V, D)``: supcon;
* multi-view ``loss(z)`` with ``z``: ``(..., N, V, D)``, or ``loss(z1, ..., zV)``: mv_infonce, mv_dhel;
* cross-modal ``loss(za, zb)`` / ``loss(za, zb, zc, ...)``: scl (clip), cwcl (``reference=``), symile.

Temperatures are fixed or learnable (``learnable_temperature=True`` learns :math:`\\log\\tau`); scores are
accumulated in float32 for half/bfloat16 inputs with log-sum-exp; ``chunk_size`` tiles the score matrix so very
large batches fit in memory (ntxent, dcl, dclw, infonce, scl, cwcl, supcon, mv_infonce, mv_dhel).
"""

from __future__ import annotations

from torch import nn

from tscl.errors import ConfigError
from tscl.losses.crossmodal import CWCLLoss, SCLLoss, SymileLoss
from tscl.losses.dcl import DCLLoss, DCLWLoss
from tscl.losses.globallocal import GlobalLocalInfoNCELoss
from tscl.losses.hierarchical import HierarchicalContrastiveLoss
from tscl.losses.infonce import InfoNCELoss, NTXentLoss
from tscl.losses.mochi import MoCHiLoss
from tscl.losses.multiview import MVDHELLoss, MVInfoNCELoss
from tscl.losses.supcon import SupConLoss

__all__ = [
    "HierarchicalContrastiveLoss",
    "GlobalLocalInfoNCELoss",
    "NTXentLoss",
    "InfoNCELoss",
    "DCLLoss",
    "DCLWLoss",
    "SupConLoss",
    "MVInfoNCELoss",
    "MVDHELLoss",
    "MoCHiLoss",
    "SCLLoss",
    "CWCLLoss",
    "SymileLoss",
    "get",
    "LOSSES",
    "SEQUENCE_LOSSES",
    "PAIRWISE_LOSSES",
    "LABELED_LOSSES",
]

LOSSES: dict[str, type[nn.Module]] = {
    "hierarchical": HierarchicalContrastiveLoss,
    "global_local": GlobalLocalInfoNCELoss,
    "ntxent": NTXentLoss,
    "nt_xent": NTXentLoss,
    "infonce": InfoNCELoss,
    "dcl": DCLLoss,
    "dclw": DCLWLoss,
    "supcon": SupConLoss,
    "mv_infonce": MVInfoNCELoss,
    "mv_dhel": MVDHELLoss,
    "mochi": MoCHiLoss,
    "scl": SCLLoss,
    "clip": SCLLoss,
    "cwcl": CWCLLoss,
    "symile": SymileLoss,
}

#: losses that take (B, T, D) sequences; the others are applied to max-pooled (B, D) instance representations
SEQUENCE_LOSSES = {"hierarchical", "global_local"}

#: losses that follow ``loss(z1, z2)`` (two views, row i a positive pair): usable by ContrastiveModel and as the
#: instance / temporal term of the hierarchical loss
PAIRWISE_LOSSES = {
    "ntxent",
    "nt_xent",
    "infonce",
    "dcl",
    "dclw",
    "mochi",
    "mv_infonce",
    "mv_dhel",
    "scl",
    "clip",
    "cwcl",
    "symile",
}

#: losses that need labels: ``loss(z, labels, anchor_mask=None)``
LABELED_LOSSES = {"supcon"}


def get(name: str, **kwargs) -> nn.Module:
    """Build the loss called ``name`` with its keyword options, e.g. ``get("dcl", temperature=0.2)``."""
    key = str(name).lower()
    if key not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose one of {sorted(set(LOSSES))}")
    try:
        return LOSSES[key](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad option for loss {name!r}: {exc}") from exc
