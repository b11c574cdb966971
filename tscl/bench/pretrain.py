"""``tscl bench pretrain``: training throughput and peak memory of the TCN + hierarchical loss vs the public
TS2Vec implementation (ANCHORS.md). Each configuration runs in its own process so peak RSS is per configuration.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from tscl.bench.common import median_run, paired_ratio, run_rounds
from tscl.bench.common import table as _table

#: Configurations compared by ``tscl bench pretrain``. "two-pass fp32" encodes the two views in two forward passes
#: in float32, as the reference implementation does; the others are tscl's options.
PRETRAIN_CONFIGS = {
    "two-pass fp32": {"single_pass": False, "precision": "32-true"},
    "one-pass fp32": {"single_pass": True, "precision": "32-true"},
    "one-pass bf16": {"single_pass": True, "precision": "bf16-mixed"},
}


def _pretrain_panel(dataset: str, ett: str | None) -> tuple[np.ndarray, str]:
    from tscl.data import load

    if dataset == "ETTh1":
        if ett:
            ds = load(f"ett:{ett}")
            return ds.data[:, ds.train_slice], "ETTh1 train slice (multivariate, 14 channels)"
        rng = np.random.default_rng(0)
        return rng.standard_normal((1, 8640, 14)).astype(np.float32), "random stand-in with ETTh1's shape"
    return load(f"ucr:{dataset}").X_train, f"{dataset} train split"


def pretrain_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one timed fit (in its own process, so peak RSS is per configuration)."""

    import tscl

    X, _ = _pretrain_panel(spec["dataset"], spec.get("ett"))
    m = tscl.ContrastiveModel(seed=0, device="cpu", **spec["config"])
    n, warm = int(spec["n_iters"]), int(spec["warmup"])
    # Lightning is imported once per process (as torch is); the reference's training time excludes its imports too,
    # so the import is timed on its own and reported beside the fit.
    t_imp = time.perf_counter()
    import lightning  # noqa: F401

    import_s = time.perf_counter() - t_imp
    t0 = time.perf_counter()
    m.fit(X, n_iters=n, progress=False)
    total = time.perf_counter() - t0
    return _timing(X, m.module_.step_end_times, total, n, warm, m.batch_size, m.max_train_length, import_s)


def _timing(
    X, ends, total: float, n: int, warm: int, batch_size: int, max_len, import_s: float
) -> dict[str, Any]:
    """The figures of one timed fit: steady state from the per-step end times ``ends`` after ``warm`` steps, and
    the batch and window that the training panel ``X`` gives with TS2Vec's preparation."""
    import torch

    from tscl.data.windows import prepare_train_panel

    steady = (ends[-1] - ends[warm - 1]) / (n - warm) if 0 < warm < n else total / n
    prepared = prepare_train_panel(X, max_len)
    B = min(batch_size, prepared.shape[0])
    window = min(prepared.shape[1], max_len or prepared.shape[1])
    return {
        "sec_per_iter": steady,
        "iters_per_s": 1 / steady,
        "sequences_per_s": B / steady,
        "steps_per_s": B * window / steady,
        "fit_total_s": total,
        "lightning_import_s": import_s,
        "n_iters": n,
        "batch": B,
        "window": window,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "threads": torch.get_num_threads(),
    }


def reference_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One timed fit of the public TS2Vec implementation, imported from the user's checkout of its repository
    (``spec["ts2vec_repo"]``, the folder holding ``ts2vec.py``; nothing of it ships with tscl), on the same panel
    with TS2Vec's own training settings (``train.py``'s defaults: batch 8, lr 1e-3, 320 output dims,
    max_train_length 3000) and seed 0. Timed like :func:`pretrain_worker`: the whole ``fit`` call, and the steady
    state from the reference's per-iteration callback."""
    import random
    import sys

    import torch

    from tscl.errors import ConfigError

    repo = str(spec["ts2vec_repo"])
    sys.path.insert(0, repo)
    try:
        from ts2vec import TS2Vec
    except Exception as exc:  # not a TS2Vec checkout, or one that does not import here
        raise ConfigError(
            f"--ts2vec-repo {repo}: cannot import TS2Vec from its ts2vec.py ({type(exc).__name__}: {exc})"
        ) from exc
    X, _ = _pretrain_panel(spec["dataset"], spec.get("ett"))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    ends: list[float] = []
    model = TS2Vec(
        input_dims=X.shape[-1],
        device="cpu",
        batch_size=8,
        lr=1e-3,
        output_dims=320,
        max_train_length=3000,
        after_iter_callback=lambda _m, _loss: ends.append(time.perf_counter()),
    )
    n, warm = int(spec["n_iters"]), int(spec["warmup"])
    t0 = time.perf_counter()
    model.fit(np.asarray(X, dtype=np.float64), n_iters=n, verbose=False)
    total = time.perf_counter() - t0
    if len(ends) != n:
        raise RuntimeError(f"the reference ran {len(ends)} iterations, expected {n}")
    return _timing(X, ends, total, n, warm, 8, 3000, 0.0)


#: name of the reference configuration when ``--ts2vec-repo`` is given
REFERENCE = "ts2vec reference"


def run(args) -> dict[str, Any]:
    from tscl.eval.classification import TS2VEC_UCR_REFERENCE

    out: dict[str, Any] = {"benchmark": "pretrain", "results": []}
    if args.ts2vec_repo and not (Path(args.ts2vec_repo) / "ts2vec.py").is_file():
        from tscl.errors import ConfigError

        raise ConfigError(
            f"--ts2vec-repo {args.ts2vec_repo}: no ts2vec.py there; give the folder of a checkout of the public "
            "TS2Vec repository"
        )
    rows = []
    for dataset in args.datasets:
        _, what = _pretrain_panel(dataset, args.ett) if dataset != "ETTh1" or args.ett else (None, "")
        if dataset == "ETTh1" and not args.ett:
            what = "random stand-in with ETTh1's shape (pass --ett for the real file)"
        n_iters = args.n_iters or (200 if dataset != "ETTh1" else 25)
        base = None
        specs = [
            {
                "dataset": dataset,
                "ett": args.ett,
                "config": PRETRAIN_CONFIGS[name],
                "name": name,
                "n_iters": n_iters,
                "warmup": min(5, n_iters - 1),
            }
            for name in args.configs
        ]
        names = list(args.configs)
        if args.ts2vec_repo:  # the reference itself, timed in the same interleaved rounds
            names.append(REFERENCE)
            specs.append(
                {
                    **specs[0],
                    "name": REFERENCE,
                    "config": {},
                    "ts2vec_repo": str(Path(args.ts2vec_repo).resolve()),
                    "target": "tscl.bench.pretrain:reference_worker",
                }
            )
        runs = run_rounds(
            "tscl.bench.pretrain:pretrain_worker",
            specs,
            args.repeats,
            label=lambda s: f"{s['dataset']} {s['name']}",
        )
        live = runs[-1] if args.ts2vec_repo else None
        for name, config_runs in zip(names, runs, strict=True):
            r = median_run(config_runs, "fit_total_s")
            base = base or r
            if live is not None:
                # paired: each round's reference run against this configuration's run of the same round
                r["ratio_vs_reference_run"] = paired_ratio(live, config_runs, "fit_total_s")
                r["steady_ratio_vs_reference_run"] = paired_ratio(config_runs, live, "iters_per_s")
            ref = TS2VEC_UCR_REFERENCE.get(dataset)
            # End to end: our whole fit (Trainer set-up included) against the reference's 200-iteration training
            # time, scaled to 200 iterations when a different count was timed.
            ours_200 = r["fit_total_s"] * 200 / r["n_iters"]
            r.update(
                {
                    "dataset": dataset,
                    "data": what,
                    "config": name,
                    "fit_200_s": ours_200,
                    "ratio_vs_two_pass": base["fit_total_s"] / r["fit_total_s"],
                    "ratio_vs_ts2vec_impl": ref["train_time_s"] / ours_200 if ref else None,
                    "ts2vec_impl_fit_200_s": ref["train_time_s"] if ref else None,
                    "ts2vec_impl_peak_rss_gb": ref["peak_rss_gb"] if ref else None,
                }
            )
            out["results"].append(r)
            rows.append(
                [
                    dataset,
                    name,
                    r["batch"],
                    r["window"],
                    r["n_iters"],
                    round(r["fit_total_s"], 1),
                    round(r["lightning_import_s"], 1),
                    round(r["iters_per_s"], 2),
                    round(r["sequences_per_s"], 1),
                    int(r["steps_per_s"]),
                    round(r["peak_rss_gb"], 2),
                    round(r["ratio_vs_two_pass"], 2),
                    None if r["ratio_vs_ts2vec_impl"] is None else round(r["ratio_vs_ts2vec_impl"], 2),
                ]
                + (
                    [round(r["ratio_vs_reference_run"], 2), round(r["steady_ratio_vs_reference_run"], 2)]
                    if live is not None
                    else []
                )
            )
            print(
                f"  {dataset:>10} {name}: {r['n_iters']} iters in {r['fit_total_s']:.1f} s "
                f"({r['iters_per_s']:.2f} it/s steady; runs: "
                f"{', '.join(f'{t:.1f}' for t in r['fit_total_s_runs'])} s)",
                flush=True,
            )
    print("\nPretraining throughput: TCN (depth 10, hidden 64, out 320) + hierarchical loss, TS2Vec settings")
    print(
        _table(
            rows,
            [
                "dataset",
                "config",
                "batch",
                "window",
                "iters",
                "fit_s",
                "import_s",
                "it/s",
                "seq/s",
                "steps/s",
                "peak_rss_gb",
                "x two-pass",
                "x ts2vec_impl",
            ]
            + (["x reference run", "x reference steady"] if args.ts2vec_repo else []),
        )
    )
    print(
        f"Median of {args.repeats} interleaved runs per configuration (each in its own process). "
        "fit_s: whole fit, end to end (Trainer set-up included); import_s: the one-time import of Lightning before "
        "it, not in fit_s (the reference's time excludes its imports too); it/s, seq/s, steps/s: steady state after 5 warm-up iterations.\n"
        "x ts2vec_impl: the public TS2Vec implementation's 200-iteration training time on this machine class "
        "(ANCHORS.md: GunPoint 25.3 s, peak RSS 1.16 GB; ArrowHead 34.9 s, 1.30 GB; ItalyPowerDemand 8.1 s, "
        "0.96 GB) over ours for 200 iterations."
    )
    if args.ts2vec_repo:
        print(
            f"x reference run: the TS2Vec implementation in {args.ts2vec_repo}, timed in the same rounds on the same "
            "data (whole fit over ours; median of the rounds' paired ratios); x reference steady: the same for the "
            "steady-state iterations per second."
        )
    from tscl import plots

    bars = [
        {
            "dataset": f"{r['dataset']}\n{r['config']}",
            "accuracy": r["fit_200_s"],
            "reference": r["ts2vec_impl_fit_200_s"],
        }
        for r in out["results"]
    ]
    out["plot"] = str(
        plots.plot_classification(
            bars,
            Path(args.out) / "pretrain_time.png",
            title="seconds per 200 training iterations (lower is better)",
            ylabel="seconds",
            series=("tscl", "TS2Vec public impl"),
        )
    )
    return out


def add_parser(bs):
    p = bs.add_parser("pretrain", help="training throughput and peak memory of the TCN + hierarchical loss")
    p.add_argument("--datasets", nargs="+", default=["GunPoint", "ETTh1"])
    p.add_argument("--configs", nargs="+", default=list(PRETRAIN_CONFIGS), choices=list(PRETRAIN_CONFIGS))
    p.add_argument("--n-iters", type=int, default=None, help="timed iterations per configuration")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per configuration, interleaved across configurations; the median run is reported",
    )
    p.add_argument(
        "--ts2vec-repo",
        default=None,
        help="a checkout of the public TS2Vec repository (the folder with ts2vec.py): its training is timed in the "
        "same interleaved rounds, on the same data, and every configuration gets a paired ratio against it",
    )
    return p
