import pytest
import torch
import torch.nn.functional as F

from tscl import encoders
from tscl.encoders.tcn import DilatedConvBlock
from tscl.errors import ConfigError


@pytest.mark.parametrize("name", ["tcn", "transformer"])
def test_shapes_and_registry(name):
    enc = encoders.get(name, input_dims=3, output_dims=16, hidden_dims=8, depth=2)
    z = enc(torch.randn(4, 37, 3))
    assert z.shape == (4, 37, 16)
    assert torch.isfinite(z).all()


def test_ts2vec_architecture_defaults():
    enc = encoders.get("tcn", input_dims=1)
    # input projection + 10 hidden blocks + 1 output block, dilations 1..1024, kernel 3, hidden 64, out 320
    assert enc.input_fc.out_features == 64
    assert len(enc.blocks) == 11
    assert [b.conv1.dilation[0] for b in enc.blocks] == [2**i for i in range(11)]
    assert enc.blocks[-1].conv2.out_channels == 320 and enc.blocks[-1].projector is not None
    assert all(b.projector is None for b in enc.blocks[:-1])
    assert enc.receptive_field == 1 + sum(4 * 2**i for i in range(11))


def test_unknown_encoder_and_bad_option():
    with pytest.raises(ConfigError, match="unknown encoder"):
        encoders.get("lstm", input_dims=1)
    with pytest.raises(ConfigError, match="bad option"):
        encoders.get("tcn", input_dims=1, nonsense=3)


@pytest.mark.parametrize("T", [3, 8, 9, 40])
@pytest.mark.parametrize("dilation", [1, 4, 8, 64])
def test_centre_tap_shortcut_equals_full_convolution(T, dilation):
    torch.manual_seed(0)
    blk = DilatedConvBlock(5, 6, 3, dilation=dilation)
    x = torch.randn(2, 5, T)
    full = F.conv1d(x, blk.conv1.weight, blk.conv1.bias, padding=dilation, dilation=dilation)
    x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # the blocks' activation layout
    torch.testing.assert_close(blk._same(blk.conv1, x4).squeeze(2), full, rtol=1e-5, atol=1e-6)


def test_missing_steps_are_zeroed_after_projection():
    torch.manual_seed(0)
    enc = encoders.get("tcn", input_dims=2, output_dims=8, hidden_dims=4, depth=1).eval()
    x = torch.randn(1, 10, 2)
    x_nan = x.clone()
    x_nan[0, 3] = float("nan")
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 3] = False
    # a NaN step behaves exactly like a masked step
    torch.testing.assert_close(enc(x_nan), enc(x, mask))
    assert torch.isfinite(enc(x_nan)).all()


def test_transformer_ignores_missing_keys():
    torch.manual_seed(0)
    enc = encoders.get("transformer", input_dims=1, output_dims=8, hidden_dims=8, depth=1).eval()
    x = torch.randn(1, 12, 1)
    a, b = x.clone(), x.clone()
    a[0, 5], b[0, 5] = float("nan"), float("nan")
    b[0, 5] = float("nan")
    out_a = enc(a)
    # the value behind a missing step cannot matter; and nothing becomes NaN
    assert torch.isfinite(out_a).all()
    x2 = x.clone()
    x2[0, 5] = 100.0
    x2[0, 5] = float("nan")
    torch.testing.assert_close(enc(x2), out_a)
    # all-missing rows do not produce NaN either
    assert torch.isfinite(enc(torch.full((1, 4, 1), float("nan")))).all()


def test_gradients_reach_every_parameter():
    enc = encoders.get("tcn", input_dims=2, output_dims=8, hidden_dims=4, depth=3)
    enc(torch.randn(2, 20, 2)).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


@pytest.mark.parametrize("name", ["tcn", "transformer"])
def test_single_pass_layout_equals_separate_passes(name):
    """Both views in one padded batch give exactly the per-view outputs (TS2Vec encodes them separately)."""
    from tscl.augment import OverlapCrop, crop_pair_padded, take_per_row

    torch.manual_seed(0)
    enc = encoders.get(name, input_dims=2, output_dims=8, hidden_dims=8, depth=4).eval()
    x = torch.randn(3, 40, 2)
    for seed in range(5):
        p = OverlapCrop().sample(3, 40, generator=torch.Generator().manual_seed(seed))
        views, layout = crop_pair_padded(x, p)
        z1, z2 = layout.split_overlap(enc(views, valid=layout.valid))
        r1 = enc(take_per_row(x, p.start1, p.len1))[:, -p.crop_l :]
        r2 = enc(take_per_row(x, p.start2, p.len2))[:, : p.crop_l]
        torch.testing.assert_close(z1, r1, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(z2, r2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tcn", "transformer", "cost"])
def test_encode_overlap_equals_slicing_the_full_output(name):
    """The TCN computes its trailing per-step blocks on the overlap only (``window=``); values and gradients are
    those of slicing the full output. Other encoders take the plain path through the same call."""
    from tscl.augment import OverlapCrop, crop_pair_padded

    torch.manual_seed(0)
    enc = encoders.get(name, input_dims=2, output_dims=8, hidden_dims=8, depth=6).double().eval()
    x = torch.randn(3, 90, 2, dtype=torch.float64)
    cuts = set()
    for seed in range(8):
        p = OverlapCrop().sample(3, 90, generator=torch.Generator().manual_seed(seed))
        views, layout = crop_pair_padded(x, p)
        if name == "tcn":
            cuts.add(enc.pointwise_from(layout.L))
        full = layout.split_overlap(enc(views, valid=layout.valid))
        fast = layout.encode_overlap(enc, views)
        for a, b in zip(full, fast, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        g_full = torch.autograd.grad(sum(z.square().sum() for z in full), list(enc.parameters()))
        g_fast = torch.autograd.grad(sum(z.square().sum() for z in fast), list(enc.parameters()))
        for a, b in zip(g_full, g_fast, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if (
        name == "tcn"
    ):  # the draws exercise both a real cut (trailing per-step blocks) and the slice-at-the-end path
        assert len(cuts) > 1 and max(cuts) <= len(enc.blocks)


def test_tcn_bf16_training_window_is_bucketed_and_equals_slicing(monkeypatch):
    """Training under bf16 on the CPU, the TCN runs its per-step blocks on a bucketed number of steps (oneDNN reuses
    its bf16 kernels); the window's values and gradients equal those of slicing the full output, and the extra
    steps never reach the output. Outside training, or in float32, nothing is padded."""
    import tscl.encoders.tcn as tcn
    from tscl.augment import OverlapCrop, crop_pair_padded

    torch.manual_seed(0)
    enc = encoders.get("tcn", input_dims=2, output_dims=8, hidden_dims=8, depth=6, dropout=0.0).train()
    x = torch.randn(3, 90, 2)
    seen = []
    real = tcn._bucket_window
    monkeypatch.setattr(tcn, "_bucket_window", lambda index: seen.append(index.shape[1]) or real(index))
    for seed in range(6):
        p = OverlapCrop().sample(3, 90, generator=torch.Generator().manual_seed(seed))
        views, layout = crop_pair_padded(x, p)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            full = layout.split_overlap(enc(views, valid=layout.valid))
            fast = layout.encode_overlap(enc, views)
        for a, b in zip(full, fast, strict=True):
            assert a.shape == b.shape == (3, p.crop_l, 8)
            torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)
        g_full = torch.autograd.grad(sum(z.float().square().sum() for z in full), list(enc.parameters()))
        g_fast = torch.autograd.grad(sum(z.float().square().sum() for z in fast), list(enc.parameters()))
        for a, b in zip(g_full, g_fast, strict=True):
            torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2)
    assert seen, "the bf16 training path must bucket the window"
    assert real(torch.arange(17)[None]).shape[1] == 32  # bucket_length(17)
    n = len(seen)
    enc.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc(x, window=(torch.zeros(3, dtype=torch.long), 1))
    enc.train()
    enc(x, window=(torch.zeros(3, dtype=torch.long), 5))  # float32
    assert len(seen) == n


def test_tcn_window_is_checked():
    enc = encoders.get("tcn", input_dims=1, output_dims=4, hidden_dims=4, depth=2)
    x = torch.randn(2, 10, 1)
    assert enc(x, window=(torch.tensor([0, 7]), 3)).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="outside"):
        enc(x, window=(torch.tensor([0, 8]), 3))
    with pytest.raises(ValueError, match="window must be"):
        enc(x, window=(torch.tensor([0]), 3))


@pytest.mark.parametrize("K,T", [(16, 1), (16, 40), (20, 129), (128, 300), (128, 1000)])
def test_causal_conv_fft_equals_direct_convolution_and_its_gradients(K, T):
    from tscl.encoders.cost import causal_conv_fft

    g = torch.Generator().manual_seed(K + T)
    h = torch.randn(3, 6, T, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(5, 6, K, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    ref = F.conv1d(F.pad(h, (K - 1, 0)), w, b)
    got = causal_conv_fft(h, w, b)
    assert got.shape == ref.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    up = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    for a, c in zip(
        torch.autograd.grad(ref, (h, w, b), up), torch.autograd.grad(got, (h, w, b), up), strict=True
    ):
        torch.testing.assert_close(c, a, rtol=1e-9, atol=1e-9)
    # causal: the output up to t does not change when the future changes
    h2 = h.detach().clone()
    h2[..., T // 2 + 1 :] += 1.0
    torch.testing.assert_close(causal_conv_fft(h2, w, b)[..., : T // 2 + 1], got.detach()[..., : T // 2 + 1])


def test_cost_encoder_fft_path_under_bf16_autocast():
    enc = encoders.get(
        "cost", input_dims=2, output_dims=8, hidden_dims=8, depth=2, kernels=(1, 4, 16, 32)
    ).eval()
    x = torch.randn(2, 50, 2)
    with torch.no_grad():
        ref = enc(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = enc(x)
    assert got.shape == ref.shape and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), ref, rtol=0.1, atol=0.1)


def test_tcn_dropout_rate_scale_and_gradient():
    from tscl.encoders.tcn import dropout

    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    y = dropout(x, 0.1)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - 0.1) < 0.005  # 7 standard deviations
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / 0.9)))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # d(y)/d(x) = mask / (1 - p) = y for x = 1
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0) is x
    bf = dropout(torch.ones(1000, dtype=torch.bfloat16), 0.5)
    assert bf.dtype == torch.bfloat16 and set(bf.unique().tolist()) <= {0.0, 2.0}
    # the mask follows x's layout: channels-last activations stay channels-last (no strided multiply)
    h = torch.randn(4, 32, 1, 50).contiguous(memory_format=torch.channels_last)
    out = dropout(h, 0.1)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.permute(0, 2, 3, 1).is_contiguous()
    assert abs(float((out == 0).float().mean()) - 0.1) < 0.03


@pytest.mark.parametrize(
    "start,length", [((20, 31), 1), ((15, 40), 3), ((0, 9), 1), ((2, 30), 20), ((16, 16), 44)]
)
def test_cost_window_equals_slicing_the_full_output(start, length):
    """CoST with ``window=``: trunk on the window plus the experts' context, experts as one matmul (short windows) or
    an FFT convolution; windows that start inside the context use zero padding. Values and gradients as slicing."""
    torch.manual_seed(0)
    enc = encoders.get(
        "cost", input_dims=2, output_dims=6, hidden_dims=5, depth=3, kernels=(1, 4, 16)
    ).double()
    x = torch.randn(2, 60, 2, dtype=torch.float64)
    valid = torch.ones(2, 60, dtype=torch.bool)
    valid[1, 52:] = False  # a padded tail, as in a batch of unequal series
    st = torch.tensor(start)
    index = st[:, None] + torch.arange(length)
    full = enc(x, valid=valid)[torch.arange(2)[:, None], index]
    fast = enc(x, valid=valid, window=(st, length))
    assert fast.shape == (2, length, 6)
    torch.testing.assert_close(fast, full, rtol=1e-12, atol=1e-12)
    g_full = torch.autograd.grad(full.square().sum(), list(enc.parameters()))
    g_fast = torch.autograd.grad(fast.square().sum(), list(enc.parameters()))
    for a, b in zip(g_full, g_fast, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        enc(x, window=(torch.tensor([0, 59]), 2))


def test_cost_merged_kernel_is_the_mean_of_the_aligned_experts():
    enc = encoders.get("cost", input_dims=1, output_dims=3, hidden_dims=3, depth=1, kernels=(4, 1, 4, 2))
    w, b = enc.merged_kernel()
    ref = sum(F.pad(c.weight, (4 - c.kernel_size[0], 0)) for c in enc.trend) / 4
    torch.testing.assert_close(w, ref)
    torch.testing.assert_close(b, sum(c.bias for c in enc.trend) / 4)


def test_fft_convolution_refuses_second_derivatives():
    """The frequency-domain backward reuses forward-time spectra, so a second derivative would be silently wrong:
    it raises instead."""
    from tscl.encoders.cost import causal_conv_fft

    h = torch.randn(2, 3, 40, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 16, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(causal_conv_fft(h, w).square().sum(), (h, w), create_graph=True)
    assert (
        torch.autograd.grad(causal_conv_fft(h, w).square().sum(), h)[0].shape == h.shape
    )  # first order works
