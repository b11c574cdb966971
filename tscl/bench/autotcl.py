"""``tscl bench autotcl``: AutoTCL (learned augmentation) vs the fixed augmentation, same encoder / iterations /
seeds, in the same run.

* ``forecast``: ETTh1 ridge protocol (univariate and/or multivariate), per horizon and average, beside the published
  AutoTCL, CoST and TS2Vec tables (ANCHORS.md).
* ``classify``: UCR/UEA accuracy (GunPoint, ArrowHead, ItalyPowerDemand, BasicMotions by default).
* ``cost``: seconds per training iteration (steady state) and peak RSS with and without the augmenter, each
  configuration in its own process (target: AutoTCL at most 1.5x the time of the fixed augmentation).

Every fit and evaluation is appended to ``OUT/bench_autotcl.partial.json`` as soon as it ends, so a long run that is
stopped still leaves its results. Hyperparameters are the defaults (no test-set selection).
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from tscl.bench.common import median_run, run_rounds
from tscl.bench.common import table as _table

METHODS = ("fixed", "autotcl")


def _recipe(args, method: str, seed: int, encoder: str, n_iters: int | None) -> dict[str, Any]:
    r: dict[str, Any] = {
        "seed": seed,
        "device": "cpu",
        "encoder": encoder,
        "augmenter": method,
        "precision": args.precision,
    }
    if n_iters is not None:
        r["n_iters"] = n_iters
    if getattr(args, "model_kwargs", None):  # the same settings for both methods
        extra = json.loads(args.model_kwargs)
        from tscl.errors import ConfigError

        if not isinstance(extra, dict):
            raise ConfigError(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r}")
        clash = sorted(set(extra) & (set(r) | {"n_iters", "augmenter_kwargs"}))
        if clash:
            raise ConfigError(f"--model-kwargs cannot set {clash}: they have their own options")
        r.update(extra)
    if method == "autotcl" and args.augmenter_kwargs:
        r["augmenter_kwargs"] = json.loads(args.augmenter_kwargs)
    return r


def _save_partial(args, out: dict) -> None:
    from tscl.io import atomic_write_json

    atomic_write_json(Path(args.out) / "bench_autotcl.partial.json", out)


def _forecast(args, out: dict) -> None:
    from tscl import plots
    from tscl.eval.forecasting import AUTOTCL_ETTH1, AUTOTCL_ETTH1_AVG, COST_ETTH1_AVG, TS2VEC_ETTH1_AVG
    from tscl.pipelines import evaluate, fit_model, load_data

    if not args.ett:
        from tscl.errors import ConfigError

        raise ConfigError("tscl bench autotcl --tasks forecast needs --ett PATH (the ETTh1 CSV)")
    for setting in args.settings:
        ds = load_data(f"ett:{args.ett}", univariate=setting == "univariate")
        n_iters = args.n_iters_forecast
        for encoder in args.encoders:
            res: dict[str, list] = {m: [] for m in METHODS}
            for seed in args.seeds:
                for method in METHODS:
                    model, _, s = fit_model(
                        _recipe(args, method, seed, encoder, n_iters), ds, progress=args.progress
                    )
                    r = evaluate(model, ds)
                    res[method].append(r)
                    out["forecast"].append(
                        {
                            "setting": setting,
                            "encoder": encoder,
                            "method": method,
                            "seed": seed,
                            "n_iters": model.n_iters_,
                            "fit_s": s,
                            "collapses": len(getattr(model, "collapse_events_", [])),
                            **{k: v for k, v in r.items() if k != "reference"},
                        }
                    )
                    _save_partial(args, out)
                    print(
                        f"  ETTh1 {setting} {encoder} {method} seed {seed}: avg MSE {r['avg']['mse']:.4f} "
                        f"MAE {r['avg']['mae']:.4f} ({model.n_iters_} iters, fit {s:.0f} s)",
                        flush=True,
                    )
            horizons = [h["horizon"] for h in res["fixed"][0]["horizons"]]
            rows, bars = [], []
            pub = AUTOTCL_ETTH1[setting]
            for i, h in enumerate(horizons):
                m = {k: float(np.mean([p["horizons"][i]["mse"] for p in v])) for k, v in res.items()}
                a = {k: float(np.mean([p["horizons"][i]["mae"] for p in v])) for k, v in res.items()}
                rm, ra = pub.get(h, (None, None))
                rows.append(
                    [h, round(m["fixed"], 4), round(m["autotcl"], 4), round(m["autotcl"] / m["fixed"], 3)]
                    + [round(a["fixed"], 4), round(a["autotcl"], 4), rm, ra]
                    + [None if rm is None else round(m["autotcl"] / rm, 3)]
                )
                bars.append({"dataset": str(h), "accuracy": m["autotcl"], "reference": m["fixed"]})
            avg = {k: float(np.mean([p["avg"]["mse"] for p in v])) for k, v in res.items()}
            avg_mae = {k: float(np.mean([p["avg"]["mae"] for p in v])) for k, v in res.items()}
            sd = {k: float(np.std([p["avg"]["mse"] for p in v])) for k, v in res.items()}
            rm, ra = AUTOTCL_ETTH1_AVG[setting]
            rows.append(
                [
                    "avg",
                    round(avg["fixed"], 4),
                    round(avg["autotcl"], 4),
                    round(avg["autotcl"] / avg["fixed"], 3),
                ]
                + [
                    round(avg_mae["fixed"], 4),
                    round(avg_mae["autotcl"], 4),
                    rm,
                    ra,
                    round(avg["autotcl"] / rm, 3),
                ]
            )
            bars.append({"dataset": "avg", "accuracy": avg["autotcl"], "reference": avg["fixed"]})
            out["summary"]["forecast"][f"{setting}/{encoder}"] = {
                "avg_mse": avg,
                "avg_mse_std": sd,
                "avg_mae": avg_mae,
                "published": {
                    "autotcl": AUTOTCL_ETTH1_AVG[setting],
                    "cost": COST_ETTH1_AVG[setting],
                    "ts2vec": TS2VEC_ETTH1_AVG[setting],
                },
                "seeds": list(args.seeds),
                "n_iters": res["fixed"][0].get("n_iters", n_iters),
            }
            print(
                f"\nETTh1 {setting}, encoder {encoder}, mean of seeds {list(args.seeds)} "
                f"({n_iters or 'default'} iterations): AutoTCL vs fixed augmentation, beside published AutoTCL"
            )
            print(
                _table(
                    rows,
                    [
                        "horizon",
                        "mse_fixed",
                        "mse_autotcl",
                        "autotcl/fixed",
                        "mae_fixed",
                        "mae_autotcl",
                        "pub_mse",
                        "pub_mae",
                        "autotcl/pub",
                    ],
                )
            )
            print(
                f"published averages (MSE/MAE): AutoTCL {AUTOTCL_ETTH1_AVG[setting]}, CoST {COST_ETTH1_AVG[setting]}, "
                f"TS2Vec {TS2VEC_ETTH1_AVG[setting]}; std of avg MSE over seeds: fixed {sd['fixed']:.4f}, "
                f"autotcl {sd['autotcl']:.4f}"
            )
            out["plots"].append(
                str(
                    plots.plot_classification(
                        bars,
                        Path(args.out) / f"autotcl_etth1_{setting}_{encoder}.png",
                        title=f"ETTh1 {setting}, {encoder}: test MSE, {len(args.seeds)} seeds (lower is better)",
                        ylabel="MSE",
                        xlabel="horizon",
                        series=("AutoTCL", "fixed augmentation"),
                    )
                )
            )


def _classify(args, out: dict) -> None:
    from tscl import plots
    from tscl.pipelines import classification_reference, evaluate, fit_model, load_data

    for encoder in args.encoders:
        rows, bars = [], []
        for name in args.datasets:
            ds = load_data(f"ucr:{name}")
            acc: dict[str, list] = {m: [] for m in METHODS}
            for seed in args.seeds:
                for method in METHODS:
                    model, _, s = fit_model(
                        _recipe(args, method, seed, encoder, args.n_iters_classify),
                        ds,
                        progress=args.progress,
                    )
                    r = evaluate(model, ds, seed=seed)
                    acc[method].append(r["accuracy"])
                    out["classify"].append(
                        {
                            "dataset": name,
                            "encoder": encoder,
                            "method": method,
                            "seed": seed,
                            "accuracy": r["accuracy"],
                            "fit_s": s,
                            "n_iters": model.n_iters_,
                            "collapses": len(getattr(model, "collapse_events_", [])),
                        }
                    )
                    _save_partial(args, out)
                    print(
                        f"  {name} {encoder} {method} seed {seed}: accuracy {r['accuracy']:.4f} ({s:.1f} s)",
                        flush=True,
                    )
            ref = (classification_reference(name) or {}).get("paper")
            mf, ma = float(np.mean(acc["fixed"])), float(np.mean(acc["autotcl"]))
            out["summary"]["classify"][f"{name}/{encoder}"] = {
                "fixed": mf,
                "autotcl": ma,
                "fixed_std": float(np.std(acc["fixed"])),
                "autotcl_std": float(np.std(acc["autotcl"])),
                "ts2vec_paper": ref,
                "seeds": list(args.seeds),
            }
            rows.append(
                [
                    name,
                    round(mf, 4),
                    round(float(np.std(acc["fixed"])), 4),
                    round(ma, 4),
                    round(float(np.std(acc["autotcl"])), 4),
                    round(100 * (ma - mf), 2),
                    ref,
                ]
            )
            bars.append({"dataset": name, "accuracy": ma, "reference": mf})
        print(
            f"\nClassification accuracy, encoder {encoder}, mean of seeds {list(args.seeds)}: AutoTCL vs fixed"
        )
        print(
            _table(rows, ["dataset", "fixed", "fixed_std", "autotcl", "autotcl_std", "pts", "ts2vec_paper"])
        )
        out["plots"].append(
            str(
                plots.plot_classification(
                    bars,
                    Path(args.out) / f"autotcl_classify_{encoder}.png",
                    title=f"accuracy ({encoder}), mean of {len(args.seeds)} seeds",
                    series=("AutoTCL", "fixed augmentation"),
                )
            )
        )


def cost_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One timed fit in its own process (peak RSS per configuration)."""
    import torch

    import tscl
    from tscl.bench.pretrain import _pretrain_panel

    X, _ = _pretrain_panel(spec["dataset"], spec.get("ett"))
    m = tscl.ContrastiveModel(**spec["model"])
    n, warm = int(spec["n_iters"]), int(spec["warmup"])
    t0 = time.perf_counter()
    m.fit(X, n_iters=n, progress=False)
    total = time.perf_counter() - t0
    times = m.module_.step_end_times
    steady = (times[-1] - times[warm - 1]) / (n - warm) if 0 < warm < n else total / n
    return {
        "sec_per_iter": steady,
        "fit_total_s": total,
        "n_iters": n,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "threads": torch.get_num_threads(),
    }


def _cost(args, out: dict) -> None:
    from tscl import plots

    rows, bars = [], []
    for dataset in args.cost_datasets:
        for encoder in args.encoders:
            specs = [
                {
                    "dataset": dataset,
                    "ett": args.ett,
                    "encoder": encoder,
                    "method": method,
                    # the same model settings as the accuracy tasks (--precision, --model-kwargs, --augmenter-kwargs)
                    "model": _recipe(args, method, 0, encoder, None),
                    "n_iters": args.n_iters_cost,
                    "warmup": min(4, args.n_iters_cost - 1),
                }
                for method in METHODS
            ]
            runs = dict(
                zip(
                    METHODS,
                    run_rounds(
                        "tscl.bench.autotcl:cost_worker",
                        specs,
                        args.repeats,
                        label=lambda s: f"cost {s['dataset']} {s['encoder']} {s['method']}",
                    ),
                    strict=True,
                )
            )
            # Each round's two runs are adjacent in time: their ratio is the round's, and the median round is
            # reported (robust to the machine's drifts, which move both runs of a round alike).
            round_ratios = [
                a["sec_per_iter"] / f["sec_per_iter"]
                for a, f in zip(runs["autotcl"], runs["fixed"], strict=True)
            ]
            r = {m: median_run(runs[m], "sec_per_iter") for m in METHODS}
            for method in METHODS:
                out["cost"].append({"dataset": dataset, "encoder": encoder, "method": method, **r[method]})
                print(
                    f"  cost {dataset} {encoder} {method}: {r[method]['sec_per_iter']:.3f} s/iter (median; runs "
                    f"{', '.join(f'{t:.3f}' for t in r[method]['sec_per_iter_runs'])}), "
                    f"peak RSS {r[method]['peak_rss_gb']:.2f} GB",
                    flush=True,
                )
            _save_partial(args, out)
            ratio = float(statistics.median(round_ratios))
            rows.append(
                [
                    dataset,
                    encoder,
                    round(r["fixed"]["sec_per_iter"], 4),
                    round(r["autotcl"]["sec_per_iter"], 4),
                    round(ratio, 2),
                    round(r["fixed"]["peak_rss_gb"], 2),
                    round(r["autotcl"]["peak_rss_gb"], 2),
                    "yes" if ratio <= 1.5 else "NO",
                ]
            )
            bars.append(
                {
                    "dataset": f"{dataset}\n{encoder}",
                    "accuracy": r["autotcl"]["sec_per_iter"],
                    "reference": r["fixed"]["sec_per_iter"],
                }
            )
            out["summary"]["cost"][f"{dataset}/{encoder}"] = {
                "time_ratio": ratio,
                "time_ratio_rounds": round_ratios,
                **{m: r[m] for m in METHODS},
            }
    print(
        f"\nTraining cost per iteration ({args.n_iters_cost} iterations, steady state after 4), one process each, "
        f"{args.repeats} interleaved rounds: medians, ratio = median of the rounds' ratios"
    )
    print(
        _table(
            rows,
            [
                "dataset",
                "encoder",
                "s/it fixed",
                "s/it autotcl",
                "ratio",
                "rss fixed",
                "rss autotcl",
                "<=1.5x",
            ],
        )
    )
    out["plots"].append(
        str(
            plots.plot_classification(
                bars,
                Path(args.out) / "autotcl_cost.png",
                title="seconds per training iteration (lower is better)",
                ylabel="s / iteration",
                series=("AutoTCL", "fixed augmentation"),
            )
        )
    )


def run(args) -> dict[str, Any]:
    out: dict[str, Any] = {
        "benchmark": "autotcl",
        "settings": {k: v for k, v in vars(args).items() if k not in ("func",)},
        "forecast": [],
        "classify": [],
        "cost": [],
        "summary": {"forecast": {}, "classify": {}, "cost": {}},
        "plots": [],
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if "cost" in args.tasks:
        _cost(args, out)
    if "classify" in args.tasks:
        _classify(args, out)
    if "forecast" in args.tasks:
        _forecast(args, out)
    return out


def add_parser(bs):
    p = bs.add_parser("autotcl", help="AutoTCL (learned augmentation) vs fixed augmentation, same run")
    p.add_argument(
        "--tasks",
        nargs="+",
        default=["cost", "classify", "forecast"],
        choices=["cost", "classify", "forecast"],
    )
    p.add_argument(
        "--settings",
        nargs="+",
        default=["univariate", "multivariate"],
        choices=["univariate", "multivariate"],
    )
    p.add_argument(
        "--datasets", nargs="+", default=["GunPoint", "ArrowHead", "ItalyPowerDemand", "BasicMotions"]
    )
    p.add_argument("--encoders", nargs="+", default=["tcn"], help="tcn, transformer, ...")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--n-iters-forecast", type=int, default=None, help="ETTh1 iterations (default: TS2Vec's rule)"
    )
    p.add_argument(
        "--n-iters-classify", type=int, default=None, help="UCR iterations (default: TS2Vec's rule)"
    )
    p.add_argument(
        "--cost-datasets",
        nargs="+",
        default=["GunPoint"],
        help="GunPoint, ETTh1, ... (ETTh1 with the transformer: full attention over 3,000 steps, ~20 s/it, 7 GB)",
    )
    p.add_argument("--n-iters-cost", type=int, default=40, help="timed iterations per configuration")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="cost: rounds of (fixed, AutoTCL) runs, interleaved; medians are reported",
    )
    p.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    p.add_argument(
        "--augmenter-kwargs", default=None, help="JSON for the AutoTCL augmenter, e.g. '{\"aug_every\": 3}'"
    )
    p.add_argument(
        "--model-kwargs",
        default=None,
        help='JSON of model settings for both methods, e.g. \'{"loss": "global_local", "lr": 1e-5}\'',
    )
    return p
