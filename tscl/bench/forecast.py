"""``tscl bench forecast``: ETTh1 ridge-probe forecasting over seeds vs TS2Vec (published tables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tscl.bench.classify import add_recipe_args
from tscl.bench.common import seed_recipe as _seed_recipe
from tscl.bench.common import table as _table


def run(args) -> dict[str, Any]:
    from tscl.eval.forecasting import TS2VEC_ETTH1, TS2VEC_ETTH1_AVG
    from tscl.pipelines import evaluate, fit_model, load_data

    if not args.ett:
        from tscl.errors import ConfigError

        raise ConfigError("tscl bench forecast needs --ett PATH (the ETTh1 CSV)")
    out: dict[str, Any] = {"benchmark": "forecast", "recipe": args.recipe, "runs": [], "summary": {}}
    from tscl import plots

    for setting in args.settings:
        ds = load_data(f"ett:{args.ett}", univariate=setting == "univariate")
        per_seed = []
        for seed in args.seeds:
            model, _, s = fit_model(_seed_recipe(args, seed), ds, progress=args.progress)
            res = evaluate(model, ds)
            per_seed.append(res)
            out["runs"].append({"setting": setting, "seed": seed, "fit_s": s, **res})
            print(
                f"  ETTh1 {setting} seed {seed}: avg MSE {res['avg']['mse']:.4f} MAE {res['avg']['mae']:.4f} "
                f"(fit {s:.0f} s, encode {res['encode_time_s']:.0f} s)",
                flush=True,
            )
        ref = TS2VEC_ETTH1[setting]
        rows, prow = [], []
        for i, h in enumerate(r["horizon"] for r in per_seed[0]["horizons"]):
            mse = float(np.mean([p["horizons"][i]["mse"] for p in per_seed]))
            mae = float(np.mean([p["horizons"][i]["mae"] for p in per_seed]))
            rm, ra = ref.get(h, (None, None))
            rows.append([h, round(mse, 4), round(mae, 4), rm, ra, None if rm is None else round(mse / rm, 3)])
            prow.append({"horizon": h, "mse": mse, "mae": mae, "reference_mse": rm, "reference_mae": ra})
        amse = float(np.mean([p["avg"]["mse"] for p in per_seed]))
        amae = float(np.mean([p["avg"]["mae"] for p in per_seed]))
        rm, ra = TS2VEC_ETTH1_AVG[setting]
        rows.append(["avg", round(amse, 4), round(amae, 4), rm, ra, round(amse / rm, 3)])
        out["summary"][setting] = {
            "horizons": prow,
            "avg_mse": amse,
            "avg_mae": amae,
            "ts2vec_avg": [rm, ra],
            "ratio_avg_mse": amse / rm,
            "seeds": list(args.seeds),
        }
        print(f"\nETTh1 {setting}, mean of seeds {list(args.seeds)}: tscl vs TS2Vec (published)")
        print(_table(rows, ["horizon", "mse", "mae", "ts2vec_mse", "ts2vec_mae", "mse/ts2vec"]))
        plots.plot_forecast_metrics(
            prow,
            Path(args.out) / f"etth1_{setting}.png",
            title=f"ETTh1 {setting}: tscl (mean of seeds) vs TS2Vec",
        )
    return out


def add_parser(bs):
    f = bs.add_parser("forecast", help="ETTh1 ridge-probe forecasting over seeds vs TS2Vec (published)")
    f.add_argument(
        "--settings",
        nargs="+",
        default=["univariate", "multivariate"],
        choices=["univariate", "multivariate"],
    )
    f.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    f.add_argument("--n-iters", type=int, default=None)
    add_recipe_args(f)
    return f
