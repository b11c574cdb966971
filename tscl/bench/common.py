"""Helpers shared by the benchmarks: tables, the per-seed recipe, and timed runs in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def table(rows, header) -> str:
    from tscl.cli import _table as t

    return t(rows, header)


def seed_recipe(args, seed: int) -> dict[str, Any]:
    """The recipe of one benchmark run: TS2Vec defaults, then the model and fit settings of ``--recipe`` (a
    ``tscl fit`` recipe; its data, evaluation and seed keys are not used), then the options given on the command
    line."""
    base: dict[str, Any] = {}
    if getattr(args, "recipe", None):
        from tscl.pipelines import FIT_KEYS, MODEL_KEYS, load_recipe

        base = {
            k: v for k, v in load_recipe(args.recipe).items() if k in MODEL_KEYS + FIT_KEYS and k != "seed"
        }
    recipe = {
        "seed": seed,
        "precision": args.precision,
        "device": "cpu",
        "loss": args.loss,
        "batch_size": args.batch_size,
        "n_iters": getattr(args, "n_iters", None),
        "loss_kwargs": _loss_kwargs(args) or None,
    }
    return {**base, **{k: v for k, v in recipe.items() if v is not None}}


def _loss_kwargs(args) -> dict[str, Any]:
    """``loss_kwargs`` from ``--instance-loss`` and ``--instance-loss-kwargs`` (JSON)."""
    from tscl.errors import ConfigError

    kw: dict[str, Any] = {}
    if getattr(args, "instance_loss", None):
        kw["instance_loss"] = args.instance_loss
    raw = getattr(args, "instance_loss_kwargs", None)
    if raw:
        try:
            extra = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--instance-loss-kwargs is not valid JSON: {exc}") from exc
        if not isinstance(extra, dict):
            raise ConfigError("--instance-loss-kwargs must be a JSON object, e.g. '{\"normalize\": true}'")
        kw["instance_loss_kwargs"] = extra
    return kw


def run_worker(target: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``"module:function"`` on ``spec`` in a fresh Python process (so its peak memory and imports are its own)
    and return the JSON-able dict it returns. RuntimeError, with the worker's stderr, when it fails or prints nothing."""
    module, func = target.split(":")
    code = (
        "import json, sys, warnings; warnings.filterwarnings('ignore'); "
        f"from {module} import {func} as f; print(json.dumps(f(json.loads(sys.argv[1]))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:  # (a stopped worker may exit 0 without a result)
        raise RuntimeError(f"benchmark worker {target} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_rounds(
    target: str, specs: list[dict[str, Any]], repeats: int, label=None
) -> list[list[dict[str, Any]]]:
    """Run every spec ``repeats`` times, each run in a fresh process (:func:`run_worker`), interleaved: each round
    runs all specs, in reverse order on odd rounds, so that a shared machine's slow drifts (measured here: the same
    run varies by 20% over minutes) fall on every configuration alike. Returns one list of results per spec, in
    round order. ``label(spec)`` names a run in the progress lines. A spec with a ``"target"`` key runs that
    worker instead of ``target`` (e.g. a reference implementation timed in the same rounds)."""
    from tscl.errors import ConfigError

    if int(repeats) < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats!r}")
    results: list[list[dict[str, Any]]] = [[] for _ in specs]
    for r in range(int(repeats)):
        order = range(len(specs)) if r % 2 == 0 else reversed(range(len(specs)))
        for i in order:
            results[i].append(run_worker(specs[i].get("target", target), specs[i]))
            if label is not None:
                print(f"  round {r + 1}/{repeats}: {label(specs[i])} done", flush=True)
    return results


def paired_ratio(num: list[dict[str, Any]], den: list[dict[str, Any]], key: str) -> float:
    """The median over rounds of ``num[r][key] / den[r][key]``: the two runs of a round are adjacent in time, so a
    drift of the machine moves both, and the round's ratio cancels it (the ratio of the medians would not)."""
    import statistics

    return float(statistics.median(n[key] / d[key] for n, d in zip(num, den, strict=True)))


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose ``key`` is the median (the lower middle one for an even count), so every reported field comes
    from one real run; ``<key>_runs`` lists ``key`` of all runs."""
    ordered = sorted(runs, key=lambda r: r[key])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out[f"{key}_runs"] = [r[key] for r in runs]
    return out
