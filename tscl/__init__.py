"""tscl: contrastive self-supervised learning for time series and audio.

Public API (stable names)::

    import tscl
    m = tscl.ContrastiveModel(input_dims=7, encoder="tcn", augmenter="fixed", loss="hierarchical", seed=0)
    m.fit(X)                      # X: (N, T, C) numpy with NaN = missing, a DataFrame, or a sktime panel
    Z = m.encode(X, encoding_window="full_series")
    m.save("enc/")
    enc = tscl.load("enc/")
"""

from __future__ import annotations

from tscl.errors import CheckpointError, ConfigError, DataError, TsclError

__version__ = "0.1.0"

__all__ = [
    "ContrastiveModel",
    "load",
    "TsclError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "__version__",
]


def __getattr__(name: str):
    # Lazy import keeps `import tscl` light (torch/lightning load only when a model is used).
    if name in ("ContrastiveModel", "load"):
        from tscl import model

        return getattr(model, name)
    if name in ("data", "augment", "encoders", "losses", "methods", "eval", "io"):
        import importlib

        return importlib.import_module(f"tscl.{name}")
    raise AttributeError(f"module 'tscl' has no attribute {name!r}")
