"""``tscl bench classify``: UCR/UEA accuracy over seeds vs TS2Vec (paper and public implementation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tscl.bench.common import seed_recipe as _seed_recipe
from tscl.bench.common import table as _table


def run(args) -> dict[str, Any]:
    from tscl.errors import DataError
    from tscl.pipelines import classification_reference, evaluate, fit_model, load_data

    out: dict[str, Any] = {"benchmark": "classify", "recipe": args.recipe, "runs": [], "summary": []}
    rows, bars = [], []
    precision = _seed_recipe(args, 0).get("precision", "32-true")  # the option's, else the recipe's
    for name in args.datasets:
        ds = load_data(f"ucr:{name}")
        accs, secs = [], []
        failed = []
        for seed in args.seeds:
            model, _, s = fit_model(_seed_recipe(args, seed), ds, progress=args.progress)
            secs.append(s)
            try:
                res = evaluate(model, ds, seed=seed)
            except DataError as exc:  # e.g. the probe diverged on blown-up features: report it, go on
                failed.append(seed)
                out["runs"].append(
                    {"dataset": name, "seed": seed, "accuracy": None, "error": str(exc), "fit_s": s}
                )
                print(f"  {name} seed {seed}: FAILED ({s:.1f} s): {exc}", flush=True)
                continue
            accs.append(res["accuracy"])
            out["runs"].append({"dataset": name, "seed": seed, "accuracy": res["accuracy"], "fit_s": s})
            print(f"  {name} seed {seed}: accuracy {res['accuracy']:.4f} ({s:.1f} s)", flush=True)
        if not accs:
            raise DataError(f"{name}: every seed failed; see the messages above")
        ref = classification_reference(name) or {}
        impl = [v for k, v in (ref.get("reference_impl") or {}).items()]
        summ = {
            "dataset": name,
            "mean": float(np.mean(accs)),
            "std": float(np.std(accs)),
            "seeds": [sd for sd in args.seeds if sd not in failed],
            "failed_seeds": failed,
            "fit_s": float(np.mean(secs)),
            "paper": ref.get("paper"),
            "impl_mean": float(np.mean(impl)) if impl else None,
        }
        out["summary"].append(summ)
        pts = [
            None if r is None else round(100 * (summ["mean"] - r), 2)
            for r in (summ["paper"], summ["impl_mean"])
        ]
        rows.append(
            [
                name,
                round(summ["mean"], 4),
                round(summ["std"], 4),
                summ["paper"],
                None if summ["impl_mean"] is None else round(summ["impl_mean"], 4),
                *pts,
                round(summ["fit_s"], 1),
                ref.get("train_time_s"),
            ]
        )
        bars.append({"dataset": name, "accuracy": summ["mean"], "reference": summ["paper"]})
    print(f"\nClassification accuracy, mean of seeds {list(args.seeds)} (precision {precision})")
    for summ in out["summary"]:
        if summ["failed_seeds"]:
            print(
                f"  {summ['dataset']}: seeds {summ['failed_seeds']} failed; the mean is over seeds {summ['seeds']}"
            )
    print(
        _table(
            rows,
            [
                "dataset",
                "mean",
                "std",
                "ts2vec_paper",
                "ts2vec_impl",
                "pts_vs_paper",
                "pts_vs_impl",
                "fit_s",
                "ts2vec_fit_s",
            ],
        )
    )
    print(
        "ts2vec_impl: mean over the seeds ANCHORS.md gives for the public implementation run on this machine class"
    )
    from tscl import plots

    out["plot"] = str(
        plots.plot_classification(
            bars,
            Path(args.out) / "classification.png",
            title="tscl (mean of seeds) vs TS2Vec paper",
            series=("tscl", "TS2Vec paper"),
        )
    )
    return out


def add_parser(bs):
    c = bs.add_parser("classify", help="UCR/UEA accuracy over seeds vs TS2Vec")
    c.add_argument(
        "--datasets", nargs="+", default=["GunPoint", "ArrowHead", "ItalyPowerDemand", "BasicMotions"]
    )
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    c.add_argument("--n-iters", type=int, default=None, help="training iterations (default: TS2Vec's rule)")
    add_recipe_args(c)
    return c


def add_recipe_args(q) -> None:
    """Options that go into each seed's recipe (shared by the accuracy benchmarks)."""
    q.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed"],
        default=None,
        help="default: the recipe's, else 32-true",
    )
    q.add_argument("--loss", default=None)
    q.add_argument(
        "--instance-loss", default=None, help="the hierarchical loss's instance term: ntxent, dcl, mochi, ..."
    )
    q.add_argument(
        "--instance-loss-kwargs",
        default=None,
        help='JSON options of the instance term, e.g. \'{"normalize": true, "temperature": 0.1}\'',
    )
    q.add_argument("--batch-size", type=int, default=None)
    q.add_argument(
        "--recipe",
        default=None,
        help="a tscl fit recipe (YAML, e.g. the best.yaml of a validation search by tscl tune) whose model and fit "
        "settings every seed uses; its data and seed keys are ignored, the options above override it",
    )
