import math

import pytest
import torch

from tscl import losses
from tscl.errors import ConfigError, DataError


def ntxent_slow(z1, z2, tau=1.0, normalize=False):
    """Loop-over-pairs NT-Xent (2N anchors; positives = the other view; every other row a negative)."""
    if normalize:
        z1 = z1 / z1.norm(dim=-1, keepdim=True)
        z2 = z2 / z2.norm(dim=-1, keepdim=True)
    z = torch.cat([z1, z2])
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        num = math.exp(float(z[i] @ z[pos]) / tau)
        den = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(2 * n) if j != i)
        total += -math.log(num / den)
    return total / (2 * n)


def hierarchical_slow(z1, z2, alpha=0.5, temporal_unit=0):
    """TS2Vec's Algorithm 1 written with explicit loops over time steps and series."""
    total, d = 0.0, 0
    while z1.shape[1] > 1:
        B, T = z1.shape[:2]
        if alpha != 0 and B > 1:
            total += alpha * sum(ntxent_slow(z1[:, t], z2[:, t]) for t in range(T)) / T
        if d >= temporal_unit and alpha != 1:
            total += (1 - alpha) * sum(ntxent_slow(z1[b], z2[b]) for b in range(B)) / B
        d += 1
        z1 = torch.nn.functional.max_pool1d(z1.transpose(1, 2), 2).transpose(1, 2)
        z2 = torch.nn.functional.max_pool1d(z2.transpose(1, 2), 2).transpose(1, 2)
    if z1.shape[1] == 1:
        if alpha != 0 and z1.shape[0] > 1:
            total += alpha * ntxent_slow(z1[:, 0], z2[:, 0])
        d += 1
    return total / d


@pytest.mark.parametrize("normalize,tau", [(False, 1.0), (True, 0.3)])
def test_ntxent_matches_loop_reference(normalize, tau):
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    got = losses.get("ntxent", temperature=tau, normalize=normalize)(z1, z2)
    assert float(got) == pytest.approx(ntxent_slow(z1, z2, tau, normalize), rel=1e-6)


def test_infonce_matches_loop_reference():
    torch.manual_seed(1)
    z1, z2 = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    tau = 0.5
    s = (z1 / z1.norm(dim=1, keepdim=True)) @ (z2 / z2.norm(dim=1, keepdim=True)).T / tau
    l12 = sum(-s[i, i] + torch.logsumexp(s[i], 0) for i in range(5)) / 5
    l21 = sum(-s[i, i] + torch.logsumexp(s[:, i], 0) for i in range(5)) / 5
    got = losses.get("infonce", temperature=tau)(z1, z2)
    assert float(got) == pytest.approx(float((l12 + l21) / 2), rel=1e-9)


@pytest.mark.parametrize("B,T,alpha,unit", [(4, 9, 0.5, 0), (3, 16, 0.3, 1), (1, 7, 0.5, 0), (5, 1, 0.5, 0)])
def test_hierarchical_matches_ts2vec_algorithm(B, T, alpha, unit):
    torch.manual_seed(2)
    z1, z2 = torch.randn(B, T, 6, dtype=torch.float64), torch.randn(B, T, 6, dtype=torch.float64)
    got = losses.get("hierarchical", alpha=alpha, temporal_unit=unit)(z1, z2)
    assert float(got) == pytest.approx(hierarchical_slow(z1, z2, alpha, unit), rel=1e-6)


@pytest.mark.parametrize(
    "B,T,kw",
    [
        (4, 37, {}),
        (3, 16, {"alpha": 0.3, "temporal_unit": 2}),
        (1, 9, {}),
        (5, 1, {}),
        (4, 11, {"alpha": 0.0}),
        (4, 11, {"alpha": 1.0}),
        (4, 13, {"instance_loss_kwargs": {"temperature": 0.5}, "temporal_loss_kwargs": {"temperature": 2.0}}),
    ],
)
def test_fused_ts2vec_loss_equals_the_per_level_graph(B, T, kw):
    """The one-node NT-Xent hierarchy gives the value and gradients of the generic per-level autograd path."""
    torch.manual_seed(6)
    f = losses.get("hierarchical", **kw)
    assert f._fused is not None
    z1 = torch.randn(B, T, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(B, T, 5, dtype=torch.float64, requires_grad=True)
    fast = f(z1, z2)
    slow = f._levels(z1, z2)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    g_fast = torch.autograd.grad(fast * 1.7, (z1, z2))
    g_slow = torch.autograd.grad(slow * 1.7, (z1, z2))
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # Other terms (or a learnable temperature) take the generic path.
    assert losses.get("hierarchical", instance_loss="dcl")._fused is None
    assert losses.get("hierarchical", instance_loss_kwargs={"learnable_temperature": True})._fused is None


def test_gradcheck_double():
    torch.manual_seed(3)
    z1 = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(losses.get("hierarchical"), (z1, z2))
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(losses.get("ntxent", temperature=0.5), (a, b))
    assert torch.autograd.gradcheck(losses.get("infonce", temperature=0.5), (a, b))


def test_invariant_to_permuting_the_batch():
    torch.manual_seed(4)
    z1, z2 = torch.randn(6, 8, 4), torch.randn(6, 8, 4)
    perm = torch.randperm(6)
    for name in ("hierarchical",):
        f = losses.get(name)
        torch.testing.assert_close(f(z1, z2), f(z1[perm], z2[perm]))
    f = losses.get("ntxent")
    torch.testing.assert_close(f(z1[:, 0], z2[:, 0]), f(z1[perm, 0], z2[perm, 0]))


def test_bf16_close_to_fp32():
    torch.manual_seed(5)
    z1, z2 = torch.randn(8, 32, 16), torch.randn(8, 32, 16)
    f = losses.get("hierarchical")
    ref = f(z1, z2)
    got = f(z1.bfloat16(), z2.bfloat16())
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(ref), rel=0.05)


def test_errors():
    with pytest.raises(ConfigError, match="unknown loss"):
        losses.get("nope")
    with pytest.raises(ConfigError, match="temperature"):
        losses.get("ntxent", temperature=0)
    with pytest.raises(ConfigError, match="alpha"):
        losses.get("hierarchical", alpha=2)
    with pytest.raises(DataError, match="same shape"):
        losses.get("ntxent")(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(DataError, match="at least 2"):
        losses.get("infonce")(torch.randn(1, 3), torch.randn(1, 3))


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_tiled_logsumexp_matches_dense_values_and_gradients(chunk):
    from tscl.losses.functional import exclusive_logsumexp

    torch.manual_seed(6)
    z = torch.randn(2, 10, 4, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    dense = exclusive_logsumexp(z, scale)
    tiled = exclusive_logsumexp(z, scale, chunk=chunk)
    torch.testing.assert_close(tiled, dense)
    w = torch.randn(2, 10, dtype=torch.float64)
    gd = torch.autograd.grad((dense * w).sum(), (z, scale))
    gt = torch.autograd.grad((tiled * w).sum(), (z, scale))
    torch.testing.assert_close(gt[0], gd[0])
    torch.testing.assert_close(gt[1], gd[1])
    assert torch.autograd.gradcheck(lambda a, b: exclusive_logsumexp(a, b, chunk=chunk), (z, scale))


def _exclusive_lse_reference(z, w, pair):
    """The dense formula in float64 with autograd: ``lse_i = log sum_{j != i (, partner)} exp(z_i . z_j)`` and the
    gradient of ``sum(w * lse)``."""
    M = z.shape[1]
    z64 = z.detach().double().requires_grad_()
    s = z64 @ z64.transpose(1, 2)
    i = torch.arange(M)
    excl = i[:, None] == i[None, :]
    if pair:
        excl |= (i[:, None] - i[None, :]).abs() == M // 2
    ref = torch.logsumexp(s.masked_fill(excl, float("-inf")), -1)
    (gref,) = torch.autograd.grad((ref * w.double()).sum(), z64)
    return ref.detach(), gref


@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("chunk", [3, 7, 16])
@pytest.mark.parametrize("weights", ["positive", "mixed"])
def test_tiled_logsumexp_unit_scale_float32_matches_reference(chunk, pair, weights):
    """The tiled path at TS2Vec's setting (float32, scale exactly 1, positive upstream gradients: the in-place
    fast path) and with mixed-sign gradients (the general path) against autograd through the dense formula in
    float64, including tiles that hold the diagonal and the partner diagonal."""
    from tscl.losses.functional import exclusive_logsumexp

    torch.manual_seed(11)
    M = 14
    z = torch.randn(2, M, 5, requires_grad=True)
    w = torch.rand(2, M) + 0.1 if weights == "positive" else torch.randn(2, M)
    got = exclusive_logsumexp(z, 1.0, chunk=chunk, exclude_pair=pair)
    (gz,) = torch.autograd.grad((got * w).sum(), z)
    ref, gref = _exclusive_lse_reference(z, w, pair)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gz.double(), gref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("weights", ["positive", "mixed"])
def test_tiled_logsumexp_bf16_products_pad_tiles_and_match_reference(pair, weights):
    """Inside ``bf16_score_products`` (the hierarchical loss on a bf16 encoder's outputs) the tile products run
    with bf16 arithmetic on zero-padded, equal-shaped tiles: on bf16-exact inputs the values match the float64
    formula to float32 accuracy, the gradients to bf16 accuracy, the padding never leaks, and oneDNN's matmul
    precision is restored afterwards."""
    import tscl.losses.functional as F

    torch.manual_seed(12)
    M, chunk = 22, 8  # 22 rows: 3 tiles of 8, the last padded with two zero rows
    z = torch.randn(2, M, 16).bfloat16().float().requires_grad_()
    w = torch.rand(2, M) + 0.1 if weights == "positive" else torch.randn(2, M)
    before = torch.backends.mkldnn.matmul.fp32_precision
    shapes = []
    real = F._pad_for_tiles
    F._pad_for_tiles = lambda x, c, pad: (lambda out: shapes.append(out[0].shape[1]) or out)(real(x, c, pad))
    try:
        with F.bf16_score_products():
            got = F.exclusive_logsumexp(z, 1.0, chunk=chunk, exclude_pair=pair)
        (gz,) = torch.autograd.grad((got * w).sum(), z)
    finally:
        F._pad_for_tiles = real
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    if torch.backends.mkldnn.is_available():
        assert shapes == [24, 24]  # forward and backward on padded tiles
    ref, gref = _exclusive_lse_reference(z, w, pair)
    assert got.shape == (2, M) and gz.shape == z.shape
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gz.double(), gref, rtol=2e-2, atol=2e-2)


def test_chunked_ntxent_equals_dense_and_handles_bf16():
    torch.manual_seed(7)
    z1, z2 = torch.randn(3, 600, 8), torch.randn(3, 600, 8)  # 2N = 1200 -> tiled automatically
    dense = losses.get("ntxent", temperature=1.0, normalize=False, chunk_size=None)
    a = dense(z1, z2)
    b = losses.NTXentLoss(1.0, normalize=False, chunk_size=100000)(z1[:, :10], z2[:, :10])  # one tile
    c = losses.NTXentLoss(1.0, normalize=False)(z1[:, :10], z2[:, :10])
    torch.testing.assert_close(b, c)
    # reference: the dense formula written out
    z = torch.cat([z1, z2], 1)
    s = z @ z.transpose(1, 2)
    s = s.masked_fill(torch.eye(1200, dtype=torch.bool), float("-inf"))
    ref = torch.logsumexp(s, -1).mean() - (z1 * z2).sum(-1).mean()
    torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-4)
    got = dense(z1.bfloat16(), z2.bfloat16())
    assert float(got) == pytest.approx(float(ref), rel=0.02)


def _global_local_slow(z1, z2, beta, K, off):
    """Loop-per-row reference of GlobalLocalInfoNCELoss (the docstring's formulas)."""
    import math

    B, T, D = z1.shape
    g1 = [v / v.norm() for v in z1.amax(1)]
    g2 = [v / v.norm() for v in z2.amax(1)]
    glob = 0.0
    for i in range(B):
        s = [float(g1[i] @ g2[j]) for j in range(B)]
        glob += -s[i] + math.log(sum(math.exp(v) for v in s))
    glob /= B
    c = T // K
    loc = 0.0
    for b in range(B):
        zn = z1[b] / z1[b].norm(dim=-1, keepdim=True)
        u = [zn[off + k * c : off + (k + 1) * c].amax(0) for k in range(K)]
        for k in range(K):
            p = k + 1 if k < K - 1 else K - 2
            negs = [
                j
                for j in range(K)
                if abs(j - k) > 1 and not (k == 0 and j == 2) and not (k == K - 1 and j == K - 3)
            ]
            assert len(negs) == K - 3
            sp = float(u[k] @ u[p])
            loc += -sp + math.log(math.exp(sp) + sum(math.exp(float(u[k] @ u[j])) for j in negs))
    loc /= B * K
    return glob + beta * loc


@pytest.mark.parametrize("B,T,K", [(4, 37, 4), (3, 64, 16), (2, 50, 6)])
def test_global_local_matches_reference(B, T, K):
    torch.manual_seed(7)
    z1, z2 = torch.randn(B, T, 5, dtype=torch.float64), torch.randn(B, T, 5, dtype=torch.float64)
    f = losses.get("global_local", local_weight=0.3, n_segments=K)
    torch.manual_seed(11)
    got = float(f(z1, z2))
    torch.manual_seed(11)
    off = int(torch.randint(T - K * (T // K) + 1, ()).item())
    assert got == pytest.approx(_global_local_slow(z1, z2, 0.3, K, off), rel=1e-9)
    if K == 4:
        a, b = z1[:2, :12].clone().requires_grad_(True), z2[:2, :12].clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a, b: (torch.manual_seed(3), f(a, b))[1], (a, b))


def test_global_local_edge_cases_and_errors():
    f = losses.get("global_local")
    assert float(f(torch.randn(1, 2, 4), torch.randn(1, 2, 4))) == 0.0  # one series, too short for segments
    assert "global_local" in losses.SEQUENCE_LOSSES
    with pytest.raises(ConfigError, match="n_segments"):
        losses.get("global_local", n_segments=3)
    with pytest.raises(ConfigError, match=r"\(B, T, D\)"):
        f(torch.randn(4, 3), torch.randn(4, 3))


def test_fused_losses_refuse_second_derivatives():
    """Hand-written backwards reuse forward-time intermediates: asking for a graph of the gradient (a gradient
    penalty, say) raises instead of returning a silently wrong or constant one."""
    z1 = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
    loss = losses.get("hierarchical")(z1, z2)
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(loss, z1, create_graph=True)
