import json

import pytest

from tscl.cli import main


def test_bench_pretrain_reports_throughput_and_memory(tmp_path, capsys):
    out = tmp_path / "b"
    assert (
        main(
            [
                "bench",
                "pretrain",
                "--datasets",
                "ItalyPowerDemand",
                "--n-iters",
                "8",
                "--configs",
                "two-pass fp32",
                "one-pass fp32",
                "--repeats",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "bench_pretrain.json").read_text())["results"]
    assert [r["config"] for r in res] == ["two-pass fp32", "one-pass fp32"]
    for r in res:
        assert r["iters_per_s"] > 0 and r["peak_rss_gb"] > 0.05
        assert r["sequences_per_s"] == r["iters_per_s"] * r["batch"]
        assert r["ratio_vs_ts2vec_impl"] is not None  # ItalyPowerDemand has a reference time in ANCHORS.md
    assert res[0]["ratio_vs_two_pass"] == 1.0 and all(r["n_iters"] == 8 for r in res)
    assert all(r["fit_total_s_runs"] == [r["fit_total_s"]] for r in res)  # --repeats 1: one run each
    ref_s = 8.1  # ANCHORS.md: ItalyPowerDemand, 200 iterations
    assert res[1]["ratio_vs_ts2vec_impl"] == pytest.approx(ref_s / (res[1]["fit_total_s"] * 200 / 8))
    assert "x ts2vec_impl" in capsys.readouterr().out
    assert (out / "pretrain_time.png").exists()


FAKE_TS2VEC = """
import time


class TS2Vec:  # the public implementation's constructor and fit signatures, a sleep per iteration
    def __init__(self, input_dims, output_dims=320, hidden_dims=64, depth=10, device="cuda", lr=0.001,
                 batch_size=16, max_train_length=None, temporal_unit=0, after_iter_callback=None,
                 after_epoch_callback=None):
        assert (device, batch_size, lr, output_dims, max_train_length) == ("cpu", 8, 1e-3, 320, 3000)
        self.after_iter_callback = after_iter_callback

    def fit(self, train_data, n_epochs=None, n_iters=None, verbose=False):
        assert train_data.ndim == 3
        for _ in range(n_iters):
            time.sleep(0.05)
            self.after_iter_callback(self, 0.0)
        return []
"""


def test_bench_pretrain_times_a_reference_checkout_in_the_same_rounds(tmp_path, capsys):
    repo = tmp_path / "ts2vec"
    repo.mkdir()
    assert main(["bench", "pretrain", "--datasets", "ItalyPowerDemand", "--ts2vec-repo", str(repo)]) != 0
    assert "ConfigError" in (err := capsys.readouterr().err) and "no ts2vec.py" in err
    (repo / "ts2vec.py").write_text(FAKE_TS2VEC)
    out = tmp_path / "b"
    args = [
        "bench",
        "pretrain",
        "--datasets",
        "ItalyPowerDemand",
        "--n-iters",
        "8",
        "--configs",
        "one-pass fp32",
    ]
    assert main(args + ["--repeats", "2", "--ts2vec-repo", str(repo), "--out", str(out)]) == 0
    res = json.loads((out / "bench_pretrain.json").read_text())["results"]
    assert [r["config"] for r in res] == ["one-pass fp32", "ts2vec reference"]
    ours, ref = res
    assert ref["n_iters"] == 8 and 0.05 * 8 <= ref["fit_total_s"] < 5
    assert ref["sec_per_iter"] == pytest.approx(0.05, rel=0.5)
    paired = sorted(a / b for a, b in zip(ref["fit_total_s_runs"], ours["fit_total_s_runs"], strict=True))
    assert ours["ratio_vs_reference_run"] == pytest.approx(sum(paired) / 2)  # median of 2 rounds
    assert ref["ratio_vs_reference_run"] == pytest.approx(1.0)
    assert "x reference run" in capsys.readouterr().out


def test_run_rounds_interleaves_configurations_and_median_run_picks_a_real_run(monkeypatch):
    from tscl.bench import common
    from tscl.errors import ConfigError

    calls = []

    def fake_worker(target, spec):
        calls.append(spec["name"])
        return {
            "name": spec["name"],
            "t": {"a": [3.0, 1.0, 2.0], "b": [5.0, 4.0, 9.0]}[spec["name"]][
                sum(c == spec["name"] for c in calls) - 1
            ],
        }

    monkeypatch.setattr(common, "run_worker", fake_worker)
    runs = common.run_rounds("m:f", [{"name": "a"}, {"name": "b"}], 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]  # reversed on odd rounds: drifts hit both alike
    assert [r["t"] for r in runs[0]] == [3.0, 1.0, 2.0] and [r["t"] for r in runs[1]] == [5.0, 4.0, 9.0]
    med = common.median_run(runs[1], "t")
    assert med["t"] == 5.0 and med["t_runs"] == [5.0, 4.0, 9.0]
    assert common.median_run(runs[0][:2], "t")["t"] == 1.0  # even count: the lower middle run
    with pytest.raises(ConfigError, match="repeats"):
        common.run_rounds("m:f", [{"name": "a"}], 0)


def test_bench_classify_summarises_seeds(tmp_path, capsys):
    out = tmp_path / "c"
    assert (
        main(
            [
                "bench",
                "classify",
                "--datasets",
                "ItalyPowerDemand",
                "--seeds",
                "0",
                "1",
                "--n-iters",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "bench_classify.json").read_text())
    accs = [r["accuracy"] for r in res["runs"]]
    assert len(accs) == 2 and res["summary"][0]["mean"] == pytest.approx(sum(accs) / 2)
    assert res["summary"][0]["paper"] == 0.961
    printed = capsys.readouterr().out
    assert "pts_vs_paper" in printed
    assert printed.count("Epoch 0: 100%") >= 2  # each seed's fit shows its progress bar by default
    assert (out / "classification.png").exists()


def test_seed_recipe_carries_instance_term_and_its_options():
    import argparse

    from tscl.bench.common import seed_recipe
    from tscl.errors import ConfigError

    args = argparse.Namespace(
        precision="32-true",
        loss=None,
        batch_size=64,
        instance_loss="dcl",
        instance_loss_kwargs='{"normalize": true, "temperature": 0.1}',
    )
    r = seed_recipe(args, 3)
    assert r["seed"] == 3 and r["batch_size"] == 64
    assert r["loss_kwargs"] == {
        "instance_loss": "dcl",
        "instance_loss_kwargs": {"normalize": True, "temperature": 0.1},
    }
    args.instance_loss, args.instance_loss_kwargs = None, None
    assert "loss_kwargs" not in seed_recipe(args, 0)
    for bad in ("{normalize: 1}", "[1, 2]"):
        args.instance_loss_kwargs = bad
        with pytest.raises(ConfigError, match="instance-loss-kwargs"):
            seed_recipe(args, 0)


def test_seed_recipe_takes_model_and_fit_settings_from_a_recipe(tmp_path):
    """``--recipe`` (e.g. a tune's best.yaml): its model and fit keys reach every seed's recipe, its data and seed
    do not, command-line options win, and a recipe with an unknown key is refused."""
    import argparse

    from tscl.bench.common import seed_recipe
    from tscl.errors import ConfigError

    path = tmp_path / "best.yaml"
    path.write_text(
        "data: ett:ETTh1\nunivariate: true\nseed: 7\nlr: 0.0025\nn_iters: 50\nmax_train_length: 500\n"
        "temporal_unit: 1\nprecision: bf16-mixed\nhorizons: [24, 48]\n"
    )
    args = argparse.Namespace(
        precision=None,
        loss=None,
        batch_size=None,
        instance_loss=None,
        instance_loss_kwargs=None,
        recipe=str(path),
    )
    r = seed_recipe(args, 2)
    assert r == {
        "seed": 2,
        "device": "cpu",
        "lr": 0.0025,
        "n_iters": 50,
        "max_train_length": 500,
        "temporal_unit": 1,
        "precision": "bf16-mixed",
    }
    args.precision, args.n_iters = "32-true", 80
    r = seed_recipe(args, 0)
    assert r["precision"] == "32-true" and r["n_iters"] == 80
    path.write_text("lr: 0.001\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        seed_recipe(args, 0)
