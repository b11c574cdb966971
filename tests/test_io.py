"""Safe checkpoint format: round trip, atomicity, refusal of pickles, tamper detection, state-dict checks."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import tscl
from tscl.errors import CheckpointError, ConfigError, TsclError
from tscl.io import (
    CONFIG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    atomic_write_json,
    atomic_write_text,
    check_state_dict,
    load_checkpoint,
    save_checkpoint,
)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "encoder.weight": torch.randn(8, 3, 5, generator=g),
        "encoder.bias": torch.randn(8, generator=g),
        "head.weight": torch.randn(4, 8, generator=g).t(),  # non-contiguous
        "steps": torch.tensor(7, dtype=torch.int64),
        "flag": torch.tensor([True, False]),
        "half": torch.randn(3, generator=g).to(torch.bfloat16),
        "empty": torch.zeros(0, 3),
    }


def _save(path: Path, **kw) -> Path:
    kw.setdefault("kind", "contrastive_model")
    kw.setdefault("config", {"input_dims": 3, "output_dims": 8, "encoder": "tcn"})
    kw.setdefault("tensors", _tensors())
    return save_checkpoint(path, **kw)


def _edit_config(ckpt: Path, fn) -> None:
    doc = json.loads((ckpt / CONFIG_FILE).read_text())
    fn(doc)
    (ckpt / CONFIG_FILE).write_text(json.dumps(doc))


def test_round_trip_identical(tmp_path):
    src = _tensors()
    cfg = {"input_dims": 3, "hidden": [64, 64], "name": "x", "lr": 1e-3, "nested": {"a": None, "b": True}}
    out = save_checkpoint(
        tmp_path / "a" / "b" / "ckpt", kind="k", config=cfg, tensors=src, extra={"note": "hi"}
    )
    assert out == tmp_path / "a" / "b" / "ckpt"
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]

    doc, loaded = load_checkpoint(out)
    assert set(loaded) == set(src)
    for k, t in src.items():
        assert loaded[k].dtype == t.dtype
        assert torch.equal(loaded[k], t), k
    assert doc["config"] == cfg
    assert doc["extra"] == {"note": "hi"}
    assert doc["kind"] == "k"
    assert doc["format"] == FORMAT_NAME and doc["format_version"] == FORMAT_VERSION == 1
    assert doc["tscl_version"] == tscl.__version__
    assert doc["tensors"]["encoder.weight"] == {"shape": [8, 3, 5], "dtype": "float32"}
    assert doc["tensors"]["half"]["dtype"] == "bfloat16"
    assert len(doc["sha256"]) == 64
    assert "T" in doc["created"]
    # str path and map_location as torch.device work too
    doc2, loaded2 = load_checkpoint(str(out), map_location=torch.device("cpu"))
    assert doc2 == doc and torch.equal(loaded2["encoder.bias"], src["encoder.bias"])


def test_config_conversion_numpy_and_tuples(tmp_path):
    cfg = {
        "dims": (3, 4),
        "np_int": np.int64(5),
        "np_float": np.float32(0.5),
        "np_bool": np.bool_(True),
        "arr": np.arange(3),
        "path": Path("runs/x"),
        "by_class": {0: "a", np.int64(1): "b"},
    }
    doc, _ = load_checkpoint(_save(tmp_path / "c", config=cfg))
    assert doc["config"] == {
        "dims": [3, 4],
        "np_int": 5,
        "np_float": 0.5,
        "np_bool": True,
        "arr": [0, 1, 2],
        "path": "runs/x",
        "by_class": {"0": "a", "1": "b"},
    }


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"fn": lambda x: x}, "fn"),
        ({"outer": {"obj": object()}}, "obj"),
        ({"lr": float("nan")}, "lr"),
        ({"s": {1, 2}}, "s"),
        ({"t": torch.zeros(3)}, "t"),
    ],
)
def test_non_serialisable_config_raises_config_error(tmp_path, bad, key):
    with pytest.raises(ConfigError, match=key):
        _save(tmp_path / "c", config=bad)
    assert not (tmp_path / "c" / CONFIG_FILE).exists()


def test_shared_storage_and_gpu_free_inputs(tmp_path):
    w = torch.randn(4, 4)
    tied = {"a": w, "b": w, "row": w[1], "grad": torch.randn(2, requires_grad=True)}
    doc, loaded = load_checkpoint(_save(tmp_path / "c", tensors=tied))
    assert torch.equal(loaded["a"], w) and torch.equal(loaded["b"], w) and torch.equal(loaded["row"], w[1])
    assert not loaded["grad"].requires_grad
    assert doc["tensors"]["row"]["shape"] == [4]


def test_atomic_writes_leave_no_temp_files(tmp_path):
    ckpt = _save(tmp_path / "c")
    _save(ckpt)  # overwrite in place
    assert sorted(p.name for p in ckpt.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    load_checkpoint(ckpt)

    atomic_write_text(tmp_path / "out" / "notes.txt", "hello\n")
    atomic_write_json(
        tmp_path / "out" / "metrics.json", {"mse": np.float64(0.25), "bad": float("inf"), "h": (24,)}
    )
    assert (tmp_path / "out" / "notes.txt").read_text() == "hello\n"
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {
        "mse": 0.25,
        "bad": None,
        "h": [24],
    }
    atomic_write_json(tmp_path / "out" / "metrics.json", [1, 2])  # replace existing file
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == [1, 2]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.json", "notes.txt"]


def test_failed_save_keeps_old_checkpoint(tmp_path):
    ckpt = _save(tmp_path / "c")
    before = (ckpt / CONFIG_FILE).read_bytes(), (ckpt / WEIGHTS_FILE).read_bytes()
    with pytest.raises(ConfigError):
        _save(ckpt, tensors={"x": "not a tensor"})
    with pytest.raises(ConfigError):
        _save(ckpt, config={"bad": object()})
    assert ((ckpt / CONFIG_FILE).read_bytes(), (ckpt / WEIGHTS_FILE).read_bytes()) == before
    assert sorted(p.name for p in ckpt.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    load_checkpoint(ckpt)


def test_torch_save_file_is_refused(tmp_path):
    f = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, f)
    with pytest.raises(CheckpointError, match="(?i)pickle") as ei:
        load_checkpoint(f)
    assert "safetensors" in str(ei.value)


def test_plain_pickle_file_is_refused(tmp_path):
    f = tmp_path / "weights"
    f.write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
    with pytest.raises(CheckpointError, match="(?i)unpickle"):
        load_checkpoint(f)


def test_legacy_torch_save_is_refused(tmp_path):
    f = tmp_path / "legacy.bin"
    torch.save({"w": torch.zeros(2)}, f, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="(?i)pickle"):
        load_checkpoint(f)


def test_directory_with_only_pt_file_is_refused(tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    torch.save({"w": torch.zeros(2)}, d / "model.pt")
    with pytest.raises(CheckpointError, match="model.pt") as ei:
        load_checkpoint(d)
    assert "pickle" in str(ei.value).lower()


def test_missing_path_and_empty_dir(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=CONFIG_FILE):
        load_checkpoint(tmp_path / "empty")


def test_file_inside_checkpoint_points_to_directory(tmp_path):
    ckpt = _save(tmp_path / "c")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(ckpt / CONFIG_FILE)


def test_missing_weights(tmp_path):
    ckpt = _save(tmp_path / "c")
    (ckpt / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=WEIGHTS_FILE):
        load_checkpoint(ckpt)


def test_flipped_byte_in_weights_is_detected(tmp_path):
    ckpt = _save(tmp_path / "c")
    data = bytearray((ckpt / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0xFF
    (ckpt / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(ckpt)


def test_weights_from_another_save_are_detected(tmp_path):
    a = _save(tmp_path / "a")
    b = _save(tmp_path / "b", tensors={"x": torch.ones(3)})
    (a / WEIGHTS_FILE).write_bytes((b / WEIGHTS_FILE).read_bytes())
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(a)


def test_edited_shapes_are_detected(tmp_path):
    ckpt = _save(tmp_path / "c")
    _edit_config(ckpt, lambda d: d["tensors"]["encoder.bias"].update(shape=[9]))
    with pytest.raises(CheckpointError, match=r"encoder\.bias"):
        load_checkpoint(ckpt)


def test_edited_tensor_names_and_dtypes_are_detected(tmp_path):
    ckpt = _save(tmp_path / "c")

    def edit(d):
        d["tensors"]["ghost"] = d["tensors"].pop("encoder.bias")
        d["tensors"]["encoder.weight"]["dtype"] = "float64"

    _edit_config(ckpt, edit)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(ckpt)
    msg = str(ei.value)
    assert "ghost" in msg and "encoder.bias" in msg and "float64" in msg


def test_unreadable_safetensors_header(tmp_path):
    import hashlib

    ckpt = _save(tmp_path / "c")
    junk = b"\xff" * 8 + b"not a header"
    (ckpt / WEIGHTS_FILE).write_bytes(junk)
    _edit_config(ckpt, lambda d: d.update(sha256=hashlib.sha256(junk).hexdigest()))
    with pytest.raises(CheckpointError, match="header"):
        load_checkpoint(ckpt)


def test_invalid_json(tmp_path):
    ckpt = _save(tmp_path / "c")
    (ckpt / CONFIG_FILE).write_text('{"format": "tscl-checkpoint", ')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt)
    (ckpt / CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        load_checkpoint(ckpt)


def test_wrong_format_name(tmp_path):
    ckpt = _save(tmp_path / "c")
    _edit_config(ckpt, lambda d: d.update(format="huggingface"))
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize(
    "version, pattern", [(999, "(?i)upgrade"), ("1", "unknown"), (0, "unknown"), (None, "unknown")]
)
def test_bad_format_version(tmp_path, version, pattern):
    ckpt = _save(tmp_path / "c")
    _edit_config(ckpt, lambda d: d.update(format_version=version))
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("field", ["sha256", "tensors"])
def test_missing_required_fields(tmp_path, field):
    ckpt = _save(tmp_path / "c")
    _edit_config(ckpt, lambda d: d.pop(field))
    with pytest.raises(CheckpointError, match=field):
        load_checkpoint(ckpt)


def test_save_argument_validation(tmp_path):
    with pytest.raises(ConfigError):
        _save(tmp_path / "c", kind="")
    with pytest.raises(ConfigError):
        _save(tmp_path / "c", tensors={1: torch.zeros(1)})
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError):
        _save(tmp_path / "file")
    with pytest.raises(ConfigError):
        load_checkpoint(_save(tmp_path / "ok"), map_location="no-such-device")


def test_check_state_dict():
    expected = {"a": (2, 3), "b": torch.Size([4]), "c": [1], "d": torch.zeros(5, 5)}
    check_state_dict(
        expected, {"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1), "d": torch.ones(5, 5)}
    )
    with pytest.raises(CheckpointError) as ei:
        check_state_dict(
            expected, {"a": torch.zeros(3, 2), "b": torch.zeros(4), "e": torch.zeros(1)}, what="encoder"
        )
    msg = str(ei.value)
    assert "encoder" in msg
    assert "missing keys (2): c, d" in msg
    assert "unexpected keys (1): e" in msg
    assert "a: expected (2, 3), found (3, 2)" in msg
    assert isinstance(ei.value, TsclError)
