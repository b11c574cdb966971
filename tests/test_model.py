import json

import numpy as np
import pytest
import torch

import tscl
from tscl.errors import CheckpointError, ConfigError, DataError
from tscl.model import ts2vec_n_iters

TINY = dict(output_dims=16, hidden_dims=8, depth=2, device="cpu")


def tiny(**kw):
    return tscl.ContrastiveModel(**{**TINY, **kw})


@pytest.fixture(scope="module")
def panel():
    rng = np.random.default_rng(0)
    t = np.arange(64)
    X = np.stack([np.sin(t / (3 + i % 5))[:, None] + 0.1 * rng.standard_normal((64, 1)) for i in range(12)])
    return X.astype(np.float32)


@pytest.fixture(scope="module")
def fitted(panel):
    return tiny(seed=0).fit(panel, n_iters=6, progress=False)


def test_fit_records_losses_and_infers_input_dims(fitted):
    assert fitted.input_dims == 1 and fitted.n_iters_ == 6
    assert len(fitted.losses_) == 6 and all(np.isfinite(fitted.losses_))


@pytest.mark.parametrize(
    "window,shape", [(None, (12, 64, 16)), ("full_series", (12, 16)), (5, (12, 64, 16)), (4, (12, 64, 16))]
)
def test_encode_shapes(fitted, panel, window, shape):
    Z = fitted.encode(panel, encoding_window=window)
    assert Z.shape == shape and np.isfinite(Z).all()


def test_full_series_is_max_over_steps(fitted, panel):
    per_step = fitted.encode(panel)
    np.testing.assert_allclose(
        fitted.encode(panel, encoding_window="full_series"), per_step.max(axis=1), rtol=1e-6
    )


def test_causal_sliding_encoding_has_no_look_ahead(fitted, panel):
    x = panel[:2]
    z = fitted.encode(x, causal=True, sliding_length=1, sliding_padding=10, batch_size=7)
    assert z.shape == (2, 64, 16)
    t = 30
    x2 = x.copy()
    x2[:, t + 1 :] = 50.0  # change the whole future after t
    z2 = fitted.encode(x2, causal=True, sliding_length=1, sliding_padding=10, batch_size=7)
    np.testing.assert_array_equal(z[:, : t + 1], z2[:, : t + 1])
    assert not np.allclose(z[:, t + 1 :], z2[:, t + 1 :])
    # step t sees exactly steps t-10..t: changing step t-11 does not matter, changing t-10 does
    x3 = x.copy()
    x3[:, t - 11] += 5.0
    np.testing.assert_array_equal(
        fitted.encode(x3, causal=True, sliding_length=1, sliding_padding=10)[:, t], z[:, t]
    )
    x4 = x.copy()
    x4[:, t - 10] += 5.0
    assert not np.allclose(
        fitted.encode(x4, causal=True, sliding_length=1, sliding_padding=10)[:, t], z[:, t]
    )


def test_sliding_window_matches_explicit_windows(fitted, panel):
    x = panel[:1]
    z = fitted.encode(x, causal=True, sliding_length=1, sliding_padding=5)
    t = 20
    direct = fitted.encode(x[:, t - 5 : t + 1])[:, -1]
    np.testing.assert_allclose(z[:, t], direct, rtol=1e-5, atol=1e-6)
    # the first steps see NaN-padded (missing) context
    first = fitted.encode(np.concatenate([np.full((1, 5, 1), np.nan, np.float32), x[:, :1]], axis=1))[:, -1]
    np.testing.assert_allclose(z[:, 0], first, rtol=1e-5, atol=1e-6)


def test_seed_zero_twice_is_identical(panel):
    a = tiny(seed=0).fit(panel, n_iters=4, progress=False)
    b = tiny(seed=0).fit(panel, n_iters=4, progress=False)
    np.testing.assert_array_equal(a.encode(panel), b.encode(panel))
    assert a.losses_ == b.losses_
    c = tiny(seed=1).fit(panel, n_iters=4, progress=False)
    assert not np.array_equal(a.encode(panel), c.encode(panel))


def test_save_load_round_trip_is_bit_identical(fitted, panel, tmp_path):
    fitted.save(tmp_path / "enc")
    loaded = tscl.load(tmp_path / "enc")
    np.testing.assert_array_equal(loaded.encode(panel), fitted.encode(panel))
    np.testing.assert_array_equal(
        loaded.encode(panel, causal=True, sliding_length=1, sliding_padding=8),
        fitted.encode(panel, causal=True, sliding_length=1, sliding_padding=8),
    )
    assert loaded.get_params() == fitted.get_params()
    assert loaded.losses_ == pytest.approx(fitted.losses_)


def test_load_refuses_pickles_and_tampering(fitted, tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="pickle"):
        tscl.load(tmp_path / "model.pt")
    d = tmp_path / "enc"
    fitted.save(d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["config"]["params"]["hidden_dims"] = 9  # disagrees with the tensors
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError):
        tscl.load(d)
    fitted.save(d)
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256|tamper"):
        tscl.load(d)


def test_load_refuses_unknown_params(fitted, tmp_path):
    d = tmp_path / "enc"
    fitted.save(d)
    from tscl.io import load_checkpoint, save_checkpoint

    cfg, tensors = load_checkpoint(d)
    cfg["config"]["params"]["evil"] = 1
    save_checkpoint(d, kind="ContrastiveModel", config=cfg["config"], tensors=tensors)
    with pytest.raises(CheckpointError, match="unknown parameters"):
        tscl.load(d)


def test_missing_values_are_handled(panel):
    X = panel.copy()
    X[0, :10] = np.nan
    X[3, 40:] = np.nan
    m = tiny(seed=0).fit(X, n_iters=3, progress=False)
    assert np.isfinite(m.encode(X)).all()


def test_bad_inputs_raise_typed_errors(fitted, panel):
    with pytest.raises(DataError, match="channels"):
        fitted.encode(np.zeros((2, 10, 3), np.float32))
    with pytest.raises(DataError):
        fitted.encode(np.zeros((2, 10), np.float32))
    with pytest.raises(DataError, match="inf"):
        bad = panel.copy()
        bad[0, 0, 0] = np.inf
        tiny().fit(bad, n_iters=1, progress=False)
    with pytest.raises(ConfigError, match="encoding_window"):
        fitted.encode(panel, encoding_window="weird")
    with pytest.raises(ConfigError, match="not fitted"):
        tiny().encode(panel)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"encoder": "lstm"}, "encoder"),
        ({"loss": "nope"}, "loss"),
        ({"augmenter": "x"}, "augmenter"),
        ({"precision": "8"}, "precision"),
        ({"lr": -1.0}, "lr"),
        ({"augmenter_kwargs": {"zzz": 1}}, "augmenter_kwargs"),
    ],
)
def test_bad_params(kw, match):
    with pytest.raises(ConfigError, match=match):
        tscl.ContrastiveModel(**kw)


def test_iteration_rule_and_epochs(panel):
    assert ts2vec_n_iters(100_000) == 200 and ts2vec_n_iters(100_001) == 600
    m = tiny(batch_size=5).fit(panel, n_epochs=2, progress=False)
    assert m.n_iters_ == 2 * (12 // 5)


def test_batches_are_epoch_permutations(fitted):
    mod = fitted.module_
    per_epoch = 12 // mod.batch_size
    idx = torch.cat([mod.batch_indices(k) for k in range(per_epoch)])
    assert len(set(idx.tolist())) == len(idx) == per_epoch * mod.batch_size  # no repeats within an epoch
    assert torch.equal(mod.batch_indices(3), mod.batch_indices(3))


@pytest.mark.parametrize("encoder", ["tcn", "transformer"])
@pytest.mark.parametrize("loss", ["hierarchical", "ntxent"])
def test_encoders_and_losses_train(panel, encoder, loss):
    m = tiny(encoder=encoder, loss=loss, augmenter_kwargs={"transforms": ["jitter", "scaling"]})
    m.fit(panel, n_iters=3, progress=False)
    assert np.isfinite(m.losses_).all() and m.encode(panel[:2]).shape == (2, 64, 16)


def test_two_pass_mode_and_bf16(panel):
    a = tiny(single_pass=False).fit(panel, n_iters=2, progress=False)
    b = tiny(precision="bf16-mixed").fit(panel, n_iters=2, progress=False)
    assert np.isfinite(a.losses_).all() and np.isfinite(b.losses_).all()
    assert np.isfinite(b.encode(panel)).all()


def test_training_improves_the_loss(panel):
    m = tiny(seed=0).fit(panel, n_iters=40, progress=False)
    assert np.mean(m.losses_[-10:]) < np.mean(m.losses_[:10])


def test_scale_option_is_saved_and_applied(panel, tmp_path):
    X = panel * 10 + 3
    m = tiny(scale=True).fit(X, n_iters=2, progress=False)
    assert m.scaler_ is not None and abs(float(m.scaler_.mean_[0]) - float(np.nanmean(X))) < 1e-3
    m.save(tmp_path / "s")
    loaded = tscl.load(tmp_path / "s")
    np.testing.assert_allclose(loaded.scaler_.mean_, m.scaler_.mean_)
    np.testing.assert_array_equal(loaded.encode(X), m.encode(X))
    # encode applies the training scaler: equivalent to an unscaled model fed pre-scaled data
    assert not np.array_equal(m.encode(X), m.encode(panel))


def test_causal_encoding_with_pooling_window_has_no_look_ahead(fitted, panel):
    x = panel[:1]
    z = fitted.encode(x, causal=True, sliding_length=1, sliding_padding=8, encoding_window=5)
    x2 = x.copy()
    x2[:, 40:] = 50.0
    z2 = fitted.encode(x2, causal=True, sliding_length=1, sliding_padding=8, encoding_window=5)
    np.testing.assert_array_equal(z[:, :40], z2[:, :40])


def test_swa_average_includes_the_initial_weights(panel):
    m = tiny(seed=0)
    m.fit(panel, n_iters=1, progress=False)
    mod = m.module_
    assert int(mod.swa.n_averaged) == 2  # w_0 and w_1, as TS2Vec's AveragedModel
    w1 = dict(mod.encoder.named_parameters())["input_fc.weight"].detach()
    avg = dict(mod.swa.module.named_parameters())["input_fc.weight"].detach()
    assert not torch.equal(avg, w1)  # the average is not just the last weights


def test_weight_average_equals_torch_averaged_model():
    """The lean CPU update of the weight average gives bit-identical averages to torch's AveragedModel (same state
    dict keys), and it is the equal-weight mean of w_0 .. w_n."""
    from torch.optim.swa_utils import AveragedModel

    from tscl.encoders.tcn import TCNEncoder
    from tscl.methods.pretrain import _swa_update, weight_average

    torch.manual_seed(0)
    enc = TCNEncoder(2, output_dims=8, hidden_dims=8, depth=2)
    ours = weight_average(enc)
    ref = AveragedModel(enc, multi_avg_fn=_swa_update)
    ref.update_parameters(enc)
    history = [[p.detach().clone() for p in enc.parameters()]]
    for _ in range(30):
        with torch.no_grad():
            for p in enc.parameters():
                p.add_(torch.randn_like(p))
        history.append([p.detach().clone() for p in enc.parameters()])
        ours.update_parameters(enc)
        ref.update_parameters(enc)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert int(ours.n_averaged) == 31
    for i, p in enumerate(ours.module.parameters()):
        mean = torch.stack([h[i] for h in history]).mean(0)
        torch.testing.assert_close(p.detach(), mean, rtol=1e-4, atol=1e-4)


def test_training_loss_is_logged_as_a_running_mean_every_few_steps(panel, monkeypatch):
    """``loss`` is logged every ``log_every`` steps (and at the first and last) as the mean of the recent steps;
    every step's loss stays in ``losses_``."""
    from tscl.methods.pretrain import ContrastivePretraining

    logged = []
    real = ContrastivePretraining.log

    def spy(self, name, value, *args, **kwargs):
        if name == "loss":
            logged.append((int(self.global_step) + 1, float(value)))
        return real(self, name, value, *args, **kwargs)

    monkeypatch.setattr(ContrastivePretraining, "log", spy)
    m = tiny(seed=0)
    m.fit(panel, n_iters=25, progress=False)
    assert [s for s, _ in logged] == [1, 10, 20, 25]
    losses = m.losses_
    assert len(losses) == 25
    for step, value in logged:
        assert value == pytest.approx(float(np.mean(losses[max(step - 10, 0) : step])), rel=1e-6)
    assert float(m.module_.trainer.callback_metrics["loss"]) == pytest.approx(np.mean(losses[15:]), rel=1e-6)


def test_pairwise_loss_needs_two_series():
    with pytest.raises(ConfigError, match="at least 2 training series"):
        tiny(loss="ntxent").fit(np.random.randn(1, 50, 1).astype(np.float32), n_iters=1, progress=False)


def test_fit_leaves_the_global_rng_alone(panel):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny().fit(panel, n_iters=2, progress=False)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("encoder", ["tcn", "cost", "transformer"])
@pytest.mark.parametrize("length,causal", [(1, True), (3, True), (2, False)])
def test_sliding_encoding_equals_encoding_each_window(encoder, length, causal):
    """Encoders that take ``window=`` (TCN, CoST) compute only the target steps of each sliding window; the result
    is the same as encoding every window in full (NaN context before the start) and slicing."""
    kw = {"encoder_kwargs": {"kernels": [1, 2, 16]}} if encoder == "cost" else {}
    m = tscl.ContrastiveModel(encoder=encoder, seed=0, **TINY, **kw).fit(
        np.random.default_rng(0).standard_normal((3, 40, 2)).astype(np.float32), n_iters=2, progress=False
    )
    x = np.random.default_rng(1).standard_normal((2, 30, 2)).astype(np.float32)
    pad = 20
    z = m.encode(x, causal=causal, sliding_length=length, sliding_padding=pad, batch_size=5)
    right = 0 if causal else pad
    xp = np.concatenate(
        [np.full((2, pad, 2), np.nan, np.float32), x, np.full((2, pad + length, 2), np.nan, np.float32)], 1
    )
    for t in (0, 6, 27):
        s = t - t % length  # the window holding step t starts at s
        direct = m.encode(xp[:, s : s + pad + length + right])[:, pad + t - s]
        np.testing.assert_allclose(z[:, t], direct, rtol=1e-4, atol=1e-5)
    pooled = m.encode(
        x, causal=causal, sliding_length=length, sliding_padding=pad, encoding_window="full_series"
    )
    np.testing.assert_allclose(pooled, z.max(axis=1), rtol=1e-6)
