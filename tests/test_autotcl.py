"""AutoTCL: learned augmenter (tscl.augment.autotcl), its training (tscl.methods.autotcl) and model integration."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import tscl
from tscl.augment.autotcl import AutoTCLAugmenter, AutoTCLObjective, mask_collapse, mmd_rbf
from tscl.errors import CheckpointError, ConfigError, DataError

TINY = dict(output_dims=16, hidden_dims=8, depth=2, batch_size=4, device="cpu")


def _panel(n=8, T=48, C=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T)[None, :, None]
    return (np.sin(t / (3 + rng.random((n, 1, C)) * 4)) + 0.1 * rng.standard_normal((n, T, C))).astype(
        np.float32
    )


def _fit(**kw):
    m = tscl.ContrastiveModel(augmenter="autotcl", **{**TINY, **kw})
    return m.fit(_panel(), n_iters=kw.pop("n_iters", 8) if "n_iters" in kw else 8, progress=False)


@pytest.fixture(scope="module")
def fitted():
    return _fit(seed=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_view_keeps_shape_dtype_and_missing(dtype):
    aug = AutoTCLAugmenter(3, hidden_dims=8, embed_dims=4, depth=1, noise_std=0.1).to(dtype)
    x = torch.randn(5, 40, 3, dtype=dtype)
    x[1, 7, 2] = float("nan")
    out = aug(x, sample=True)
    assert out.view.shape == x.shape and out.view.dtype == dtype
    assert out.mask.shape == (5, 40, 1) and out.scale.shape == (5, 40, 1)
    assert torch.isnan(out.view[1, 7, 2]) and torch.isnan(out.view).sum() == 1
    per = AutoTCLAugmenter(3, mask_channels="per_channel", depth=1)(x.float())
    assert per.mask.shape == (5, 40, 3)


def test_mask_is_binary_and_g_invertible_on_kept_part(fitted):
    aug = fitted.augmenter_
    x = torch.from_numpy(_panel(4, seed=3))
    out = aug(x, sample=True)
    assert torch.all((out.mask == 0) | (out.mask == 1))  # hard-concrete + straight-through: exactly binary
    kept = (out.mask > 0.5).expand_as(x)
    assert 0.05 < kept.float().mean() < 0.95  # neither all nor nothing after training
    x_hat = AutoTCLAugmenter.invert(out.view, out.mask, out.scale)
    assert torch.allclose(x_hat[kept], x[kept], atol=1e-5)
    assert torch.isnan(x_hat[~kept]).all()
    assert torch.all(out.scale >= 1e-3) and torch.all(out.scale <= 1)
    res = aug.explain(x.numpy(), seed=0)
    assert np.all((res["masks"] == 0) | (res["masks"] == 1))
    assert np.allclose(res["kept_fraction"], res["masks"].reshape(2, -1).mean(1))


def test_relaxed_mask_is_near_binary():
    """Without straight-through, stretch + clip puts a good share of the relaxed mask exactly at 0 or 1."""
    aug = AutoTCLAugmenter(1, depth=1, hard=False, temperature=0.1)
    h = aug(torch.randn(8, 200, 1), sample=True).mask
    near = ((h < 0.05) | (h > 0.95)).float().mean()
    assert near > 0.8, float(near)


def test_gradients_reach_augmenter_and_only_augmenter():
    m = tscl.ContrastiveModel(augmenter="autotcl", input_dims=2, seed=0, **TINY)
    mod = m._build(torch.from_numpy(_panel()))
    aug0 = {k: v.clone() for k, v in mod.augmenter.state_dict().items()}
    enc0 = {k: v.clone() for k, v in mod.encoder.state_dict().items()}
    x = mod.data[:4]
    out = mod.augmenter(x, sample=True)
    loss, parts = mod.objective(mod.encoder(x).detach(), mod.encoder(out.view), out.weight)
    grads = torch.autograd.grad(loss, list(mod.augmenter.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert set(parts) == {"mmd", "sparsity", "smooth"}
    mod.augmenter_step(x)
    assert any(not torch.equal(aug0[k], v) for k, v in mod.augmenter.state_dict().items())
    assert all(torch.equal(enc0[k], v) for k, v in mod.encoder.state_dict().items())
    assert all(p.grad is None for p in mod.encoder.parameters())
    assert all(p.requires_grad for p in mod.encoder.parameters())  # frozen for the step only


def test_seed_gives_identical_views_and_runs(fitted):
    X = _panel(3, seed=5)
    a, b = fitted.augmenter_.explain(X, seed=0), fitted.augmenter_.explain(X, seed=0)
    assert np.array_equal(a["views"], b["views"]) and np.array_equal(a["masks"], b["masks"])
    assert not np.array_equal(a["masks"], fitted.augmenter_.explain(X, seed=1)["masks"])
    again = _fit(seed=0)
    assert again.losses_ == fitted.losses_
    for (k, v), w in zip(
        fitted.augmenter_.state_dict().items(), again.augmenter_.state_dict().values(), strict=True
    ):
        assert torch.equal(v, w), k


def test_save_load_keeps_augmenter(fitted, tmp_path):
    fitted.save(tmp_path / "ck")
    m2 = tscl.load(tmp_path / "ck")
    for k, v in fitted.augmenter_.state_dict().items():
        assert torch.equal(v, m2.augmenter_.state_dict()[k]), k
    X = _panel(3, seed=2)
    assert np.array_equal(fitted.augmenter_.explain(X)["views"], m2.augmenter_.explain(X)["views"])
    assert np.allclose(
        fitted.encode(X, encoding_window="full_series"), m2.encode(X, encoding_window="full_series")
    )
    from tscl.io import load_checkpoint, save_checkpoint

    cfg, tensors = load_checkpoint(tmp_path / "ck")
    del tensors["augmenter.mask_head.bias"]
    save_checkpoint(tmp_path / "bad", kind=cfg["kind"], config=cfg["config"], tensors=tensors)
    with pytest.raises(CheckpointError, match="augmenter"):
        tscl.load(tmp_path / "bad")


def test_transformer_encoder_and_resume(tmp_path):
    X = _panel()
    m = tscl.ContrastiveModel(augmenter="autotcl", encoder="transformer", seed=1, **TINY)
    m.fit(X, n_iters=6, checkpoint_dir=tmp_path / "run", checkpoint_every=3, progress=False)
    assert len(m.losses_) == 6 and np.isfinite(m.losses_).all()
    assert m.encode(X, encoding_window="full_series").shape == (8, 16)
    full = tscl.ContrastiveModel(augmenter="autotcl", encoder="transformer", seed=1, **TINY)
    full.fit(X, n_iters=9, progress=False)
    resumed = tscl.ContrastiveModel(augmenter="autotcl", encoder="transformer", seed=1, **TINY)
    (tmp_path / "run2").mkdir()
    part = tscl.ContrastiveModel(augmenter="autotcl", encoder="transformer", seed=1, **TINY)
    part.fit(X, n_iters=9, checkpoint_dir=tmp_path / "run2", checkpoint_every=3, progress=False)
    # a second fit in the same folder resumes from last.ckpt (at step 9 = done) and keeps the weights
    resumed.fit(X, n_iters=9, checkpoint_dir=tmp_path / "run2", checkpoint_every=3, progress=False)
    for k, v in full.augmenter_.state_dict().items():
        assert torch.allclose(v, resumed.augmenter_.state_dict()[k]), k


def test_collapse_is_detected_logged_and_undone(caplog):
    m = tscl.ContrastiveModel(
        augmenter="autotcl", input_dims=2, seed=0, augmenter_kwargs={"location": "logit"}, **TINY
    )
    mod = m._build(torch.from_numpy(_panel()))
    healthy = {k: v.clone() for k, v in mod.augmenter.state_dict().items()}
    with torch.no_grad():
        mod.augmenter.mask_head.bias.fill_(50.0)  # keeps everything: a collapsed augmenter
    assert mask_collapse(mod.augmenter(mod.data[:4], sample=True).mask) == "all_ones"
    with caplog.at_level(logging.WARNING, logger="tscl.autotcl"):
        out, kind = mod.learned_view(mod.data[:4])
    assert kind == "all_ones" and mod.collapse_events == [{"step": 0, "kind": "all_ones"}]
    assert "collapsed" in caplog.text
    assert torch.equal(mod.augmenter.mask_head.bias, healthy["mask_head.bias"])
    assert mask_collapse(out.mask) is None
    with torch.no_grad():
        mod.augmenter.mask_head.bias.fill_(-50.0)
    assert mask_collapse(mod.augmenter(mod.data[:4], sample=True).mask) == "all_zeros"


def test_objective_terms():
    a = torch.randn(16, 8)
    assert float(mmd_rbf(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(mmd_rbf(a, a + 3.0)) > 0.1
    obj = AutoTCLObjective()
    z = torch.randn(4, 10, 8)
    w_low, w_high = torch.full((4, 10, 1), 0.2), torch.full((4, 10, 1), 0.9)
    _, p_low = obj(z, z, w_low)
    _, p_high = obj(z, z, w_high)
    assert p_low["sparsity"] == 0.0 and p_high["sparsity"] == pytest.approx(0.5)
    w_alt = torch.tensor([0.0, 1.0] * 5).reshape(1, 10, 1).expand(4, 10, 1)
    assert obj(z, z, w_alt)[1]["smooth"] == pytest.approx(1.0)


def test_bad_input_raises_typed_errors(fitted):
    with pytest.raises(ConfigError, match="augmenter_kwargs"):
        tscl.ContrastiveModel(augmenter="autotcl", augmenter_kwargs={"bogus": 1})
    with pytest.raises(ConfigError, match="mask_channels"):
        AutoTCLAugmenter(2, mask_channels="diagonal")
    with pytest.raises(ConfigError, match="aug_every"):
        m = tscl.ContrastiveModel(
            augmenter="autotcl", input_dims=2, augmenter_kwargs={"aug_every": 0}, **TINY
        )
        m._build(torch.from_numpy(_panel()))
    with pytest.raises(DataError, match="channels"):
        fitted.augmenter_.explain(np.zeros((2, 10, 5), dtype=np.float32))
    with pytest.raises(DataError, match="3-D"):
        fitted.augmenter_(torch.zeros(10, 2))
    fixed = tscl.ContrastiveModel(**TINY).fit(_panel(), n_iters=2, progress=False)
    with pytest.raises(ConfigError, match="autotcl"):
        _ = fixed.augmenter_


def test_cli_fit_and_plot_augment(tmp_path, capsys):
    from tscl.cli import main

    out = tmp_path / "run"
    args = ["fit", "--data", "ucr:ItalyPowerDemand", "--augmenter", "autotcl", "--n-iters", "4"]
    assert main([*args, "--output-dims", "16", "--depth", "2", "--out", str(out), "--no-progress"]) == 0
    assert main(["plot", "augment", "--checkpoint", str(out), "--out", str(tmp_path / "a.png")]) == 0
    png = (tmp_path / "a.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert main(["plot", "augment", "--checkpoint", str(out), "--index", "9999"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_bench_autotcl_runs_both_methods_in_one_run(tmp_path, capsys):
    import json

    from tscl.cli import main

    out = tmp_path / "b"
    args = ["bench", "autotcl", "--tasks", "classify", "--datasets", "ItalyPowerDemand", "--seeds", "0"]
    kw = '{"output_dims": 8, "hidden_dims": 8, "depth": 2, "lr": 0.002}'  # for both methods
    assert (
        main([*args, "--n-iters-classify", "3", "--model-kwargs", kw, "--out", str(out), "--no-progress"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "Epoch 0" not in printed  # --no-progress: no progress bar for either fit
    res = json.loads((out / "bench_autotcl.json").read_text())
    assert res["settings"]["model_kwargs"] == kw
    runs = res["classify"]
    assert [(r["method"], r["n_iters"]) for r in runs] == [("fixed", 3), ("autotcl", 3)]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in runs)
    s = res["summary"]["classify"]["ItalyPowerDemand/tcn"]
    assert s["fixed"] == runs[0]["accuracy"] and s["autotcl"] == runs[1]["accuracy"]
    assert (out / "autotcl_classify_tcn.png").exists() and (out / "bench_autotcl.partial.json").exists()
    assert "AutoTCL vs fixed" in printed


def test_bench_autotcl_cost_ratio_is_the_median_of_paired_rounds(tmp_path, monkeypatch, capsys):
    import json

    from tscl.bench import common
    from tscl.cli import main

    # seconds per iteration of each round; the rounds' ratios are 1.4, 1.1, 1.6 -> median 1.4, while the ratio of
    # the per-method medians (2.2 / 1.5) would be 1.47: the paired ratio cancels drifts that move a whole round
    times = {"fixed": [1.0, 2.0, 1.5], "autotcl": [1.4, 2.2, 2.4]}
    seen = {"fixed": 0, "autotcl": 0}

    def fake_worker(target, spec):
        assert target == "tscl.bench.autotcl:cost_worker" and spec["n_iters"] == 5
        model = spec["model"]  # the command's model settings reach the timed runs
        assert (
            model["augmenter"] == spec["method"]
            and model["precision"] == "bf16-mixed"
            and model["lr"] == 0.002
        )
        assert model.get("augmenter_kwargs") == ({"aug_every": 4} if spec["method"] == "autotcl" else None)
        k = seen[spec["method"]]
        seen[spec["method"]] += 1
        return {
            "sec_per_iter": times[spec["method"]][k],
            "fit_total_s": 1.0,
            "n_iters": 5,
            "peak_rss_gb": 0.5,
        }

    monkeypatch.setattr(common, "run_worker", fake_worker)
    out = tmp_path / "c"
    assert (
        main(
            [
                "bench",
                "autotcl",
                "--tasks",
                "cost",
                "--n-iters-cost",
                "5",
                "--repeats",
                "3",
                "--precision",
                "bf16-mixed",
                "--model-kwargs",
                '{"lr": 0.002}',
                "--augmenter-kwargs",
                '{"aug_every": 4}',
                "--out",
                str(out),
            ]
        )
        == 0
    )
    s = json.loads((out / "bench_autotcl.json").read_text())["summary"]["cost"]["GunPoint/tcn"]
    assert s["time_ratio"] == pytest.approx(1.4)
    assert s["time_ratio_rounds"] == pytest.approx([1.4, 1.1, 1.6])
    assert s["fixed"]["sec_per_iter"] == 1.5 and s["autotcl"]["sec_per_iter"] == 2.2
    assert (out / "autotcl_cost.png").exists()
    assert "1.4" in capsys.readouterr().out


def test_cost_encoder_is_mean_of_causal_experts_and_trains_with_autotcl(tmp_path):
    import torch.nn.functional as F

    from tscl.encoders import get

    enc = get("cost", input_dims=2, output_dims=8, hidden_dims=8, depth=2, kernels=(1, 2, 4, 8)).eval()
    x = torch.randn(3, 40, 2)
    h = enc.trunk(x).transpose(1, 2)
    experts = [conv(F.pad(h, (conv.kernel_size[0] - 1, 0))) for conv in enc.trend]
    assert torch.allclose(enc(x), (sum(experts) / len(experts)).transpose(1, 2), atol=1e-5)
    h2 = h.clone()
    h2[..., 30:] += 5.0  # the trend experts are causal: the future does not reach step < 30
    w, b = enc.merged_kernel()
    y1, y2 = (F.conv1d(F.pad(v, (w.shape[-1] - 1, 0)), w, b) for v in (h, h2))
    assert torch.equal(y1[..., :30], y2[..., :30]) and not torch.allclose(y1[..., 30:], y2[..., 30:])
    with pytest.raises(ConfigError, match="kernels"):
        get("cost", input_dims=2, kernels=())
    m = tscl.ContrastiveModel(
        augmenter="autotcl", encoder="cost", encoder_kwargs={"kernels": [1, 2, 4]}, **TINY
    )
    m.fit(_panel(), n_iters=3, progress=False)
    m.save(tmp_path / "c")
    X = _panel(2, seed=9)
    assert np.allclose(m.encode(X), tscl.load(tmp_path / "c").encode(X), atol=1e-5)


def test_autotcl_code_settings_with_global_local_loss():
    """AutoTCL's public-code setting: global + local InfoNCE on (x, learned view), no crops, no timestamp mask."""
    m = tscl.ContrastiveModel(
        augmenter="autotcl",
        loss="global_local",
        loss_kwargs={"n_segments": 4},
        augmenter_kwargs={"crop": False, "aug_every": 1, "mask_p": 1.0},
        **TINY,
    )
    m.fit(_panel(), n_iters=6, progress=False)
    assert len(m.losses_) == 6 and np.all(np.isfinite(m.losses_))
    assert m.encode(_panel(2, seed=3)).shape[0] == 2


def test_bench_autotcl_model_kwargs_reach_both_methods_and_are_checked():
    from argparse import Namespace

    from tscl.bench.autotcl import _recipe

    args = Namespace(precision="32-true", augmenter_kwargs='{"aug_every": 2}', model_kwargs='{"lr": 1e-5}')
    fixed, auto = (_recipe(args, m, 0, "cost", 5) for m in ("fixed", "autotcl"))
    assert fixed["lr"] == auto["lr"] == 1e-5 and fixed["encoder"] == "cost" and auto["n_iters"] == 5
    assert "augmenter_kwargs" not in fixed and auto["augmenter_kwargs"] == {"aug_every": 2}
    with pytest.raises(ConfigError, match="cannot set"):
        _recipe(
            Namespace(precision="32-true", augmenter_kwargs=None, model_kwargs='{"seed": 3}'),
            "fixed",
            0,
            "tcn",
            5,
        )
    with pytest.raises(ConfigError, match="JSON object"):
        _recipe(
            Namespace(precision="32-true", augmenter_kwargs=None, model_kwargs="[1]"), "fixed", 0, "tcn", 5
        )


def test_autotcl_crops_and_masks_equal_the_fixed_paths_at_equal_seed(monkeypatch):
    """The two methods differ only in the views: same seed, same batches, crops and timestamp masks per step."""
    from tscl.augment.fixed import OverlapCrop, TimestampMask

    seen = []
    crop_sample, mask_sample = OverlapCrop.sample, TimestampMask.sample

    def rec_crop(self, *a, **k):
        p = crop_sample(self, *a, **k)
        seen[-1].append((p.crop_l, p.crop_left, p.crop_eleft, p.crop_eright, p.offset.tolist()))
        return p

    def rec_mask(self, *a, **k):
        m = mask_sample(self, *a, **k)
        seen[-1].append(m.tolist())
        return m

    monkeypatch.setattr(OverlapCrop, "sample", rec_crop)
    monkeypatch.setattr(TimestampMask, "sample", rec_mask)
    runs = {}
    for aug in ("fixed", "autotcl"):
        seen.append([])
        kw = {"augmenter_kwargs": {"aug_every": 2}} if aug == "autotcl" else {}
        tscl.ContrastiveModel(augmenter=aug, seed=3, **TINY, **kw).fit(_panel(), n_iters=6, progress=False)
        runs[aug] = seen[-1]
    assert len(runs["fixed"]) == 12  # a crop and a mask per step
    assert runs["autotcl"] == runs["fixed"]
    assert len({str(c) for c in runs["fixed"][::2]}) > 1  # the crops do vary from step to step
