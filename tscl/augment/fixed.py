"""Fixed (non-learned) time-series augmentations as batched ``nn.Module``\\ s.

Conventions shared by every transform in this module:

* Inputs are tensors of shape ``(B, T, C)`` (batch, time, channels). Anything else raises
  :class:`~tscl.errors.DataError`; bad constructor arguments raise :class:`~tscl.errors.ConfigError`.
* Device-agnostic and dtype-preserving: the output lives on ``x.device`` with ``x.dtype``. Half and bfloat16
  inputs are computed in float32 internally where precision or kernel support requires it (interpolation,
  FFT) and cast back, so the transforms run unchanged under ``torch.autocast``.
* Fully vectorised: no Python loop over the batch or over time steps.
* Randomness: ``forward(x, generator=None)``. With a :class:`torch.Generator` every random number is drawn
  from it *on the generator's device* and then moved to ``x.device``, so one seed gives the same
  augmentation on CPU and CUDA. (For speed on CUDA, pass a CUDA generator.) Without a generator the
  global RNG of ``x.device`` is used.
* Missing values are NaN. Each docstring states how NaN is handled; the rule is that a missing input value
  never becomes a made-up number: it stays NaN (pointwise transforms), travels with its data (Permutation,
  crops), or makes the outputs that interpolate it NaN (TimeWarp).

Transforms that map ``x -> x'`` of the same shape: :class:`Jitter`, :class:`Scaling`,
:class:`MagnitudeWarp`, :class:`TimeWarp`, :class:`Permutation`, :class:`FrequencyMask`; they compose with
:class:`Compose` and :class:`RandomApply`. :class:`TimestampMask` (returns a keep-mask) and
:class:`OverlapCrop` (returns two views) implement TS2Vec's view generation and are not ``x -> x``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tscl.errors import ConfigError, DataError

__all__ = [
    "Jitter",
    "Scaling",
    "MagnitudeWarp",
    "TimeWarp",
    "Permutation",
    "FrequencyMask",
    "TimestampMask",
    "OverlapCrop",
    "CropParams",
    "PaddedPair",
    "Compose",
    "RandomApply",
    "take_per_row",
    "crop_pair_padded",
    "bucket_length",
    "get",
    "available",
]


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------


def _check_x(x: object, who: str, *, floating: bool = True) -> Tensor:
    if not isinstance(x, Tensor):
        raise DataError(f"{who} expects a torch.Tensor of shape (B, T, C), got {type(x).__name__}")
    if x.dim() != 3:
        raise DataError(
            f"{who} expects a 3-D tensor (batch, time, channels), got shape {tuple(x.shape)}; "
            "for a univariate batch add a channel axis with x.unsqueeze(-1)"
        )
    if x.shape[1] == 0:
        raise DataError(f"{who} got an empty time axis (shape {tuple(x.shape)})")
    if floating and not x.is_floating_point():
        raise DataError(f"{who} expects a floating-point tensor, got dtype {x.dtype}; convert with x.float()")
    return x


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_sigma(name: str, value: object) -> float:
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_prob(name: str, value: object) -> float:
    if not _is_real(value) or not (0.0 <= float(value) <= 1.0):
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or int(value) < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_interp(value: object) -> str:
    if value not in ("cubic", "linear"):
        raise ConfigError(f"interpolation must be 'cubic' or 'linear', got {value!r}")
    return str(value)


def _gen_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def _rand(shape, generator, device) -> Tensor:
    """U[0, 1) float32 on ``device``, drawn on the generator's device (see module docstring)."""
    return torch.rand(shape, generator=generator, device=_gen_device(generator, device)).to(device)


def _randn(shape, generator, device) -> Tensor:
    """N(0, 1) float32 on ``device``, drawn on the generator's device."""
    return torch.randn(shape, generator=generator, device=_gen_device(generator, device)).to(device)


def _randint(low: int, high: int, shape, generator, device) -> Tensor:
    """Integers uniform in [low, high) (int64) on ``device``, drawn on the generator's device."""
    return torch.randint(low, high, shape, generator=generator, device=_gen_device(generator, device)).to(
        device
    )


def _randint_scalar(low: int, high: int, generator) -> int:
    dev = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(low, high, (1,), generator=generator, device=dev).item())


def _compute_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _no_autocast(device: torch.device):
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # device type without autocast support
        return contextlib.nullcontext()


@functools.lru_cache(maxsize=64)
def _interp_basis(n_points: int, n_knots: int, kind: str) -> Tensor:
    """Interpolation matrix ``W`` of shape (n_points, n_knots), float64 on CPU (cached, do not mutate).

    Knots sit at evenly spaced positions ``u_k = k * h`` with ``h = (n_points - 1) / (n_knots - 1)``; for knot
    values ``v`` (n_knots,), ``W @ v`` evaluates the interpolant at ``t = 0, 1, ..., n_points - 1``. Because the
    knot positions are shared by every curve, one matrix product interpolates a whole batch of curves.
    ``kind="cubic"`` is the natural cubic spline (second derivative 0 at both ends), ``"linear"`` the
    piecewise-linear interpolant. Rows sum to 1 (constants are reproduced exactly).
    """
    K = n_knots
    if n_points == 1:
        w = torch.zeros(1, K, dtype=torch.float64)
        w[0, 0] = 1.0
        return w
    h = (n_points - 1) / (K - 1)
    eye = torch.eye(K, dtype=torch.float64)
    pos = torch.arange(n_points, dtype=torch.float64) / h
    i = pos.floor().long().clamp(max=K - 2)
    t = (pos - i.to(torch.float64)).unsqueeze(1)
    w = (1 - t) * eye[i] + t * eye[i + 1]
    if kind == "cubic" and K > 2:
        # M_{k-1} + 4 M_k + M_{k+1} = 6 / h^2 (v_{k-1} - 2 v_k + v_{k+1}),  M_0 = M_{K-1} = 0
        a = 4 * torch.eye(K - 2, dtype=torch.float64)
        if K > 3:
            off = torch.ones(K - 3, dtype=torch.float64)
            a = a + torch.diag(off, 1) + torch.diag(off, -1)
        d = (eye[:-2] - 2 * eye[1:-1] + eye[2:]) * (6.0 / h**2)
        m = torch.cat(
            [
                torch.zeros(1, K, dtype=torch.float64),
                torch.linalg.solve(a, d),
                torch.zeros(1, K, dtype=torch.float64),
            ]
        )
        w = w + (h**2 / 6.0) * (((1 - t) ** 3 - (1 - t)) * m[i] + (t**3 - t) * m[i + 1])
    return w


def _smooth_curves(values: Tensor, n_points: int, kind: str) -> Tensor:
    """Interpolate knot values (B, K, C) -> curves (B, n_points, C) in the dtype of ``values``."""
    w = _interp_basis(n_points, values.shape[1], kind).to(device=values.device, dtype=values.dtype)
    with _no_autocast(values.device):
        return torch.einsum("tk,bkc->btc", w, values)


def _accepts_generator(fn: Callable) -> bool:
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


# --------------------------------------------------------------------------------------------------------
# x -> x transforms
# --------------------------------------------------------------------------------------------------------


class _XTransform(nn.Module):
    """Base class of the shape-preserving transforms (``x -> x'``, same shape, dtype and device)."""

    x_to_x = True

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class Jitter(_XTransform):
    r"""Additive Gaussian noise.

    .. math:: x'_{b,t,c} = x_{b,t,c} + \varepsilon_{b,t,c}, \qquad \varepsilon \sim \mathcal N(0, \sigma^2)\ \text{i.i.d.}

    Args:
        sigma: noise standard deviation, ``>= 0`` (0 is the identity).

    NaN (missing) stays NaN.
    """

    def __init__(self, sigma: float = 0.03) -> None:
        super().__init__()
        self.sigma = _check_sigma("sigma", sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_x(x, "Jitter")
        noise = _randn(x.shape, generator, x.device)
        return x + (noise * self.sigma).to(x.dtype)


class Scaling(_XTransform):
    r"""Random per-(sample, channel) amplitude scaling.

    .. math:: x'_{b,t,c} = s_{b,c}\, x_{b,t,c}, \qquad s_{b,c} \sim \mathcal N(1, \sigma^2)\ \text{i.i.d.}

    Args:
        sigma: standard deviation of the factors, ``>= 0`` (0 is the identity).

    NaN stays NaN.
    """

    def __init__(self, sigma: float = 0.1) -> None:
        super().__init__()
        self.sigma = _check_sigma("sigma", sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"

    def factors(self, B: int, C: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """The random factors ``s`` of shape (B, 1, C), float32."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        return 1.0 + self.sigma * _randn((B, 1, C), generator, device)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_x(x, "Scaling")
        s = self.factors(x.shape[0], x.shape[2], generator, x.device)
        return x * s.to(x.dtype)


class MagnitudeWarp(_XTransform):
    r"""Multiply each (sample, channel) by a smooth random curve (Um et al., 2017).

    ``knots + 2`` values :math:`v_{b,k,c} \sim \mathcal N(1, \sigma^2)` are placed at evenly spaced positions
    :math:`u_k = k (T-1)/(K-1)`, :math:`K = knots + 2` (so the first and last sit on the end points), and
    interpolated over :math:`t = 0..T-1`:

    .. math:: x'_{b,t,c} = x_{b,t,c}\, \mathrm{interp}(u, v_{b,:,c})(t)

    The interpolant is linear in the knot values, so it is one ``(T, K)`` matrix shared by the whole batch
    (natural cubic spline or piecewise linear) applied with a single ``einsum``.

    Args:
        sigma: standard deviation of the knot values around 1, ``>= 0`` (0 is the identity).
        knots: number of interior knots, ``>= 0``.
        interpolation: ``"cubic"`` (natural cubic spline, default) or ``"linear"``.

    NaN stays NaN.
    """

    def __init__(self, sigma: float = 0.2, knots: int = 4, interpolation: str = "cubic") -> None:
        super().__init__()
        self.sigma = _check_sigma("sigma", sigma)
        self.knots = _check_int("knots", knots, 0)
        self.interpolation = _check_interp(interpolation)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, knots={self.knots}, interpolation={self.interpolation!r}"

    def curve(self, B: int, T: int, C: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """The random multiplicative curves, shape (B, T, C), float32."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        values = 1.0 + self.sigma * _randn((B, self.knots + 2, C), generator, device)
        return _smooth_curves(values, T, self.interpolation)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_x(x, "MagnitudeWarp")
        B, T, C = x.shape
        return x * self.curve(B, T, C, generator, x.device).to(x.dtype)


def _lerp_gather(x: Tensor, pos: Tensor) -> Tensor:
    """Linear interpolation of ``x`` (B, T, C) along time at fractional positions ``pos`` (B, T') in [0, T-1].

    NaN-aware: a sample point takes NaN only from a neighbour with non-zero weight, so points that land
    exactly on a step never see the neighbouring step.
    """
    B, T, C = x.shape
    if T == 1:
        return x[:, :1].expand(B, pos.shape[1], C).clone()
    i0 = pos.floor().long().clamp(0, T - 2)
    w = (pos - i0.to(pos.dtype)).clamp(0, 1).unsqueeze(-1)
    x0 = x.gather(1, i0.unsqueeze(-1).expand(-1, -1, C))
    x1 = x.gather(1, (i0 + 1).unsqueeze(-1).expand(-1, -1, C))
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    return torch.where(w < 1, (1 - w) * x0, zero) + torch.where(w > 0, w * x1, zero)


class TimeWarp(_XTransform):
    r"""Smooth random monotone resampling of the time axis, one warp per sample (shared by its channels).

    Speeds: ``knots + 2`` values :math:`r_{b,k} \sim \mathcal N(1, \sigma^2)` interpolated (as in
    :class:`MagnitudeWarp`) over the :math:`T-1` gaps between steps, floored at ``min_speed`` so they are
    positive. The warp is their normalised cumulative sum,

    .. math:: \tau_b(0) = 0,\quad \tau_b(t) = (T-1)\,\frac{\sum_{s<t} r_b(s)}{\sum_{s<T-1} r_b(s)},\qquad
              x'_{b,t,c} = x_{b,\tau_b(t),c}

    with linear interpolation between neighbouring steps (one ``gather`` per neighbour). :math:`\tau_b` is
    strictly increasing with :math:`\tau_b(0) = 0` and :math:`\tau_b(T-1) = T-1`, so end points are kept.

    Args:
        sigma: standard deviation of the speeds around 1, ``>= 0`` (0 is the identity).
        knots: number of interior knots of the speed curve, ``>= 0``.
        interpolation: ``"cubic"`` (default) or ``"linear"`` interpolation of the speed knots.
        min_speed: positive floor on the speeds (keeps the warp strictly monotone), default 0.01.

    NaN: an output step is NaN iff an input step it interpolates with non-zero weight is NaN (a missing
    stretch can therefore widen or shrink by the warp, by at most one step at each edge).
    Computed in float32 for half/bfloat16 inputs.
    """

    def __init__(
        self, sigma: float = 0.2, knots: int = 4, interpolation: str = "cubic", min_speed: float = 0.01
    ) -> None:
        super().__init__()
        self.sigma = _check_sigma("sigma", sigma)
        self.knots = _check_int("knots", knots, 0)
        self.interpolation = _check_interp(interpolation)
        if not _is_real(min_speed) or not (0 < float(min_speed) <= 1):
            raise ConfigError(f"min_speed must be in (0, 1], got {min_speed!r}")
        self.min_speed = float(min_speed)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, knots={self.knots}, interpolation={self.interpolation!r}"

    def warp_path(self, B: int, T: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """Source positions :math:`\\tau` of shape (B, T), float32, increasing from 0 to T-1."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        knots = 1.0 + self.sigma * _randn((B, self.knots + 2, 1), generator, device)
        if T < 2:
            return torch.zeros(B, T, device=device)
        speed = _smooth_curves(knots, T - 1, self.interpolation).squeeze(-1).clamp_min(self.min_speed)
        cum = torch.cat([torch.zeros(B, 1, device=device), speed.cumsum(1)], dim=1)
        return (cum / cum[:, -1:] * (T - 1)).clamp(0, T - 1)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_x(x, "TimeWarp")
        B, T, _ = x.shape
        cd = _compute_dtype(x)
        tau = self.warp_path(B, T, generator, x.device).to(cd)
        return _lerp_gather(x.to(cd), tau).to(x.dtype)


class Permutation(_XTransform):
    r"""Cut each sample into random segments along time and shuffle them (Um et al., 2017).

    Per sample :math:`b`: :math:`m_b \sim U\{1..\text{max\_segments}\}` segments, delimited by
    :math:`\min(m_b, T) - 1` distinct cut points drawn uniformly from :math:`\{1..T-1\}`; the segments are put
    in a uniformly random order (all channels move together). Implemented with tensor ops only: random
    cut points by ``topk`` of random scores, segment ids by ``cumsum``, the new order by ``argsort`` of random
    keys and the per-step source index by ``searchsorted`` — then one ``gather``.

    Args:
        max_segments: maximum number of segments, ``>= 1`` (1 is the identity).

    Each output row is a permutation of its input row's time steps, so missing values (NaN) travel with
    their segment.
    """

    def __init__(self, max_segments: int = 5) -> None:
        super().__init__()
        self.max_segments = _check_int("max_segments", max_segments, 1)

    def extra_repr(self) -> str:
        return f"max_segments={self.max_segments}"

    def index_map(self, B: int, T: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """Source time index for every output step, int64 (B, T); each row is a permutation of 0..T-1."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        S = self.max_segments
        m = _randint(1, S + 1, (B,), generator, device)
        n_cuts = (m - 1).clamp(max=T - 1)
        k = min(S - 1, T - 1)
        is_cut = torch.zeros(B, T, dtype=torch.bool, device=device)
        if k > 0:
            cut_pos = _rand((B, T - 1), generator, device).topk(k, dim=1).indices + 1
            use = torch.arange(k, device=device).unsqueeze(0) < n_cuts.unsqueeze(1)
            is_cut.scatter_(1, cut_pos, use)
        seg_id = is_cut.long().cumsum(1)  # (B, T), values in 0..n_cuts
        lengths = torch.zeros(B, S, dtype=torch.long, device=device).scatter_add_(
            1, seg_id, torch.ones_like(seg_id)
        )
        starts = lengths.cumsum(1) - lengths
        keys = _rand((B, S), generator, device)
        keys = keys.masked_fill(torch.arange(S, device=device).unsqueeze(0) > n_cuts.unsqueeze(1), 2.0)
        perm = keys.argsort(dim=1)  # existing segments first (random order), empty ones last
        p_len = lengths.gather(1, perm)
        p_end = p_len.cumsum(1)
        t = torch.arange(T, device=device).unsqueeze(0).expand(B, T).contiguous()
        slot = torch.searchsorted(p_end, t, right=True).clamp(max=S - 1)
        return starts.gather(1, perm).gather(1, slot) + t - (p_end - p_len).gather(1, slot)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_x(x, "Permutation")
        B, T, C = x.shape
        idx = self.index_map(B, T, generator, x.device)
        return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, C))


class FrequencyMask(_XTransform):
    r"""Zero a random subset of frequency bins per (sample, channel).

    .. math:: X = \mathrm{rfft}_t(x),\quad X'_{b,f,c} = M_{b,f,c} X_{b,f,c},\quad
              M_{b,f,c} \sim \mathrm{Bernoulli}(1 - \text{ratio}),\quad x' = \mathrm{irfft}_t(X', n=T)

    over the :math:`\lfloor T/2 \rfloor + 1` bins of the real FFT (the DC bin included).

    Args:
        ratio: probability that a bin is zeroed, in ``[0, 1]`` (0 is the identity up to FFT round-off;
            1 returns zeros).

    NaN: missing values are replaced by 0 for the transform and restored as NaN afterwards.
    Computed in float32 for half/bfloat16 inputs.
    """

    def __init__(self, ratio: float = 0.1) -> None:
        super().__init__()
        self.ratio = _check_prob("ratio", ratio)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}"

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_x(x, "FrequencyMask")
        B, T, C = x.shape
        nan = torch.isnan(x)
        xf = torch.where(nan, torch.zeros((), dtype=x.dtype, device=x.device), x).to(_compute_dtype(x))
        with _no_autocast(x.device):
            spec = torch.fft.rfft(xf, dim=1)
            keep = _rand((B, T // 2 + 1, C), generator, x.device) >= self.ratio
            out = torch.fft.irfft(spec * keep, n=T, dim=1)
        return out.to(x.dtype).masked_fill(nan, float("nan"))


# --------------------------------------------------------------------------------------------------------
# TS2Vec view generation: timestamp masks and overlapping crops
# --------------------------------------------------------------------------------------------------------


class TimestampMask(nn.Module):
    r"""TS2Vec's timestamp masks: boolean *keep*-masks of shape (B, T) (``True`` = keep, ``False`` = mask).

    This module does not change ``x``: ``forward(x)`` only reads ``x.shape`` / ``x.device`` and returns a
    mask. TS2Vec applies the mask to the *latent* vectors right after the encoder's input projection
    (``h = input_fc(x); h[~mask] = 0``), not to the raw input; the encoder does that (use :meth:`apply`),
    also AND-ing the mask with the NaN (missing) mask of ``x``. Masks are independent of the data.

    Modes:
        * ``"binomial"`` — TS2Vec's ``generate_binomial_mask``: each step is **kept** independently with
          probability ``p``, i.e. :math:`\text{keep}_{b,t} \sim \mathrm{Bernoulli}(p)`. Note the convention:
          ``p`` is the *keep* probability, as in TS2Vec (its default 0.5 makes the two readings coincide).
        * ``"continuous"`` — TS2Vec's ``generate_continuous_mask``: per sample, ``n`` segments of ``l`` steps
          each, with starts uniform in ``{0..T-l}``, are masked (segments may overlap, so between ``l`` and
          ``n*l`` steps are masked). ``n``/``l``: a float below 1 is a fraction of ``T`` (``int(n*T)``,
          ``int(l*T)``), otherwise an integer count of steps (floats are floored); then
          ``n`` is clipped to ``[1, max(T//2, 1)]`` and ``l`` to ``[1, T]``. Vectorised with a difference array
          (``scatter_add`` of +1/-1 at segment ends and a ``cumsum``).
        * ``"all_true"`` (no masking; TS2Vec at inference), ``"all_false"``, ``"mask_last"`` (only the last
          step masked).

    Args:
        p: keep probability for ``"binomial"``, in ``[0, 1]``.
        mode: one of the modes above.
        n: number of masked segments for ``"continuous"`` (``> 0``).
        l: length of each segment for ``"continuous"`` (``> 0``).
    """

    x_to_x = False
    MODES = ("binomial", "continuous", "all_true", "all_false", "mask_last")

    def __init__(
        self,
        p: float = 0.5,
        mode: str = "binomial",
        n: int | float = 5,
        l: int | float = 0.1,  # noqa: E741  (TS2Vec's name for the segment length)
    ) -> None:
        super().__init__()
        self.p = _check_prob("p", p)
        if mode not in self.MODES:
            raise ConfigError(f"mode must be one of {', '.join(self.MODES)}; got {mode!r}")
        self.mode = mode
        for name, v in (("n", n), ("l", l)):
            if not _is_real(v) or not math.isfinite(float(v)) or float(v) <= 0:
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        self.n = n
        self.l = l

    def extra_repr(self) -> str:
        if self.mode == "continuous":
            return f"mode='continuous', n={self.n}, l={self.l}"
        return f"mode={self.mode!r}, p={self.p}"

    @staticmethod
    def _steps(v: int | float, T: int) -> int:
        return int(v * T) if isinstance(v, float) and v < 1 else int(v)

    def segment_params(self, T: int) -> tuple[int, int]:
        """The resolved ``(n, l)`` in steps for series of length ``T`` (continuous mode)."""
        n = max(min(self._steps(self.n, T), T // 2), 1)
        seg = max(min(self._steps(self.l, T), T), 1)
        return n, seg

    def sample(self, B: int, T: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """A keep-mask of shape (B, T), dtype bool, on ``device`` (default CPU)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        if self.mode == "binomial":
            return _rand((B, T), generator, device) < self.p
        if self.mode == "continuous":
            n, seg = self.segment_params(T)
            starts = _randint(0, T - seg + 1, (B, n), generator, device)
            ones = torch.ones_like(starts)
            diff = torch.zeros(B, T + 1, dtype=torch.long, device=device)
            diff.scatter_add_(1, starts, ones).scatter_add_(1, starts + seg, -ones)
            return diff.cumsum(1)[:, :T] == 0
        if self.mode == "all_true":
            return torch.ones(B, T, dtype=torch.bool, device=device)
        if self.mode == "all_false":
            return torch.zeros(B, T, dtype=torch.bool, device=device)
        mask = torch.ones(B, T, dtype=torch.bool, device=device)
        mask[:, -1] = False
        return mask

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Keep-mask (B, T) bool for ``x`` of shape (B, T, C), on ``x.device``; ``x`` is not modified."""
        x = _check_x(x, "TimestampMask", floating=False)
        return self.sample(x.shape[0], x.shape[1], generator, x.device)

    @staticmethod
    def apply(x: Tensor, mask: Tensor) -> Tensor:
        """Return ``x`` (B, T, C) with the masked steps (``mask == False``) set to 0 (out of place)."""
        x = _check_x(x, "TimestampMask.apply", floating=False)
        if (
            not isinstance(mask, Tensor)
            or mask.dtype != torch.bool
            or tuple(mask.shape) != tuple(x.shape[:2])
        ):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise DataError(f"mask must be a bool tensor of shape {tuple(x.shape[:2])}, got {got}")
        return x.masked_fill(~mask.to(x.device).unsqueeze(-1), 0)


def _take(x: Tensor, rows: Tensor, start: Tensor, length: int, extra_valid: Tensor | None = None) -> Tensor:
    """Windows ``x[rows[i], start[i] : start[i] + length]`` with NaN where out of bounds (or not extra_valid)."""
    T = x.shape[1]
    idx = start.unsqueeze(1) + torch.arange(length, device=x.device)
    valid = (idx >= 0) & (idx < T)
    if extra_valid is not None:
        valid = valid & extra_valid
    out = x[rows.unsqueeze(1), idx.clamp(0, max(T - 1, 0))]
    if x.is_floating_point():
        return out.masked_fill(~valid.unsqueeze(-1), float("nan"))
    if not bool(valid.all()):
        raise DataError("windows reach outside the series, which needs NaN padding: convert x to float first")
    return out


def take_windows(x: Tensor, rows: Tensor, start: Tensor, length: int) -> Tensor:
    """Gather windows from chosen rows: ``out[i] = x[rows[i], start[i] : start[i] + length]`` (NaN outside the
    series), without copying whole rows first. ``x`` (B, T, C) float; ``rows``/``start`` int tensors (n,)."""
    x = _check_x(x, "take_windows")
    rows = torch.as_tensor(rows, device=x.device).long()
    start = torch.as_tensor(start, device=x.device).long()
    if rows.shape != start.shape or rows.dim() != 1:
        raise DataError(
            f"rows and start must be 1-D and of equal length, got {tuple(rows.shape)}, {tuple(start.shape)}"
        )
    return _take(x, rows, start, _check_int("length", length, 0))


def take_per_row(x: Tensor, start: Tensor, length: int) -> Tensor:
    """Gather one window per row: ``out[b] = x[b, start[b] : start[b] + length]``.

    Args:
        x: (B, T, C) tensor.
        start: int tensor (B,) of window starts (may be negative or run past ``T``).
        length: window length, ``>= 0``.

    Returns:
        (B, length, C) tensor; positions outside ``[0, T)`` are NaN (missing). One advanced-indexing gather,
        no loop. (Integer ``x`` is allowed only if every window lies inside the series.)
    """
    x = _check_x(x, "take_per_row", floating=False)
    length = _check_int("length", length, 0)
    start = torch.as_tensor(start, device=x.device)
    if (
        start.dim() != 1
        or start.shape[0] != x.shape[0]
        or start.is_floating_point()
        or start.dtype == torch.bool
    ):
        raise DataError(
            f"start must be an integer tensor of shape ({x.shape[0]},), got {tuple(start.shape)} {start.dtype}"
        )
    return _take(x, torch.arange(x.shape[0], device=x.device), start.long(), length)


@dataclass(eq=False)
class CropParams:
    """One draw of TS2Vec's overlapping crops (integers shared by the batch, ``offset`` per sample).

    View 1 covers ``[offset + crop_eleft, offset + crop_right)`` and view 2 ``[offset + crop_left,
    offset + crop_eright)`` of each row; both contain the overlap ``[offset + crop_left, offset + crop_right)``
    of length ``crop_l``: the last ``crop_l`` steps of view 1 and the first ``crop_l`` steps of view 2.
    """

    crop_l: int
    crop_left: int
    crop_right: int
    crop_eleft: int
    crop_eright: int
    offset: Tensor  # (B,) int64

    @property
    def len1(self) -> int:
        return self.crop_right - self.crop_eleft

    @property
    def len2(self) -> int:
        return self.crop_eright - self.crop_left

    @property
    def start1(self) -> Tensor:
        return self.offset + self.crop_eleft

    @property
    def start2(self) -> Tensor:
        return self.offset + self.crop_left


@dataclass(eq=False)
class PaddedPair:
    """Layout of :func:`crop_pair_padded`'s output ``views`` of shape (2B, L, C), ``L = max(len1, len2)``.

    Rows ``0..B-1`` are view 1 and rows ``B..2B-1`` view 2, both left-aligned: a view's real steps come first and
    NaN padding follows (``L - len1`` / ``L - len2`` steps). ``valid`` (2B, L) is ``False`` on that padding. The
    overlap (the same original time steps in both views) is ``views[:B, overlap1]`` (the last ``crop_l`` real
    steps of view 1) and ``views[B:, overlap2]`` (the first ``crop_l`` of view 2).
    """

    B: int
    L: int
    len1: int
    len2: int
    crop_l: int
    valid: Tensor

    @property
    def overlap1(self) -> slice:
        return slice(self.len1 - self.crop_l, self.len1)

    @property
    def overlap2(self) -> slice:
        return slice(0, self.crop_l)

    def split_overlap(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """From per-step outputs ``z`` (2B, L, ...) return the overlap parts ``(z1, z2)``, each (B, crop_l, ...)."""
        z1, z2 = z.split(
            self.B
        )  # split, not row slices: its backward is one cat instead of zero-filled grads
        return z1[:, self.overlap1], z2[:, self.overlap2]

    @property
    def overlap_window(self) -> tuple[Tensor, int]:
        """``(start, crop_l)``: where each of the 2B rows' overlap starts (``len1 - crop_l`` for view 1, 0 for
        view 2), the ``window=`` argument of :class:`tscl.encoders.TCNEncoder`."""
        dev = self.valid.device
        start = torch.cat(
            [torch.full((self.B,), self.len1 - self.crop_l, device=dev), torch.zeros(self.B, device=dev)]
        )
        return start.long(), self.crop_l

    def encode_overlap(
        self, encoder: nn.Module, views: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Encode ``views`` in one pass and return the overlap representations ``(z1, z2)``, each (B, crop_l, D).

        Encoders that declare ``accepts_window`` (the TCN) compute the steps outside the overlap only where later
        layers read them; any other ``(B, T, C) -> (B, T, D)`` encoder is run on the whole views and sliced."""
        if getattr(encoder, "accepts_window", False):
            z = encoder(views, mask, valid=self.valid, window=self.overlap_window)
            z1, z2 = z.split(self.B)  # the window is the overlap: nothing left to slice
            return z1, z2
        return self.split_overlap(encoder(views, mask, valid=self.valid))

    def unpad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """From ``z`` (2B, L, ...) return the un-padded views ``(z[:B, :len1], z[B:, :len2])``."""
        return z[: self.B, : self.len1], z[self.B :, : self.len2]


def bucket_length(n: int) -> int:
    """``n`` rounded up to a multiple of ``max(16, 2**(bit_length(n) - 4))``: at most 16 distinct lengths per
    octave, each at most ~12% longer than ``n``.

    Training draws a new crop length every step; oneDNN (CPU) and cuDNN build and cache a kernel per input shape,
    so an unbounded set of lengths rebuilds kernels all run long (measured on 2 CPU cores, TS2Vec's encoder
    forward + backward at random lengths 20-150: 43.5 -> 36.8 ms per step in fp32, 43.3 -> 27.5 ms in bf16).
    """
    n = int(n)
    q = max(16, 1 << max(n.bit_length() - 4, 0))
    return -(-n // q) * q


def crop_pair_padded(x: Tensor, params: CropParams, bucket: bool = False) -> tuple[Tensor, PaddedPair]:
    """Both TS2Vec views stacked in one tensor so an encoder processes them in a single pass.

    Returns ``(views, info)``: ``views`` (2B, L, C), ``L = max(len1, len2)``, rows ``:B`` view 1 and rows ``B:``
    view 2, both left-aligned with NaN padding after their ends (one gather). Positions keep their offsets from
    each view's start, so an encoder that treats ``info.valid == False`` as zero padding at every layer (as
    :class:`tscl.encoders.TCNEncoder` does with ``valid=``) gives exactly the outputs of encoding the two views
    separately. Recover the overlap with ``info.split_overlap(z)``. ``bucket=True`` pads further, to
    ``L = bucket_length(max(len1, len2))`` (same outputs; kernels are reused across steps).
    """
    x = _check_x(x, "crop_pair_padded", floating=False)
    B = x.shape[0]
    if params.offset.shape != (B,):
        raise DataError(f"params.offset has shape {tuple(params.offset.shape)}, expected ({B},)")
    len1, len2 = params.len1, params.len2
    L = bucket_length(max(len1, len2)) if bucket else max(len1, len2)
    dev = x.device
    j = torch.arange(L, device=dev).unsqueeze(0)
    offset = params.offset.to(dev)
    rows = torch.arange(B, device=dev).repeat(2)
    start = torch.cat([offset + params.crop_eleft, offset + params.crop_left])
    valid = torch.cat([(j < len1).expand(B, L), (j < len2).expand(B, L)])
    views = _take(x, rows, start, L, valid)
    return views, PaddedPair(B=B, L=L, len1=len1, len2=len2, crop_l=params.crop_l, valid=valid)


class OverlapCrop(nn.Module):
    r"""TS2Vec's two random overlapping crops ("contextual consistency").

    Sampling (the integers are shared by the batch, the offset is per sample), with ``randint(a, b)``
    uniform on ``{a..b-1}`` and :math:`T` the series length:

    .. code-block:: text

        crop_l      ~ randint(2**(temporal_unit + 1), T + 1)
        crop_left   ~ randint(0, T - crop_l + 1);   crop_right = crop_left + crop_l
        crop_eleft  ~ randint(0, crop_left + 1)
        crop_eright ~ randint(crop_right, T + 1)
        offset[b]   ~ randint(-crop_eleft, T - crop_eright + 1)            (B values)

        view1[b] = x[b, offset[b] + crop_eleft : offset[b] + crop_right]    (length crop_right - crop_eleft)
        view2[b] = x[b, offset[b] + crop_left  : offset[b] + crop_eright]   (length crop_eright - crop_left)

    Both views contain ``x[b, offset[b] + crop_left : offset[b] + crop_right]`` (``crop_l`` steps): the last
    ``crop_l`` steps of view 1 and the first ``crop_l`` of view 2; TS2Vec's loss compares the representations
    there. With this sampling both windows always lie inside ``[0, T)``; out-of-range positions (possible only
    with hand-made :class:`CropParams`) are NaN. See :func:`crop_pair_padded` for a single-pass layout.

    Args:
        temporal_unit: minimum crop length is ``2 ** (temporal_unit + 1)``, ``>= 0``.

    Needs ``T >= 2 ** (temporal_unit + 1)`` (else :class:`~tscl.errors.DataError`). NaN travels with the data.
    """

    x_to_x = False

    def __init__(self, temporal_unit: int = 0) -> None:
        super().__init__()
        self.temporal_unit = _check_int("temporal_unit", temporal_unit, 0)

    def extra_repr(self) -> str:
        return f"temporal_unit={self.temporal_unit}"

    def sample(self, B: int, T: int, generator: torch.Generator | None = None, device=None) -> CropParams:
        """Draw crop parameters for a batch of ``B`` series of length ``T`` (``offset`` on ``device``)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        min_l = 2 ** (self.temporal_unit + 1)
        if T < min_l:
            raise DataError(
                f"series of length {T} are too short for OverlapCrop(temporal_unit={self.temporal_unit}), which "
                f"needs at least {min_l} steps; lower temporal_unit or use longer windows"
            )
        crop_l = _randint_scalar(min_l, T + 1, generator)
        crop_left = _randint_scalar(0, T - crop_l + 1, generator)
        crop_right = crop_left + crop_l
        crop_eleft = _randint_scalar(0, crop_left + 1, generator)
        crop_eright = _randint_scalar(crop_right, T + 1, generator)
        offset = _randint(-crop_eleft, T - crop_eright + 1, (B,), generator, device)
        return CropParams(crop_l, crop_left, crop_right, crop_eleft, crop_eright, offset)

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, CropParams]:
        """Return ``(view1, view2, params)``: (B, len1, C), (B, len2, C) and the :class:`CropParams` used."""
        x = _check_x(x, "OverlapCrop", floating=False)
        p = self.sample(x.shape[0], x.shape[1], generator, x.device)
        rows = torch.arange(x.shape[0], device=x.device)
        return _take(x, rows, p.start1, p.len1), _take(x, rows, p.start2, p.len2), p


# --------------------------------------------------------------------------------------------------------
# composition
# --------------------------------------------------------------------------------------------------------


def _check_x_to_x(t: object, who: str) -> None:
    if not callable(t):
        raise ConfigError(f"{who} expects transforms (callables / nn.Modules), got {type(t).__name__}")
    if getattr(t, "x_to_x", True) is False:
        raise ConfigError(
            f"{who} only takes x -> x transforms; {type(t).__name__} returns something else "
            "(a mask or a pair of views) and must be called on its own"
        )


class Compose(nn.Module):
    """Apply x -> x transforms in order: ``x' = t_n(...t_2(t_1(x)))``, passing ``generator`` to each.

    Transforms whose ``forward`` has no ``generator`` parameter are called as ``t(x)``.
    :class:`TimestampMask` and :class:`OverlapCrop` are not ``x -> x`` and are refused (ConfigError).
    """

    x_to_x = True

    def __init__(self, transforms: Iterable[Callable]) -> None:
        super().__init__()
        if isinstance(transforms, (nn.Module, str)) or not isinstance(transforms, Iterable):
            raise ConfigError("Compose expects a list of transforms, e.g. Compose([Jitter(), Scaling()])")
        transforms = list(transforms)
        for t in transforms:
            _check_x_to_x(t, "Compose")
            if not isinstance(t, nn.Module):
                raise ConfigError(f"Compose expects nn.Module transforms, got {type(t).__name__}")
        self.transforms = nn.ModuleList(transforms)
        self._pass_gen = [_accepts_generator(t) for t in transforms]

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_x(x, "Compose")
        for t, pass_gen in zip(self.transforms, self._pass_gen, strict=True):
            x = t(x, generator=generator) if pass_gen else t(x)
        return x


class RandomApply(nn.Module):
    r"""Apply ``transform`` to each sample independently with probability ``p``.

    .. math:: x'_b = \begin{cases} t(x)_b & u_b < p \\ x_b & \text{otherwise} \end{cases},\qquad u_b \sim U[0,1)

    Vectorised: the transform runs on the whole batch and ``torch.where`` selects per sample (so its cost is
    paid even for unselected samples). ``u`` is drawn from ``generator`` before the transform's own draws.

    Args:
        transform: an x -> x transform (nn.Module).
        p: probability of applying it, in ``[0, 1]``.
    """

    x_to_x = True

    def __init__(self, transform: nn.Module, p: float = 0.5) -> None:
        super().__init__()
        _check_x_to_x(transform, "RandomApply")
        if not isinstance(transform, nn.Module):
            raise ConfigError(f"RandomApply expects an nn.Module transform, got {type(transform).__name__}")
        self.transform = transform
        self.p = _check_prob("p", p)
        self._pass_gen = _accepts_generator(transform)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = _check_x(x, "RandomApply")
        chosen = _rand((x.shape[0],), generator, x.device) < self.p
        if self.p == 0.0:
            return x
        y = self.transform(x, generator=generator) if self._pass_gen else self.transform(x)
        return torch.where(chosen.view(-1, 1, 1), y, x)


# --------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[nn.Module]] = {
    "jitter": Jitter,
    "scaling": Scaling,
    "magnitude_warp": MagnitudeWarp,
    "time_warp": TimeWarp,
    "permutation": Permutation,
    "frequency_mask": FrequencyMask,
    "timestamp_mask": TimestampMask,
    "overlap_crop": OverlapCrop,
}


def available() -> Sequence[str]:
    """Names accepted by :func:`get`."""
    return tuple(_REGISTRY)


def get(name: str, **kwargs) -> nn.Module:
    """Build a fixed transform by snake_case name, e.g. ``get("jitter", sigma=0.05)``.

    Names: ``jitter, scaling, magnitude_warp, time_warp, permutation, frequency_mask, timestamp_mask,
    overlap_crop`` (hyphens and case are tolerated). Unknown names or arguments raise ConfigError.
    """
    key = str(name).strip().lower().replace("-", "_") if isinstance(name, str) else None
    if key not in _REGISTRY:
        raise ConfigError(f"unknown augmentation {name!r}; available: {', '.join(_REGISTRY)}")
    cls = _REGISTRY[key]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise ConfigError(
            f"bad arguments for augmentation {key!r}: {e}; signature: {key}{inspect.signature(cls)}"
        ) from None
    return cls(**kwargs)
