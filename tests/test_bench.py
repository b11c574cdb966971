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
    ref_s = 8.1  # ANCHORS.md: ItalyPowerDemand, 200 iterations
    assert res[1]["ratio_vs_ts2vec_impl"] == pytest.approx(ref_s / (res[1]["fit_total_s"] * 200 / 8))
    assert "x ts2vec_impl" in capsys.readouterr().out
    assert (out / "pretrain_time.png").exists()
