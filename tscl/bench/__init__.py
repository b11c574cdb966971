"""Benchmarks: ``tscl bench <name>``, one module per benchmark in this package.

Each prints a table with ratios against the reference figures (ANCHORS.md: the public reference implementations run
on this machine class, and the published tables) and writes ``bench_<name>.json`` + PNG plots into ``--out``.

A benchmark module defines ``add_parser(subparsers) -> argparse.ArgumentParser`` and ``run(args) -> dict``; list it
in :data:`BENCHMARKS` to make it a ``tscl bench`` subcommand.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

__all__ = ["BENCHMARKS", "add_bench_parser", "main"]

#: subcommand -> module that implements it
BENCHMARKS: dict[str, str] = {
    "pretrain": "tscl.bench.pretrain",
    "classify": "tscl.bench.classify",
    "forecast": "tscl.bench.forecast",
    "e2e": "tscl.bench.e2e",
    "losses": "tscl.bench.losses",
    "autotcl": "tscl.bench.autotcl",
    "tune": "tscl.bench.tune",
}


def add_bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks with ratios against the reference figures")
    bs = b.add_subparsers(dest="bench", required=True)
    for module in BENCHMARKS.values():
        q = importlib.import_module(module).add_parser(bs)
        if not any(a.dest == "ett" for a in q._actions):
            q.add_argument(
                "--ett", default=os.environ.get("TSCL_ETT"), help="ETTh1 CSV path (or name in $TSCL_DATA)"
            )
        q.add_argument("--out", default="runs/bench")
        q.add_argument(
            "--no-progress",
            dest="progress",
            action="store_false",
            help="hide each fit's progress bar (timed runs never show one)",
        )
    b.set_defaults(func=main)


def main(args) -> int:
    from tscl.io import atomic_write_json

    Path(args.out).mkdir(parents=True, exist_ok=True)
    res = importlib.import_module(BENCHMARKS[args.bench]).run(args)
    path = atomic_write_json(Path(args.out) / f"bench_{args.bench}.json", res)
    print(f"results: {path}")
    return 0
