"""``tscl bench e2e``: ETTh1 multivariate forecasting, training strategies x backbones (Zhang et al. 2023).

For every backbone (Transformer, TCN) and strategy (supervised, pretrain_finetune, pretrain_frozen, e2e) and seed, an
:class:`~tscl.methods.forecast_e2e.E2EForecaster` with ONE multi-horizon head of ``max(horizons)`` steps is trained
on the train split (early stopping on the validation MSE) and evaluated once on the test split at every horizon (the
first ``h`` steps of its output; samples as in the ridge probe). For e2e, ``lambda`` is chosen from ``--lams`` by the
best validation MSE of the first seed; the other seeds use that value. Table: MSE / MAE per horizon, mean of seeds,
beside the TS2Vec ridge probe (tscl's measured average, README) and TS2Vec's published numbers (ANCHORS.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from tscl.bench.common import table as _table

#: tscl's own ridge-probe result on ETTh1 multivariate (TS2Vec TCN, seeds 0-2, README): average MSE over 24..720
RIDGE_PROBE_MULTIVARIATE_AVG_MSE = 0.7998


def _fit_eval(args, windows, backbone, strategy, seed, lam):
    from tscl.methods.forecast_e2e import E2EForecaster

    f = E2EForecaster(
        encoder=backbone,
        strategy=strategy,
        lookback=args.lookback,
        horizon=max(args.horizons),
        lam=lam,
        loss=args.loss,
        revin=not args.no_revin,
        output_dims=args.d_model,
        hidden_dims=args.d_model,
        depth=args.depth.get(backbone),
        batch_size=args.batch_size,
        lr=args.lr,
        max_epochs=args.max_epochs,
        steps_per_epoch=args.steps_per_epoch,
        pretrain_epochs=args.pretrain_epochs,
        patience=args.patience,
        valid_stride=args.valid_stride,
        seed=seed,
        device="cpu",
        progress=args.progress,
    )
    t0 = time.perf_counter()
    f.fit(windows)
    fit_s = time.perf_counter() - t0
    return f, fit_s


def run(args) -> dict[str, Any]:
    from tscl.data import load_ett
    from tscl.data.forecasting import ForecastWindows
    from tscl.errors import ConfigError
    from tscl.eval.forecasting import TS2VEC_ETTH1, TS2VEC_ETTH1_AVG

    if not args.ett:
        raise ConfigError("tscl bench e2e needs --ett PATH (the ETTh1 CSV)")
    args.depth = {"transformer": args.depth_transformer, "tcn": args.depth_tcn}
    fd = load_ett(args.ett, univariate=False)
    windows = ForecastWindows.from_forecast_data(fd, lookback=args.lookback, horizon=max(args.horizons))
    horizons = tuple(sorted(args.horizons))
    out: dict[str, Any] = {"benchmark": "e2e", "settings": {}, "runs": [], "summary": []}
    out["settings"] = {
        k: getattr(args, k)
        for k in (
            "lookback", "horizons", "seeds", "backbones", "strategies", "lams", "loss", "d_model",
            "batch_size", "lr", "max_epochs", "steps_per_epoch", "pretrain_epochs", "patience", "valid_stride",
        )
    }  # fmt: skip
    out["settings"]["depth"] = args.depth
    out["settings"]["revin"] = not args.no_revin
    out["settings"]["head"] = f"one multi-horizon head of {max(horizons)} steps, evaluated at each horizon"

    def record(backbone, strategy, seed, lam, f, fit_s):
        df = f.evaluate(windows, horizons=horizons, split="test")
        run = {
            "backbone": backbone,
            "strategy": strategy,
            "seed": seed,
            "lam": lam,
            "best_val_mse": f.best_val_mse_,
            "epochs": len(f.history_["val_mse"]),
            "fit_s": fit_s,
            "horizons": df[["horizon", "mse", "mae"]].to_dict("records"),
            "avg_mse": df.attrs["avg"]["mse"],
            "avg_mae": df.attrs["avg"]["mae"],
        }
        out["runs"].append(run)
        print(
            f"  {backbone:11s} {strategy:17s} seed {seed} lam {lam:<5g} val {f.best_val_mse_:.4f} "
            f"test avg MSE {run['avg_mse']:.4f} MAE {run['avg_mae']:.4f} ({fit_s:.0f} s, {run['epochs']} epochs)",
            flush=True,
        )

    for backbone in args.backbones:
        for strategy in args.strategies:
            seeds = list(args.seeds)
            lam = 0.0
            if strategy == "e2e":
                # lambda on the validation split (first seed); the test split is read once per chosen model
                fits = {}
                for cand in args.lams:
                    f, s = _fit_eval(args, windows, backbone, strategy, seeds[0], cand)
                    fits[cand] = (f, s)
                    print(
                        f"  {backbone:11s} e2e lambda {cand:<5g} seed {seeds[0]}: val MSE {f.best_val_mse_:.4f}",
                        flush=True,
                    )
                lam = min(fits, key=lambda c: fits[c][0].best_val_mse_)
                out.setdefault("lambda_selection", {})[backbone] = {
                    "chosen": lam,
                    "val_mse": {str(c): fits[c][0].best_val_mse_ for c in fits},
                }
                record(backbone, strategy, seeds[0], lam, *fits[lam])
                seeds = seeds[1:]
            for seed in seeds:
                f, s = _fit_eval(args, windows, backbone, strategy, seed, lam)
                record(backbone, strategy, seed, lam, f, s)

    ref = TS2VEC_ETTH1["multivariate"]
    ref_avg = TS2VEC_ETTH1_AVG["multivariate"]
    rows = []
    for backbone in args.backbones:
        for strategy in args.strategies:
            runs = [r for r in out["runs"] if r["backbone"] == backbone and r["strategy"] == strategy]
            per_h = {
                h: (
                    float(
                        np.mean([next(x for x in r["horizons"] if x["horizon"] == h)["mse"] for r in runs])
                    ),
                    float(
                        np.mean([next(x for x in r["horizons"] if x["horizon"] == h)["mae"] for r in runs])
                    ),
                )
                for h in horizons
            }
            amse = float(np.mean([r["avg_mse"] for r in runs]))
            amae = float(np.mean([r["avg_mae"] for r in runs]))
            sd = float(np.std([r["avg_mse"] for r in runs]))
            out["summary"].append(
                {
                    "backbone": backbone,
                    "strategy": strategy,
                    "lam": runs[0]["lam"],
                    "per_horizon": {str(h): {"mse": v[0], "mae": v[1]} for h, v in per_h.items()},
                    "avg_mse": amse,
                    "avg_mse_std": sd,
                    "avg_mae": amae,
                    "ratio_vs_ts2vec_published": amse / ref_avg[0],
                    "ratio_vs_ridge_probe": amse / RIDGE_PROBE_MULTIVARIATE_AVG_MSE,
                    "seeds": [r["seed"] for r in runs],
                }
            )
            rows.append(
                [backbone, strategy, runs[0]["lam"]]
                + [f"{per_h[h][0]:.3f}/{per_h[h][1]:.3f}" for h in horizons]
                + [
                    f"{amse:.4f}+-{sd:.4f}",
                    f"{amae:.4f}",
                    round(amse / ref_avg[0], 3),
                    round(amse / RIDGE_PROBE_MULTIVARIATE_AVG_MSE, 3),
                ]
            )
    rows.append(
        ["ts2vec (published)", "ridge probe", "-"]
        + [f"{ref[h][0]:.3f}/{ref[h][1]:.3f}" if h in ref else "-" for h in horizons]
        + [
            f"{ref_avg[0]:.4f}",
            f"{ref_avg[1]:.4f}",
            1.0,
            round(ref_avg[0] / RIDGE_PROBE_MULTIVARIATE_AVG_MSE, 3),
        ]
    )
    rows.append(
        ["tscl ts2vec tcn", "ridge probe", "-"]
        + ["-" for _ in horizons]
        + [
            f"{RIDGE_PROBE_MULTIVARIATE_AVG_MSE:.4f}",
            "-",
            round(RIDGE_PROBE_MULTIVARIATE_AVG_MSE / ref_avg[0], 3),
            1.0,
        ]
    )
    header = ["backbone", "strategy", "lam"] + [f"{h} mse/mae" for h in horizons]
    header += ["avg mse", "avg mae", "mse/ts2vec", "mse/ridge"]
    print(f"\nETTh1 multivariate, mean of seeds {list(args.seeds)} (test split, scaled values)")
    print(_table(rows, header))
    _plot(out["summary"], horizons, ref, ref_avg[0], Path(args.out) / "e2e_etth1_multivariate.png")
    return out


def _plot(summary, horizons, ref, ref_avg, path):
    from tscl.plots import _new_figure, _save

    fig = _new_figure((11, 4), 110)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    labels = [f"{s['backbone']}\n{s['strategy']}" for s in summary]
    vals = [s["avg_mse"] for s in summary]
    errs = [s["avg_mse_std"] for s in summary]
    colors = ["tab:blue" if s["backbone"] == "transformer" else "tab:orange" for s in summary]
    ax1.bar(np.arange(len(vals)), vals, yerr=errs, color=colors, capsize=3)
    ax1.axhline(ref_avg, color="black", ls="--", lw=1, label=f"TS2Vec published ridge ({ref_avg:.3f})")
    ax1.axhline(
        RIDGE_PROBE_MULTIVARIATE_AVG_MSE, color="gray", ls=":", lw=1, label="tscl TS2Vec ridge probe (0.800)"
    )
    ax1.set_xticks(np.arange(len(vals)))
    ax1.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax1.set_ylabel("avg test MSE over horizons")
    ax1.set_title("ETTh1 multivariate: strategies x backbones")
    ax1.legend(fontsize=7)
    for s in summary:
        ys = [s["per_horizon"][str(h)]["mse"] for h in horizons]
        ls = "-" if s["backbone"] == "transformer" else "--"
        ax2.plot(horizons, ys, ls, marker="o", ms=3, label=f"{s['backbone']} {s['strategy']}")
    ax2.plot(
        [h for h in horizons if h in ref],
        [ref[h][0] for h in horizons if h in ref],
        "k:",
        marker="s",
        ms=3,
        label="TS2Vec published",
    )
    ax2.set_xscale("log")
    ax2.minorticks_off()
    ax2.set_xticks(list(horizons))
    ax2.set_xticklabels([str(h) for h in horizons])
    ax2.set_xlabel("horizon")
    ax2.set_ylabel("test MSE")
    ax2.legend(fontsize=6)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def add_parser(bs):
    p = bs.add_parser("e2e", help="ETTh1 multivariate: strategies x backbones (end-to-end MSE + contrastive)")
    p.add_argument("--backbones", nargs="+", default=["transformer", "tcn"], choices=["transformer", "tcn"])
    p.add_argument(
        "--strategies",
        nargs="+",
        default=["supervised", "pretrain_finetune", "pretrain_frozen", "e2e"],
        choices=["supervised", "pretrain_finetune", "pretrain_frozen", "e2e"],
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--horizons", type=int, nargs="+", default=[24, 48, 168, 336, 720])
    p.add_argument(
        "--lams", type=float, nargs="+", default=[0.1, 1.0], help="lambda grid for e2e (validation)"
    )
    p.add_argument("--loss", default="hierarchical")
    p.add_argument("--lookback", type=int, default=96)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--depth-transformer", type=int, default=2)
    p.add_argument("--depth-tcn", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-epochs", type=int, default=6)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--valid-stride", type=int, default=4)
    p.add_argument("--no-revin", action="store_true")
    return p
