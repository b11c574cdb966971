"""Safe, versioned checkpoints: ``config.json`` + ``model.safetensors`` in one directory. No pickle, ever.

Layout of a checkpoint directory::

    ckpt/
      config.json        {"format": "tscl-checkpoint", "format_version": 1, "tscl_version": ..., "kind": ...,
                          "created": ISO-8601, "config": {...}, "extra": {...},
                          "tensors": {name: {"shape": [...], "dtype": "float32"}}, "sha256": "<hex of weights>"}
      model.safetensors  the tensors, written with :func:`safetensors.torch.save_file`

Writes are atomic: every file is written to a temporary file in the same directory, flushed and fsynced, then
``os.replace``'d into place.  The weights are renamed first and ``config.json`` last, so the config is the commit
point; because it records the SHA-256 of the weights, a config that does not belong to the weights next to it
(crash between the two renames, concurrent writers, hand edits) is detected on load instead of silently used.

Loading uses :func:`safetensors.torch.load_file` only; files written by ``torch.save``/``pickle`` are refused with a
message naming the safe format, because unpickling can execute arbitrary code.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import secrets
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tscl.errors import CheckpointError, ConfigError

if TYPE_CHECKING:  # torch is imported lazily so that atomic_write_json & co stay light
    import torch

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "save_checkpoint",
    "load_checkpoint",
    "check_state_dict",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_bytes",
    "to_jsonable",
]

FORMAT_NAME = "tscl-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".joblib")
_SAFE_FORMAT_HINT = (
    f"tscl only loads its safe format: a directory containing {CONFIG_FILE} and {WEIGHTS_FILE} "
    "(written by tscl.io.save_checkpoint / ContrastiveModel.save)"
)


# --------------------------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------------------------
def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _create_tmp(path: Path) -> tuple[Path, int]:
    """Create a fresh temporary file next to ``path`` (mode 0o666 & ~umask, like a normal file)."""
    for _ in range(100):
        tmp = _tmp_path(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return tmp, fd
    raise OSError(f"could not create a temporary file next to {path}")


def _chmod_like_new_file(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (POSIX); silently skipped where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _prepare_tmp(path: Path, writer: Callable[[IO[bytes]], None]) -> Path:
    """Write a temp file next to ``path`` with ``writer(fileobj)``, flush and fsync it; return the temp path."""
    tmp, fd = _create_tmp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quiet(tmp)
        raise
    return tmp


def _atomic_write(path: str | os.PathLike, writer: Callable[[IO[bytes]], None]) -> Path:
    """Atomically create/replace ``path`` with what ``writer`` writes into a binary file object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _prepare_tmp(path, writer)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, ``os.replace``)."""
    return _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same directory, fsync, ``os.replace``)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (e.g. ``metrics.json``).

    numpy scalars/arrays, tuples, 0-d tensors and paths are converted (see :func:`to_jsonable`); NaN/inf become
    ``null`` so the file stays standard JSON; anything else that JSON cannot represent raises :class:`ConfigError`.
    """
    text = json.dumps(
        to_jsonable(obj, strict_floats=False), indent=indent, allow_nan=False, ensure_ascii=False
    )
    return atomic_write_text(path, text + "\n")


# --------------------------------------------------------------------------------------------------------------
# JSON conversion
# --------------------------------------------------------------------------------------------------------------
def _key_str(where: str, key: Any) -> str:
    return f"{where}[{key!r}]" if where else repr(key)


def to_jsonable(obj: Any, *, where: str = "", strict_floats: bool = True) -> Any:
    """Return a JSON-serialisable copy of ``obj``; raise :class:`ConfigError` naming the offending key.

    Converts numpy scalars and arrays, tuples/lists, 0-d torch tensors and :class:`os.PathLike` objects.
    Integer (and numpy integer) dict keys become strings, as JSON requires. With ``strict_floats`` NaN/inf raise
    (they are not valid JSON); otherwise they become ``None``. Nothing is ever pickled.
    """
    import numpy as np

    label = where or "<root>"
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            if strict_floats:
                raise ConfigError(
                    f"config value at {label} is {obj!r}, which is not valid JSON; use None or a finite number"
                )
            return None
        return float(obj)
    if isinstance(obj, np.generic):  # numpy scalar (np.float32, np.int64, np.bool_, np.str_, ...)
        if isinstance(obj, (np.complexfloating, np.void, np.datetime64, np.timedelta64)):
            raise ConfigError(
                f"config value at {label} has numpy type {type(obj).__name__}, which cannot be stored as JSON; "
                "convert it to a number or string first"
            )
        return to_jsonable(obj.item(), where=where, strict_floats=strict_floats)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufUS" and obj.dtype != object:
            raise ConfigError(
                f"config value at {label} is a numpy array of dtype {obj.dtype}, which cannot be stored as JSON"
            )
        return to_jsonable(obj.tolist(), where=where, strict_floats=strict_floats)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            sub = _key_str(where, k)
            if isinstance(k, str):
                key = k
            elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
                key = str(int(k))
            else:
                raise ConfigError(
                    f"config key {sub} has type {type(k).__name__}; JSON object keys must be strings (or ints)"
                )
            if key in out:
                raise ConfigError(
                    f"config key {sub} collides with another key once converted to the string {key!r}"
                )
            out[key] = to_jsonable(v, where=sub, strict_floats=strict_floats)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, where=f"{where}[{i}]", strict_floats=strict_floats) for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if type(obj).__module__.startswith("torch") and hasattr(obj, "numel") and hasattr(obj, "item"):
        if obj.numel() == 1 and obj.dim() == 0:
            return to_jsonable(obj.item(), where=where, strict_floats=strict_floats)
        raise ConfigError(
            f"config value at {label} is a tensor of shape {tuple(obj.shape)}; put tensors in `tensors=`, "
            "not in the JSON config"
        )
    raise ConfigError(
        f"config value at {label} has type {type(obj).__name__}, which cannot be stored as JSON; "
        "use numbers, strings, bools, None, lists and dicts (tscl never pickles configs)"
    )


# --------------------------------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------------------------------
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _prepare_tensors(tensors: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(tensors, Mapping):
        raise ConfigError(f"tensors must be a dict of name -> torch.Tensor, got {type(tensors).__name__}")
    out: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"tensor names must be non-empty strings, got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise ConfigError(f"tensor {name!r} is a {type(t).__name__}, expected torch.Tensor")
        if t.is_sparse or t.layout != torch.strided:
            raise ConfigError(f"tensor {name!r} has layout {t.layout}; only dense tensors can be saved")
        t = t.detach()
        if t.device.type != "cpu":
            t = t.to("cpu")
        t = t.contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if (
            ptr is not None and ptr in seen_storage
        ):  # shares memory with an earlier tensor: store its own copy
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        if ptr is not None:
            seen_storage.add(ptr)
        out[name] = t
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str,
    config: dict,
    tensors: dict[str, torch.Tensor],
    extra: dict | None = None,
) -> Path:
    """Save ``tensors`` + ``config`` as a checkpoint directory at ``path`` (created with parents); return it.

    ``kind`` names what was saved (e.g. ``"contrastive_model"``) so loaders can dispatch on it. ``config`` holds
    what is needed to rebuild the model; ``extra`` free-form JSON (metrics, data info). Both must be
    JSON-serialisable after numpy/tuple conversion, otherwise :class:`ConfigError` names the offending key.
    """
    from safetensors.torch import save_file

    import tscl

    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"kind must be a non-empty string, got {kind!r}")
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a dict, got {type(config).__name__}")
    if extra is not None and not isinstance(extra, Mapping):
        raise ConfigError(f"extra must be a dict or None, got {type(extra).__name__}")
    cfg_json = to_jsonable(config, where="config")
    extra_json = to_jsonable(extra or {}, where="extra")
    prepared = _prepare_tensors(tensors)

    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"cannot save a checkpoint to {directory}: it exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / WEIGHTS_FILE
    config_path = directory / CONFIG_FILE

    # 1) both temp files fully written and fsynced before anything visible changes
    weights_tmp, fd = _create_tmp(weights_path)
    os.close(fd)
    config_tmp: Path | None = None
    try:
        save_file(prepared, str(weights_tmp), metadata={"format": "pt", "tscl_format": FORMAT_NAME})
        _chmod_like_new_file(weights_tmp)  # safetensors recreates the file with mode 0600
        _fsync_file(weights_tmp)
        digest = _sha256_file(weights_tmp)
        doc = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "tscl_version": tscl.__version__,
            "kind": kind,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": cfg_json,
            "extra": extra_json,
            "tensors": {
                n: {"shape": list(t.shape), "dtype": _dtype_name(t.dtype)} for n, t in prepared.items()
            },
            "sha256": digest,
        }
        text = json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
        config_tmp = _prepare_tmp(config_path, lambda f: f.write(text.encode("utf-8")))
        # 2) weights first, config last: config.json is the commit point (and carries the weights' sha256)
        os.replace(weights_tmp, weights_path)
        os.replace(config_tmp, config_path)
    except BaseException:
        _unlink_quiet(weights_tmp)
        if config_tmp is not None:
            _unlink_quiet(config_tmp)
        raise
    _fsync_dir(directory)
    return directory


# --------------------------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------------------------
def _looks_like_pickle(path: Path) -> str | None:
    """Return a description if ``path`` looks like a pickle / torch.save file, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if head[:1] == b"\x80":
        return "a pickle file"
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                if any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist()):
                    return "a torch.save zip archive (contains data.pkl, a pickle)"
        except (zipfile.BadZipFile, OSError):
            return None
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        return f"a {path.suffix} file (the usual extension of torch.save / pickle files)"
    return None


def _refuse_file(path: Path) -> CheckpointError:
    pickle_kind = _looks_like_pickle(path)
    if pickle_kind is not None:
        return CheckpointError(
            f"{path} is {pickle_kind}; tscl refuses to unpickle untrusted data (unpickling can run arbitrary "
            f"code). {_SAFE_FORMAT_HINT}. Convert it once in a trusted environment: load it yourself and "
            "re-save with tscl.io.save_checkpoint."
        )
    if path.name in (CONFIG_FILE, WEIGHTS_FILE):
        return CheckpointError(
            f"{path} is a file inside a checkpoint; pass the checkpoint directory {path.parent} instead"
        )
    return CheckpointError(f"{path} is a file, not a checkpoint directory. {_SAFE_FORMAT_HINT}.")


def _read_config(config_path: Path) -> dict:
    try:
        raw = config_path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {config_path}: {e}") from e
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{config_path} is not valid JSON ({e}); the checkpoint is corrupt or was edited by hand. "
            "Restore it from a good copy or re-save the model."
        ) from e
    if not isinstance(doc, dict):
        raise CheckpointError(
            f"{config_path} must contain a JSON object, found {type(doc).__name__}. {_SAFE_FORMAT_HINT}."
        )
    return doc


def _validate_header(doc: dict, config_path: Path) -> None:
    fmt = doc.get("format")
    if fmt != FORMAT_NAME:
        raise CheckpointError(
            f"{config_path} has format {fmt!r}, expected {FORMAT_NAME!r}: this is not a tscl checkpoint "
            f"(or the field was edited). {_SAFE_FORMAT_HINT}."
        )
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(
            f"{config_path} has an unknown format_version {version!r}; this tscl reads format_version "
            f"{FORMAT_VERSION}. The file is corrupt or was not written by tscl."
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format_version {version}, newer than the {FORMAT_VERSION} this tscl "
            f"(version {_tscl_version()}) can read; it was written by tscl {doc.get('tscl_version', '?')}. "
            "Upgrade tscl to load it."
        )
    tensors = doc.get("tensors")
    if not isinstance(tensors, dict) or not all(
        isinstance(v, dict)
        and isinstance(v.get("shape"), list)
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v["shape"])
        and isinstance(v.get("dtype"), str)
        for v in tensors.values()
    ):
        raise CheckpointError(
            f'{config_path} has a missing or malformed "tensors" section (expected '
            '{name: {"shape": [ints], "dtype": str}}); the checkpoint is corrupt or was edited by hand.'
        )
    sha = doc.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise CheckpointError(
            f'{config_path} has a missing or malformed "sha256" field; the checkpoint is corrupt or was edited '
            "by hand. Re-save the model."
        )
    for key, typ in (("kind", str), ("config", dict), ("extra", dict)):
        if key in doc and not isinstance(doc[key], typ):
            raise CheckpointError(f'{config_path}: field "{key}" must be a {typ.__name__}')


def _tscl_version() -> str:
    import tscl

    return tscl.__version__


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Load a checkpoint directory; return ``(config_json, tensors)``.

    ``config_json`` is the whole ``config.json`` document (model settings are under ``["config"]``).
    Raises :class:`CheckpointError` for anything that is not an intact tscl checkpoint: missing paths, pickle /
    ``torch.save`` files (never unpickled), bad JSON, unknown format or version, weights whose SHA-256 differs
    from the one in the config, unreadable safetensors headers, and tensors that disagree with the config.
    """
    import torch
    from safetensors.torch import load_file

    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(
            f"map_location must be a device such as 'cpu' or 'cuda:0', got {map_location!r}"
        ) from e
    p = Path(path)
    if not p.exists():
        raise CheckpointError(
            f"no checkpoint at {p}: the path does not exist. Pass the directory written by "
            "tscl.io.save_checkpoint / ContrastiveModel.save (it holds config.json and model.safetensors)."
        )
    if not p.is_dir():
        raise _refuse_file(p)

    config_path = p / CONFIG_FILE
    weights_path = p / WEIGHTS_FILE
    missing = [n for n, q in ((CONFIG_FILE, config_path), (WEIGHTS_FILE, weights_path)) if not q.is_file()]
    if missing:
        pickles = sorted(
            q.name
            for q in p.iterdir()
            if q.is_file() and q.suffix.lower() in (".pt", ".pth", ".ckpt", ".pkl")
        )
        msg = f"{p} is not a tscl checkpoint: missing {' and '.join(missing)}."
        if pickles:
            msg += (
                f" It contains {', '.join(pickles)}: those are pickle (torch.save) files, which tscl refuses to"
                " load because unpickling can run arbitrary code."
            )
        raise CheckpointError(f"{msg} {_SAFE_FORMAT_HINT}.")

    doc = _read_config(config_path)
    _validate_header(doc, config_path)

    digest = _sha256_file(weights_path)
    if digest != doc["sha256"].lower():
        raise CheckpointError(
            f"{weights_path} does not match {config_path}: its SHA-256 is {digest[:16]}..., the config expects "
            f"{doc['sha256'][:16]}.... The weights were tampered with, half-written, or belong to another save. "
            "Re-save the model or restore both files from the same save."
        )

    try:
        tensors = load_file(str(weights_path), device="cpu")
    except Exception as e:  # SafetensorError, OSError, ...
        raise CheckpointError(
            f"cannot read the safetensors header of {weights_path} ({e}); the file is corrupt or not a "
            "safetensors file. Re-save the model or restore it from a good copy."
        ) from e

    expected = doc["tensors"]
    problems: list[str] = []
    missing_t = sorted(set(expected) - set(tensors))
    unexpected_t = sorted(set(tensors) - set(expected))
    if missing_t:
        problems.append(f"listed in config but missing from weights: {', '.join(missing_t)}")
    if unexpected_t:
        problems.append(f"in weights but not listed in config: {', '.join(unexpected_t)}")
    for name in sorted(set(expected) & set(tensors)):
        t, spec = tensors[name], expected[name]
        if list(t.shape) != spec["shape"]:
            problems.append(f"{name}: config shape {spec['shape']} vs file {list(t.shape)}")
        if _dtype_name(t.dtype) != spec["dtype"]:
            problems.append(f"{name}: config dtype {spec['dtype']} vs file {_dtype_name(t.dtype)}")
    if problems:
        raise CheckpointError(
            f"the tensors in {weights_path} disagree with the 'tensors' section of {config_path}: "
            + "; ".join(problems)
            + ". The checkpoint is inconsistent (edited by hand?); re-save the model."
        )
    if device.type != "cpu":
        try:
            tensors = {k: v.to(device) for k, v in tensors.items()}
        except (RuntimeError, AssertionError) as e:
            raise CheckpointError(f"cannot move the checkpoint's tensors to {device}: {e}") from e
    return doc, tensors


# --------------------------------------------------------------------------------------------------------------
# state-dict comparison
# --------------------------------------------------------------------------------------------------------------
def _fmt_names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_state_dict(
    expected: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    *,
    what: str = "model",
) -> None:
    """Check that ``tensors`` has exactly the names and shapes in ``expected`` (name -> shape).

    ``expected`` values may be tuples, lists, ``torch.Size`` or tensors (their shape is used). Raises
    :class:`CheckpointError` listing missing keys, unexpected keys and shape mismatches (expected vs found).
    """

    def shape_of(v: Any) -> tuple[int, ...]:
        return tuple(int(s) for s in (v.shape if hasattr(v, "shape") else v))

    exp = {k: shape_of(v) for k, v in expected.items()}
    got = {k: shape_of(v) for k, v in tensors.items()}
    missing = sorted(set(exp) - set(got))
    unexpected = sorted(set(got) - set(exp))
    mismatched = [
        f"{k}: expected {exp[k]}, found {got[k]}" for k in sorted(set(exp) & set(got)) if exp[k] != got[k]
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_fmt_names(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_fmt_names(unexpected)}")
    if mismatched:
        parts.append(f"shape mismatches ({len(mismatched)}): {_fmt_names(mismatched)}")
    raise CheckpointError(
        f"the checkpoint does not fit the {what}: "
        + "; ".join(parts)
        + f". It was probably saved with different settings than the {what} being built; rebuild it from the "
        "checkpoint's own config.json or use a matching checkpoint."
    )
