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
    assert "pts_vs_paper" in capsys.readouterr().out
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
