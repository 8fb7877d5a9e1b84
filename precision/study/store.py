"""The results store of a study: canonical JSON, atomic files, cell identity.

Layout of an output folder ``<out>``::

    <out>/raw/grid.json             the grid in order: [{"id", "params"}, ...] (+ study name, version)
    <out>/raw/cells/<id>.json       one finished cell: {"id", "params", "result", "study", "version",
                                    "sha256"} (the checksum of the other five, see Store.read_cell)
    <out>/raw/failures/<id>.json    one failed cell: params, exception type, message, traceback
    <out>/summary.csv               one row per cell, grid order
    <out>/provenance.json           version, commit, platform, times, command line (the only timed file)

Every file is written atomically (:func:`write_atomic`): the bytes go to a temporary file in the same
folder (named ``.<name>.<pid>.<random>.tmp``), are flushed and fsync'ed, and the temporary file is renamed
over the destination with :func:`os.replace`, which is atomic on POSIX and Windows. A reader therefore sees
either the previous file or the complete new one, never a prefix; a run killed mid-write leaves at most a
temporary file, which readers ignore and the next run deletes.

Encoding (:func:`encode` / :func:`decode`). Results are trees of dicts (string keys), lists, strings,
booleans, integers, floats, None, numpy scalars and numpy arrays. JSON has no NaN or infinity, so:

* a finite float is a JSON number written with ``repr`` (the shortest string that reads back to the same
  double), so the text is a function of the value alone, on every platform;
* a non-finite float scalar is ``{"__float__": "nan" | "inf" | "-inf"}``;
* an array of at most ``INLINE_ARRAY_LIMIT`` (256) entries is
  ``{"__ndarray__": {"dtype": name, "shape": [...], "data": [flat, row-major]}}``, readable in the file;
  its float entries are numbers or the strings ``"nan"``, ``"inf"``, ``"-inf"`` (NaN payloads and NaN
  signs are not kept). A larger array (a per-iteration trace) is
  ``{"__ndarray__": {"dtype": name, "shape": [...], "base64": <its bytes, little-endian, row-major>}}``:
  bit-exact (NaN payloads included), and about 50 times faster to write and read than JSON numbers
  (CPython spends ~0.7 µs formatting one float). Either way the dtype (float16, bfloat16, float32,
  float64, integers, bool) and every value, including -0.0, survive the round trip;
* numpy scalars become Python bool, int or float (values are kept exactly; the dtype is not: store a 0-d
  array to keep it); tuples become lists.

Objects are written with sorted keys and no whitespace, so equal results give byte-identical files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np

_FLOAT_TAG = "__float__"
_ARRAY_TAG = "__ndarray__"
_RESERVED_KEYS = (_FLOAT_TAG, _ARRAY_TAG)
_NONFINITE_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

TEMP_SUFFIX = ".tmp"


# --------------------------------------------------------------------------------------------------
# encoding

def _float_to_json(x: float) -> Any:
    if math.isfinite(x):
        return x
    return {_FLOAT_TAG: _nonfinite_name(x)}


def _nonfinite_name(x: float) -> str:
    if math.isnan(x):
        return "nan"
    return "inf" if x > 0 else "-inf"


def _array_dtype_kind(array: np.ndarray) -> str:
    """'f' for floating arrays (numpy's and ml_dtypes' 16- and 8-bit floats), else numpy's kind."""
    if array.dtype.kind == "f":
        return "f"
    if array.dtype.kind == "V" and array.dtype.names is None:
        # ml_dtypes types (bfloat16, float8_*) report kind 'V'; they convert exactly to float64.
        try:
            import ml_dtypes

            ml_dtypes.finfo(array.dtype)
            return "f"
        except Exception:
            pass
    return array.dtype.kind


INLINE_ARRAY_LIMIT = 256


def _array_to_json(array: np.ndarray, inline_limit: int) -> dict:
    kind = _array_dtype_kind(array)
    if kind not in "fiub":
        raise TypeError(
            f"cannot store a numpy array of dtype {array.dtype} in a study result "
            "(supported: float, integer and bool arrays)")
    if array.size > inline_limit:
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        bits = np.ascontiguousarray(array).view(f"u{array.dtype.itemsize}")
        raw = bits.astype(f"<u{array.dtype.itemsize}", copy=False).tobytes()
        return {_ARRAY_TAG: {"dtype": array.dtype.name, "shape": list(array.shape),
                             "base64": base64.b64encode(raw).decode("ascii")}}
    if kind == "f":
        with np.errstate(invalid="ignore"):  # signalling NaNs (e.g. in bfloat16) widen quietly
            flat = array.astype(np.float64).ravel().tolist()  # exact for every float format
        data = [v if math.isfinite(v) else _nonfinite_name(v) for v in flat]
    else:
        data = array.ravel().tolist()
    return {_ARRAY_TAG: {"dtype": array.dtype.name, "shape": list(array.shape), "data": data}}


def encode(value: Any, _path: str = "result", *, inline_limit: int = INLINE_ARRAY_LIMIT) -> Any:
    """Turn a result tree into plain JSON types, faithfully (see the module docstring).

    Arrays with more than `inline_limit` entries are stored as base64 bytes, smaller ones as numbers.
    Raises TypeError for anything that has no faithful encoding (complex numbers, objects, non-string
    dict keys) and ValueError for dict keys that collide with the encoding's tags.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _float_to_json(float(value))
    if isinstance(value, np.ndarray):
        return _array_to_json(value, inline_limit)
    if isinstance(value, np.generic) and _array_dtype_kind(np.asarray(value)) == "f":
        return _float_to_json(float(value))  # ml_dtypes scalars (bfloat16) are not np.floating
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{_path}: dict keys must be strings, got {key!r}")
            if key in _RESERVED_KEYS:
                raise ValueError(f"{_path}: the key {key!r} is reserved by the results encoding")
            out[key] = encode(item, f"{_path}[{key!r}]", inline_limit=inline_limit)
        return out
    if isinstance(value, (list, tuple)):
        return [encode(item, f"{_path}[{i}]", inline_limit=inline_limit) for i, item in enumerate(value)]
    raise TypeError(f"{_path}: cannot store a {type(value).__name__} in a study result")


def _dtype_from_name(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))


def _decode_object(obj: dict) -> Any:
    if len(obj) == 1 and _FLOAT_TAG in obj:
        return _NONFINITE_NAMES[obj[_FLOAT_TAG]]
    if len(obj) == 1 and _ARRAY_TAG in obj:
        spec = obj[_ARRAY_TAG]
        dtype = _dtype_from_name(spec["dtype"])
        if "base64" in spec:
            bits = np.frombuffer(base64.b64decode(spec["base64"]), dtype=f"<u{dtype.itemsize}")
            return bits.astype(f"=u{dtype.itemsize}").view(dtype).reshape(spec["shape"])
        data = spec["data"]
        if data and any(isinstance(v, str) for v in data):
            data = [_NONFINITE_NAMES[v] if isinstance(v, str) else v for v in data]
        if _array_dtype_kind(np.empty(0, dtype)) == "f":
            # Every stored value is exactly representable in `dtype`, so this cast rounds nothing.
            array = np.array(data, dtype=np.float64).astype(dtype)
        else:
            array = np.array(data, dtype=dtype)
        return array.reshape(spec["shape"])
    return obj


def decode(tree: Any) -> Any:
    """Inverse of :func:`encode` on a tree already parsed from JSON."""
    if isinstance(tree, dict):
        return _decode_object({k: decode(v) if k not in _RESERVED_KEYS else v for k, v in tree.items()})
    if isinstance(tree, list):
        return [decode(v) for v in tree]
    return tree


def dumps(tree: Any) -> str:
    """Canonical JSON text of an already encoded tree: sorted keys, no spaces, floats by repr."""
    return json.dumps(tree, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=False) + "\n"


def loads(text: str) -> Any:
    """Parse canonical JSON and decode the tagged floats and arrays."""
    return decode(json.loads(text))


# --------------------------------------------------------------------------------------------------
# cell identity

def canonical_params(params: Any) -> dict:
    """Validate cell parameters and return them as plain JSON values (numpy scalars converted).

    Parameters must be a dict with string keys whose values are str, bool, int, finite float, None,
    or lists/dicts of those: they name the cell, so they must print the same way everywhere.
    """
    if not isinstance(params, dict):
        raise TypeError(f"a cell's parameters must be a dict, got {type(params).__name__}")
    plain = encode(params, "params")

    def check(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if _FLOAT_TAG in node or _ARRAY_TAG in node:
                raise ValueError(f"{path}: cell parameters must be finite scalars, strings or lists "
                                 "(no NaN, infinity or arrays)")
            for key, item in node.items():
                check(item, f"{path}[{key!r}]")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                check(item, f"{path}[{i}]")

    check(plain, "params")
    return plain


_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def cell_id(params: dict) -> str:
    """Stable identity of a cell: a readable slug of the values plus a hash of the canonical params.

    ``id = slug + "-" + sha256(canonical JSON of params)[:12]`` where the slug joins the values in
    sorted-key order with '-' (characters other than letters, digits and ``._+-`` replaced by '_', cut to
    60 characters, no leading '-', so file names are shell-safe). The hash alone decides identity; the
    slug is for people listing the folder. Key order in the dict does not matter.
    """
    plain = canonical_params(params)
    digest = hashlib.sha256(dumps(plain).encode("utf-8")).hexdigest()[:12]
    parts = []
    for key in sorted(plain):
        value = plain[key]
        text = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)
        parts.append(_SLUG_UNSAFE.sub("_", text).strip("_"))
    slug = "-".join(p for p in parts if p)[:60].strip("-")
    return f"{slug}-{digest}" if slug else digest


# --------------------------------------------------------------------------------------------------
# atomic files

def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms where a directory cannot be opened (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path | str, text: str) -> None:
    """Write `text` (UTF-8) to `path` so that readers see the old file or the whole new one.

    Temp file in the same folder -> write -> flush -> fsync -> os.replace -> fsync the folder.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    try:
        with open(temp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def is_temp_file(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)


def remove_temp_files(directory: Path) -> int:
    """Delete leftover temporary files of interrupted writes in `directory`; return how many."""
    removed = 0
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.is_file() and is_temp_file(entry):
                entry.unlink(missing_ok=True)
                removed += 1
    return removed


# --------------------------------------------------------------------------------------------------
# the folder of one study run

_CHECKSUM_KEY = "sha256"
_CELL_KEYS = frozenset({"id", "params", "result", "study", "version", _CHECKSUM_KEY})


def _checksum(doc: dict) -> str:
    """sha256 of the canonical text of a cell file's fields other than the checksum itself."""
    fields = {key: value for key, value in doc.items() if key != _CHECKSUM_KEY}
    return hashlib.sha256(dumps(fields).encode("utf-8")).hexdigest()

class Store:
    """Paths and reads/writes of one output folder (see the module docstring for the layout)."""

    def __init__(self, out_dir: Path | str):
        self.out_dir = Path(out_dir)
        self.raw_dir = self.out_dir / "raw"
        self.cells_dir = self.raw_dir / "cells"
        self.failures_dir = self.raw_dir / "failures"
        self.grid_path = self.raw_dir / "grid.json"
        self.summary_path = self.out_dir / "summary.csv"
        self.provenance_path = self.out_dir / "provenance.json"
        self.lock_path = self.raw_dir / ".lock"

    def create(self) -> None:
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        self.failures_dir.mkdir(parents=True, exist_ok=True)

    def remove_temp_files(self) -> int:
        return sum(remove_temp_files(d) for d in (self.out_dir, self.raw_dir, self.cells_dir,
                                                  self.failures_dir))

    def cell_path(self, cid: str) -> Path:
        return self.cells_dir / f"{cid}.json"

    def failure_path(self, cid: str) -> Path:
        return self.failures_dir / f"{cid}.json"

    # grid -----------------------------------------------------------------------------------------
    def write_grid(self, study: str, version: str, ids: list[str], params: list[dict]) -> None:
        doc = {"study": study, "version": version,
               "cells": [{"id": cid, "params": p} for cid, p in zip(ids, params)]}
        write_atomic(self.grid_path, dumps(doc))

    def read_grid(self) -> dict:
        if not self.grid_path.is_file():
            raise FileNotFoundError(f"{self.out_dir} holds no study results (missing {self.grid_path})")
        return json.loads(self.grid_path.read_text(encoding="utf-8"))

    # cells ----------------------------------------------------------------------------------------
    def write_cell(self, study: str, version: str, cid: str, params: dict, encoded_result: Any) -> None:
        doc = {"id": cid, "params": params, "result": encoded_result, "study": study,
               "version": version}
        doc[_CHECKSUM_KEY] = _checksum(doc)
        write_atomic(self.cell_path(cid), dumps(doc))
        self.failure_path(cid).unlink(missing_ok=True)

    def read_cell(self, cid: str, params: dict | None = None, version: str | None = None):
        """The decoded result of a finished cell, or None when there is no valid file for it.

        A file counts only if it is exactly what :meth:`write_cell` writes: canonical JSON text of an
        object with the keys id, params, result, study, version and sha256, where sha256 is the checksum
        of the canonical text of the other five, id is this cell's, the result decodes to a dict (and
        re-encodes to the same text) and, when given, params and version are these. Anything else --
        absent, truncated, edited, written by another program or by a precision without checksums --
        means "not finished", so the cell is recomputed and its file never trusted.
        Returns (result, problem) where problem is None or a string saying why a file was rejected.
        """
        path = self.cell_path(cid)
        if not path.is_file():
            return None, None
        try:
            text = path.read_text(encoding="utf-8")
            doc = json.loads(text)
        except (OSError, ValueError) as error:
            return None, f"{path} is unreadable ({error})"
        if not isinstance(doc, dict) or doc.get("id") != cid or set(doc) != _CELL_KEYS:
            return None, f"{path} is not a result file for cell {cid}"
        if doc[_CHECKSUM_KEY] != _checksum(doc) or text != dumps(doc):
            return None, f"{path} was modified after it was written (its checksum does not match)"
        if params is not None and doc["params"] != params:
            return None, f"{path} holds other parameters than cell {cid}"
        if version is not None and doc["version"] != version:
            return None, f"{path} was computed by study version {doc['version']!r}, not {version!r}"
        try:
            result = decode(doc["result"])
            if not isinstance(result, dict) or dumps(encode(result)) != dumps(doc["result"]):
                raise ValueError("the result does not round-trip")
        except Exception as error:
            return None, f"{path} holds a result that cannot be decoded ({type(error).__name__}: {error})"
        return result, None

    # failures -------------------------------------------------------------------------------------
    def write_failure(self, cid: str, record: dict) -> None:
        write_atomic(self.failure_path(cid), dumps(encode(record, "failure")))

    def read_failure(self, cid: str) -> dict | None:
        path = self.failure_path(cid)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def discard(self, cid: str) -> None:
        self.cell_path(cid).unlink(missing_ok=True)
        self.failure_path(cid).unlink(missing_ok=True)
