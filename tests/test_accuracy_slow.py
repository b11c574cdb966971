"""Accuracy checks at TS2Vec's full default settings (slow: excluded by default; run with `pytest -m slow`)."""

import pytest

import tscl
from tscl.data import load_ucr
from tscl.eval import classify

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name,floor", [("GunPoint", 0.96), ("ItalyPowerDemand", 0.93)])
def test_ts2vec_default_accuracy(name, floor):
    d = load_ucr(name)
    m = tscl.ContrastiveModel(seed=0, device="cpu").fit(d.X_train, progress=False)
    assert m.n_iters_ == 200
    assert classify(m, d.X_train, d.y_train, d.X_test, d.y_test)["accuracy"] >= floor
