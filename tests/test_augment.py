"""Tests for tscl.augment (fixed transforms). Small tensors, CPU only, a few seconds in total."""

from __future__ import annotations

import math

import pytest
import torch

from tscl import augment as A
from tscl.errors import ConfigError, DataError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


X_TO_X = {
    "jitter": lambda: A.Jitter(0.1),
    "scaling": lambda: A.Scaling(0.2),
    "magnitude_warp": lambda: A.MagnitudeWarp(0.2, knots=4),
    "magnitude_warp_linear": lambda: A.MagnitudeWarp(0.2, knots=3, interpolation="linear"),
    "time_warp": lambda: A.TimeWarp(0.3, knots=4),
    "permutation": lambda: A.Permutation(5),
    "frequency_mask": lambda: A.FrequencyMask(0.3),
    "compose": lambda: A.Compose([A.Jitter(0.1), A.Scaling(0.1), A.TimeWarp(0.2)]),
    "random_apply": lambda: A.RandomApply(A.MagnitudeWarp(0.3), p=0.5),
}


# ------------------------------------------------------------------------------------------ shape / dtype / seed


@pytest.mark.parametrize("name", list(X_TO_X))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_dtype_kept(name, dtype):
    x = torch.randn(4, 37, 3).to(dtype)
    out = X_TO_X[name]()(x, generator=gen())
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", list(X_TO_X))
def test_seeded_reproducible(name):
    x = torch.randn(6, 40, 2)
    t = X_TO_X[name]()
    a, b = t(x, generator=gen(1)), t(x, generator=gen(1))
    c = t(x, generator=gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_global_rng_fallback_is_seedable():
    x = torch.randn(3, 20, 2)
    torch.manual_seed(5)
    a = A.Jitter(0.1)(x)
    torch.manual_seed(5)
    b = A.Jitter(0.1)(x)
    assert torch.equal(a, b)


def test_same_seed_same_draws_across_dtypes():
    x = torch.randn(3, 30, 2, dtype=torch.float64)
    a = A.TimeWarp(0.3)(x, generator=gen(3))
    b = A.TimeWarp(0.3)(x.float(), generator=gen(3))
    assert torch.allclose(a.float(), b, atol=1e-5)


def test_autocast_cpu_bf16_runs():
    x = torch.randn(2, 24, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name in ("magnitude_warp", "time_warp", "frequency_mask", "compose"):
            out = X_TO_X[name]()(x, generator=gen())
            assert out.shape == x.shape and out.dtype == torch.float32


# ------------------------------------------------------------------------------------------ statistics


def test_jitter_residual_std():
    x = torch.randn(64, 200, 4)
    r = A.Jitter(0.05)(x, generator=gen()) - x
    assert abs(r.mean().item()) < 0.002
    assert abs(r.std().item() - 0.05) < 0.002
    assert torch.equal(A.Jitter(0.0)(x, generator=gen()), x)


def test_scaling_factors():
    x = torch.ones(2000, 5, 3)
    out = A.Scaling(0.1)(x, generator=gen())
    f = out[:, 0, :]
    assert torch.equal(out, f.unsqueeze(1).expand_as(out))  # constant over time per (sample, channel)
    assert abs(f.mean().item() - 1.0) < 0.01
    assert abs(f.std().item() - 0.1) < 0.01
    assert f[:, 0].std() > 0 and not torch.equal(f[:, 0], f[:, 1])  # independent per channel


def test_magnitude_warp_curve_smooth_and_centred():
    t = A.MagnitudeWarp(0.2, knots=4)
    curve = t(torch.ones(500, 100, 2), generator=gen())
    assert abs(curve.mean().item() - 1.0) < 0.02
    assert 0.05 < curve.std().item() < 0.3
    # smooth: steps between neighbouring time points are far smaller than the knot spread
    assert curve.diff(dim=1).abs().max() < 0.2
    x = torch.randn(2, 9, 1)
    assert torch.allclose(A.MagnitudeWarp(0.0)(x, generator=gen()), x, atol=1e-6)


def test_magnitude_warp_linear_is_piecewise_linear():
    # knots=1 -> 3 knot values at t = 0, 10, 20: second differences vanish away from the middle knot
    curve = A.MagnitudeWarp(0.3, knots=1, interpolation="linear")(torch.ones(8, 21, 1), generator=gen())
    d2 = curve.diff(n=2, dim=1)[:, :, 0]
    away = torch.ones(19, dtype=torch.bool)
    away[9] = False
    assert d2[:, away].abs().max() < 1e-5
    assert d2[:, 9].abs().max() > 1e-3


def test_time_warp_monotone_endpoints_on_ramp():
    T = 64
    ramp = torch.arange(T, dtype=torch.float64).view(1, T, 1).repeat(32, 1, 2)
    out = A.TimeWarp(0.5, knots=4)(ramp, generator=gen())
    assert torch.equal(out[:, 0], ramp[:, 0]) and torch.equal(out[:, -1], ramp[:, -1])
    assert (out.diff(dim=1) > 0).all()  # strictly monotone warp
    assert torch.equal(out[..., 0], out[..., 1])  # one warp per sample, shared by channels
    assert (out - ramp).abs().max() > 1.0  # it actually warps
    path = A.TimeWarp(0.5).warp_path(4, T, generator=gen())
    assert path.shape == (4, T) and path[:, 0].eq(0).all() and path[:, -1].eq(T - 1).all()
    assert torch.allclose(A.TimeWarp(0.0)(ramp, generator=gen()), ramp, atol=1e-4)


def test_time_warp_short_series():
    for T in (1, 2, 3):
        x = torch.randn(2, T, 1)
        assert A.TimeWarp()(x, generator=gen()).shape == x.shape


def test_permutation_is_permutation_per_sample():
    x = torch.randn(16, 50, 3)
    out = A.Permutation(6)(x, generator=gen())
    assert torch.equal(out.sort(dim=1).values, x.sort(dim=1).values)
    # channels move together: each output step is one whole input step
    idx = A.Permutation(6).index_map(16, 50, generator=gen())
    assert torch.equal(idx.sort(dim=1).values, torch.arange(50).expand(16, 50))
    assert torch.equal(out, x.gather(1, idx.unsqueeze(-1).expand(-1, -1, 3)))
    # at most max_segments contiguous runs of source indices
    runs = 1 + (idx.diff(dim=1) != 1).sum(dim=1)
    assert runs.max() <= 6 and runs.max() > 1
    assert torch.equal(A.Permutation(1)(x, generator=gen()), x)
    assert A.Permutation(5)(torch.randn(2, 1, 1), generator=gen()).shape == (2, 1, 1)


def test_frequency_mask_identity_and_energy():
    x = torch.randn(8, 64, 3)
    assert torch.allclose(A.FrequencyMask(0.0)(x, generator=gen()), x, atol=1e-5)
    out = A.FrequencyMask(0.5)(x, generator=gen())
    e_in, e_out = x.pow(2).sum().item(), out.pow(2).sum().item()
    assert e_out < 0.75 * e_in and e_out > 0.25 * e_in
    assert torch.allclose(A.FrequencyMask(1.0)(x, generator=gen()), torch.zeros_like(x), atol=1e-6)
    odd = torch.randn(2, 33, 1)
    assert A.FrequencyMask(0.3)(odd, generator=gen()).shape == odd.shape


# ------------------------------------------------------------------------------------------ NaN handling


def test_nan_kept_where_missing():
    x = torch.randn(4, 40, 2)
    x[0, 5:9, 0] = float("nan")
    x[2, 30, 1] = float("nan")
    nan = x.isnan()
    for name in ("jitter", "scaling", "magnitude_warp", "frequency_mask"):
        out = X_TO_X[name]()(x, generator=gen())
        assert torch.equal(out.isnan(), nan), name
    out = A.Permutation(5)(x, generator=gen())
    assert out.isnan().sum() == nan.sum()
    assert torch.equal(out.isnan().sum(1), nan.sum(1))
    out = A.TimeWarp(0.2)(x, generator=gen())
    assert out[1].isfinite().all() and out[3].isfinite().all()  # no NaN invented in complete rows
    assert out[0, :, 0].isnan().any() and out[0, :, 1].isfinite().all()
    # zero warp: NaN pattern unchanged exactly
    assert torch.equal(A.TimeWarp(0.0)(x, generator=gen()).isnan(), nan)


# ------------------------------------------------------------------------------------------ timestamp masks


def test_timestamp_mask_binomial_keep_fraction():
    x = torch.randn(200, 100, 1)
    m = A.TimestampMask(p=0.8)(x, generator=gen())
    assert m.dtype == torch.bool and m.shape == (200, 100)
    assert abs(m.float().mean().item() - 0.8) < 0.01  # p is the KEEP probability (TS2Vec)
    assert torch.equal(m, A.TimestampMask(p=0.8)(x, generator=gen()))
    assert not torch.equal(m, A.TimestampMask(p=0.8)(x, generator=gen(1)))
    assert torch.equal(A.TimestampMask(mode="all_true")(x), torch.ones(200, 100, dtype=torch.bool))
    assert not A.TimestampMask(mode="all_false")(x).any()
    last = A.TimestampMask(mode="mask_last")(x)
    assert last[:, :-1].all() and not last[:, -1].any()


def _false_runs(row: torch.Tensor) -> list[int]:
    runs, n = [], 0
    for v in row.tolist() + [True]:
        if not v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_timestamp_mask_continuous_runs():
    T, n, seg = 100, 3, 7
    tm = A.TimestampMask(mode="continuous", n=n, l=seg)
    m = tm.sample(50, T, generator=gen())
    masked = (~m).sum(1)
    assert masked.min() >= seg and masked.max() <= n * seg
    for row in m:
        runs = _false_runs(row)
        assert 1 <= len(runs) <= n and min(runs) >= seg  # contiguous runs of >= l steps
    assert tm.segment_params(100) == (3, 7)
    assert A.TimestampMask(mode="continuous", n=5, l=0.1).segment_params(200) == (5, 20)
    assert A.TimestampMask(mode="continuous", n=50, l=0.1).segment_params(10) == (5, 1)


def test_timestamp_mask_apply_and_x_untouched():
    x = torch.randn(3, 10, 4)
    x0 = x.clone()
    tm = A.TimestampMask(mode="continuous", n=1, l=3)
    m = tm(x, generator=gen())
    assert torch.equal(x, x0)
    y = tm.apply(x, m)
    assert (y[~m] == 0).all() and torch.equal(y[m], x[m])
    with pytest.raises(DataError):
        tm.apply(x, m[:, :5])
    with pytest.raises(DataError):
        tm.apply(x, m.float())


# ------------------------------------------------------------------------------------------ crops


def _naive_take(x, start, length):
    B, T, C = x.shape
    out = torch.full((B, length, C), float("nan"), dtype=x.dtype)
    for b in range(B):
        for j in range(length):
            t = int(start[b]) + j
            if 0 <= t < T:
                out[b, j] = x[b, t]
    return out


def test_take_per_row_matches_loop():
    x = torch.randn(5, 12, 2)
    start = torch.tensor([-3, 0, 4, 9, 15])
    for length in (0, 1, 5, 12, 20):
        got = A.take_per_row(x, start, length)
        assert got.shape == (5, length, 2)
        assert torch.equal(got.isnan(), _naive_take(x, start, length).isnan())
        assert torch.equal(got.nan_to_num(123.0), _naive_take(x, start, length).nan_to_num(123.0))
    xi = torch.arange(24).view(2, 12, 1)
    assert torch.equal(
        A.take_per_row(xi, torch.tensor([0, 2]), 3)[:, :, 0], torch.tensor([[0, 1, 2], [14, 15, 16]])
    )
    with pytest.raises(DataError):
        A.take_per_row(xi, torch.tensor([-1, 0]), 3)
    with pytest.raises(DataError):
        A.take_per_row(x, torch.tensor([0, 1]), 3)


def _time_coded(B, T, C=2):
    """x[b, t, c] = t, so every value tells its original time index."""
    return torch.arange(T, dtype=torch.float32).view(1, T, 1).repeat(B, 1, C)


@pytest.mark.parametrize("temporal_unit", [0, 2])
def test_overlap_crop_views_overlap_on_same_steps(temporal_unit):
    B, T = 16, 60
    x = _time_coded(B, T)
    crop = A.OverlapCrop(temporal_unit)
    for seed in range(25):
        v1, v2, p = crop(x, generator=gen(seed))
        assert p.crop_l >= 2 ** (temporal_unit + 1)
        assert v1.shape == (B, p.crop_right - p.crop_eleft, 2) and v2.shape == (
            B,
            p.crop_eright - p.crop_left,
            2,
        )
        assert p.offset.shape == (B,) and p.offset.dtype == torch.int64
        assert torch.equal(v1[:, -p.crop_l :], v2[:, : p.crop_l])  # same original time steps
        assert torch.equal(
            v1[:, -p.crop_l :, 0, None],
            (p.offset + p.crop_left).view(B, 1, 1) + torch.arange(p.crop_l).view(1, -1, 1).float(),
        )
        assert not v1.isnan().any() and not v2.isnan().any()  # TS2Vec's sampling stays inside [0, T)
        assert torch.equal(v1, A.take_per_row(x, p.start1, p.len1))
    v1a, v2a, pa = crop(x, generator=gen(7))
    v1b, v2b, pb = crop(x, generator=gen(7))
    assert torch.equal(v1a, v1b) and torch.equal(v2a, v2b) and torch.equal(pa.offset, pb.offset)


def test_overlap_crop_sampling_ranges():
    crop = A.OverlapCrop(1)
    T = 20
    for seed in range(200):
        p = crop.sample(4, T, generator=gen(seed))
        assert 4 <= p.crop_l <= T
        assert (
            0 <= p.crop_eleft <= p.crop_left and p.crop_right == p.crop_left + p.crop_l <= p.crop_eright <= T
        )
        assert (p.offset >= -p.crop_eleft).all() and (p.offset <= T - p.crop_eright).all()
    assert crop.sample(3, 4, generator=gen()).crop_l == 4
    with pytest.raises(DataError):
        crop.sample(3, 3)
    with pytest.raises(DataError):
        crop(torch.randn(2, 3, 1))


def test_crop_pair_padded_agrees_with_separate_views():
    B, T = 8, 50
    x = _time_coded(B, T)
    x[1, 10:13] = float("nan")
    crop = A.OverlapCrop(0)
    for seed in range(20):
        v1, v2, p = crop(x, generator=gen(seed))
        views, info = A.crop_pair_padded(x, p)
        L = max(p.len1, p.len2)
        assert views.shape == (2 * B, L, 2) and info.L == L
        u1, u2 = info.unpad(views)
        assert torch.equal(u1.nan_to_num(-1), v1.nan_to_num(-1)) and torch.equal(
            u2.nan_to_num(-1), v2.nan_to_num(-1)
        )
        assert views[:B, p.len1 :].isnan().all() and views[B:, p.len2 :].isnan().all()  # padding is NaN
        assert info.valid[:B, : p.len1].all() and not info.valid[:B, p.len1 :].any()
        assert info.valid[B:, : p.len2].all() and not info.valid[B:, p.len2 :].any()
        o1, o2 = info.split_overlap(views)
        assert o1.shape[1] == p.crop_l and torch.equal(o1.nan_to_num(-1), o2.nan_to_num(-1))
    bad = A.CropParams(4, 0, 4, 0, 6, torch.tensor([-2, 48]))
    views, info = A.crop_pair_padded(_time_coded(2, 50), bad)
    # L = 6; view-1 rows: x[offset : offset + 4] then 2 padding steps; positions outside [0, T) are NaN too
    assert views[0, :2].isnan().all() and torch.equal(views[0, 2:4, 0], torch.tensor([0.0, 1.0]))
    assert views[0, 4:].isnan().all()
    assert torch.equal(views[1, :2, 0], torch.tensor([48.0, 49.0])) and views[1, 2:].isnan().all()
    assert torch.equal(info.valid[0], torch.tensor([True] * 4 + [False] * 2))


# ------------------------------------------------------------------------------------------ composition / registry


def test_compose_and_random_apply():
    x = torch.randn(200, 20, 2)
    ra = A.RandomApply(A.Scaling(0.5), p=0.3)
    out = ra(x, generator=gen())
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.2 < changed < 0.4
    assert torch.equal(A.RandomApply(A.Scaling(0.5), p=0.0)(x, generator=gen()), x)
    assert torch.equal(
        A.RandomApply(A.Scaling(0.5), p=1.0)(x, generator=gen()),
        A.Scaling(0.5)(x, generator=_after_rand(200)),
    )
    # generator threaded through: Compose equals applying the transforms one after the other on one generator
    g1 = gen(4)
    ref = A.Scaling(0.1)(A.Jitter(0.1)(x, generator=g1), generator=g1)
    assert torch.equal(A.Compose([A.Jitter(0.1), A.Scaling(0.1)])(x, generator=gen(4)), ref)
    # foreign modules without a generator argument are called as t(x)
    assert torch.equal(A.Compose([torch.nn.Identity()])(x), x)
    assert torch.equal(A.Compose([])(x), x)


def _after_rand(B):
    g = gen()
    torch.rand(B, generator=g)
    return g


def test_registry():
    assert set(A.available()) == {
        "jitter",
        "scaling",
        "magnitude_warp",
        "time_warp",
        "permutation",
        "frequency_mask",
        "timestamp_mask",
        "overlap_crop",
    }
    assert isinstance(A.get("jitter", sigma=0.5), A.Jitter) and A.get("jitter", sigma=0.5).sigma == 0.5
    assert isinstance(A.get("Time-Warp"), A.TimeWarp)
    assert isinstance(A.get("overlap_crop", temporal_unit=1), A.OverlapCrop)
    with pytest.raises(ConfigError, match="magnitude_warp"):
        A.get("nope")
    with pytest.raises(ConfigError):
        A.get("jitter", sigmaa=0.1)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "make",
    [
        lambda: A.Jitter(-0.1),
        lambda: A.Jitter(float("nan")),
        lambda: A.Jitter("0.1"),
        lambda: A.Scaling(-1),
        lambda: A.MagnitudeWarp(0.2, knots=-1),
        lambda: A.MagnitudeWarp(0.2, knots=2.5),
        lambda: A.MagnitudeWarp(interpolation="quadratic"),
        lambda: A.TimeWarp(-0.2),
        lambda: A.TimeWarp(min_speed=0),
        lambda: A.Permutation(0),
        lambda: A.Permutation(True),
        lambda: A.FrequencyMask(1.5),
        lambda: A.FrequencyMask(-0.1),
        lambda: A.TimestampMask(p=1.1),
        lambda: A.TimestampMask(mode="gaussian"),
        lambda: A.TimestampMask(mode="continuous", n=0),
        lambda: A.TimestampMask(mode="continuous", l=-1),
        lambda: A.OverlapCrop(-1),
        lambda: A.RandomApply(A.Jitter(), p=2),
        lambda: A.RandomApply(A.TimestampMask()),
        lambda: A.Compose([A.Jitter(), A.OverlapCrop()]),
        lambda: A.Compose(A.Jitter()),
    ],
)
def test_config_errors(make):
    with pytest.raises(ConfigError):
        make()


@pytest.mark.parametrize(
    "name",
    [
        "jitter",
        "scaling",
        "magnitude_warp",
        "time_warp",
        "permutation",
        "frequency_mask",
        "timestamp_mask",
        "overlap_crop",
    ],
)
def test_data_errors(name):
    t = A.get(name)
    for bad in (torch.randn(10, 3), torch.randn(2, 10, 3, 1), torch.randn(2, 0, 3)):
        with pytest.raises(DataError):
            t(bad)
    with pytest.raises(DataError):
        t([[[1.0]]])
    if name not in ("timestamp_mask", "overlap_crop"):
        with pytest.raises(DataError):
            t(torch.ones(2, 10, 3, dtype=torch.int64))


def test_errors_are_typed():
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
    assert not math.isnan(A.Jitter(0.0).sigma)
