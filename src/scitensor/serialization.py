"""Checkpoints: ``save`` / ``load`` tensors and nested state (dicts, lists, numbers) in the
safetensors format.

Files are standard safetensors (an 8-byte little-endian header length, a JSON header, the raw
little-endian tensor bytes), readable by the ``safetensors`` library's loaders. Tensors are
stored under dotted names (``"layers.0.weight"``); the nesting and every non-tensor value
(ints, floats, strings, bools, None) go into the header's ``__metadata__`` as JSON, so
``load`` rebuilds exactly the object that was saved. Writes are atomic: the file is written to
a temporary name in the same directory, flushed to disk and renamed over the target, so an
interrupted save leaves the previous checkpoint intact. A CRC-32 of every tensor's bytes goes
into the metadata too, so ``load`` detects corrupted data (files from other writers, without
checksums, load unverified); a truncated, corrupted or foreign file raises
:class:`CheckpointError`.

Example:
    >>> import os, tempfile, scitensor as st
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.safetensors")
    >>> st.save({"w": st.ones(2, 3), "step": 7}, path)
    >>> obj = st.load(path)
    >>> obj["w"].shape, obj["step"]
    ((2, 3), 7)
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib

import numpy as np

from . import dtypes as dt
from .tensor import Tensor, wrap

__all__ = ["CheckpointError", "load", "save"]

_CODES = {"bool": "BOOL", "int32": "I32", "int64": "I64", "float16": "F16",
          "bfloat16": "BF16", "float32": "F32", "float64": "F64"}
_FROM_CODE = {v: dt.as_dtype(k) for k, v in _CODES.items()}
_FORMAT_KEY = "scitensor.tree"
# CRC-32s that catch corruption: one per tensor (over its dtype, shape and bytes) and one over
# the rest of the metadata (the object's structure), under the key "__metadata__"
_CRC_KEY = "scitensor.crc32"
_META_CRC = "__metadata__"
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupted, or not a safetensors file."""


def _flatten(obj, prefix, tensors, path="obj"):
    """Split ``obj`` into a JSON-able skeleton and a {name: Tensor} dict."""
    if isinstance(obj, Tensor):
        name = base = prefix or "tensor"
        i = 1
        # {"a.b": x, "a": {"b": y}} would give both the name "a.b"; "__metadata__" is the
        # header's own entry
        while name in tensors or name == "__metadata__":
            name = f"{base}#{i}"
            i += 1
        tensors[name] = obj
        return {"__tensor__": name}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str | int):
                raise TypeError(f"save: dict keys must be str or int, got {type(k).__name__} "
                                f"at {path}")
            key = str(k)
            out[key] = _flatten(v, f"{prefix}.{key}" if prefix else key, tensors, f"{path}[{k!r}]")
        return {"__dict__": out, "__intkeys__": [str(k) for k in obj if isinstance(k, int)]}
    if isinstance(obj, list | tuple):
        items = [_flatten(v, f"{prefix}.{i}" if prefix else str(i), tensors, f"{path}[{i}]")
                 for i, v in enumerate(obj)]
        return {"__list__" if isinstance(obj, list) else "__tuple__": items}
    if obj is None or isinstance(obj, bool | int | float | str):
        return {"__value__": obj}
    if isinstance(obj, np.generic):
        return {"__value__": obj.item()}
    raise TypeError(f"save: cannot store a {type(obj).__name__} at {path}; checkpoints hold "
                    "tensors, dicts, lists, tuples, numbers, strings, bools and None")


def _unflatten(node, tensors):
    if "__tensor__" in node:
        return tensors[node["__tensor__"]]
    if "__dict__" in node:
        intkeys = set(node.get("__intkeys__", []))
        return {(int(k) if k in intkeys else k): _unflatten(v, tensors)
                for k, v in node["__dict__"].items()}
    if "__list__" in node:
        return [_unflatten(v, tensors) for v in node["__list__"]]
    if "__tuple__" in node:
        return tuple(_unflatten(v, tensors) for v in node["__tuple__"])
    return node["__value__"]


def save(obj, path, metadata: dict | None = None) -> None:
    """Write ``obj`` (a Tensor, or nested dicts/lists of tensors and plain values) to ``path``.

    Args:
        obj: what to save (a state dict, an optimizer state, a tensor...).
        path: the file to write (``.safetensors`` by convention); replaced atomically.
        metadata: extra string key/values stored in the header.
    """
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"save: metadata must be a dict of strings, got "
                        f"{type(metadata).__name__}")
    tensors: dict[str, Tensor] = {}
    skeleton = _flatten(obj, "", tensors)
    header: dict = {}
    blobs = []
    offset = 0
    checksums = {}
    for name, t in tensors.items():
        arr = np.ascontiguousarray(t.numpy())
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _CODES[t.dtype.name], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        checksums[name] = _tensor_crc(header[name], raw)
        blobs.append(raw)
        offset += len(raw)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[_FORMAT_KEY] = json.dumps(skeleton)
    checksums[_META_CRC] = _meta_crc(meta)
    meta[_CRC_KEY] = json.dumps(checksums)
    header["__metadata__"] = meta
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # align the data section to 8 bytes
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for raw in blobs:
                f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_header(f, path, size):
    first = f.read(8)
    if len(first) < 8:
        raise CheckpointError(f"load: {path} is {size} bytes, too short to be a safetensors "
                              "file (it may be truncated)")
    (n,) = struct.unpack("<Q", first)
    if n > min(_MAX_HEADER, size - 8):
        raise CheckpointError(f"load: {path} is not a safetensors file or is truncated (header "
                              f"length {n} does not fit in {size} bytes)")
    try:
        header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"load: {path} has a corrupted header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"load: {path} has a malformed header")
    return header, 8 + n


def _dim(n) -> int:
    """One shape entry of a header: a non-negative int (JSON may give anything)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(n)
    return n


def _tensor_crc(info: dict, raw: bytes) -> int:
    return zlib.crc32(raw, zlib.crc32(f"{info['dtype']}{list(info['shape'])}".encode()))


def _meta_crc(meta: dict) -> int:
    """CRC-32 of the metadata other than the checksums themselves."""
    rest = {k: v for k, v in meta.items() if k != _CRC_KEY}
    return zlib.crc32(json.dumps(rest, sort_keys=True).encode())


def _checksums(meta: dict, path) -> dict:
    text = meta.get(_CRC_KEY)
    if text is None:  # a file from another writer: nothing to verify
        return {}
    try:
        sums = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        sums = None
    if not isinstance(sums, dict) or not all(isinstance(v, int) for v in sums.values()):
        raise CheckpointError(f"load: {path}: the scitensor checksums in the header are "
                              "corrupted")
    expected = sums.pop(_META_CRC, None)
    if expected is not None and _meta_crc(meta) != expected:
        raise CheckpointError(f"load: {path} is corrupted: its metadata (the saved object's "
                              "structure) does not match the checksum written with it")
    return sums


def load(path, device=None):
    """Read a checkpoint written by :func:`save` (or any safetensors file).

    Args:
        path: the file.
        device: where to put the tensors (default: the CPU).

    Returns:
        The saved object; for a plain safetensors file, a ``{name: Tensor}`` dict.

    Raises:
        CheckpointError: the file is truncated, corrupted or not a safetensors file.
    """
    from .device import Device

    dev = Device("cpu" if device is None else device)
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header, data_start = _read_header(f, path, size)
        meta = header.pop("__metadata__", {}) or {}
        if not isinstance(meta, dict):
            raise CheckpointError(f"load: {path}: the header's __metadata__ is a "
                                  f"{type(meta).__name__}, not a dict of strings (corrupted?)")
        checksums = _checksums(meta, path)
        tensors = {}
        data_len = size - data_start
        for name, info in header.items():
            try:
                code = info["dtype"]
                shape = tuple(_dim(s) for s in info["shape"])
                begin, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"load: {path}: entry {name!r} has malformed fields (dtype, "
                                      f"shape, data_offsets): {info!r:.120}") from None
            d = _FROM_CODE.get(code) if isinstance(code, str) else None
            if d is None:
                raise CheckpointError(f"load: {path}: tensor {name!r} has dtype {code!r:.20}, "
                                      "which scitensor does not support (it reads "
                                      f"{', '.join(_FROM_CODE)})")
            expected = int(np.prod(shape)) * d.itemsize
            if end - begin != expected or begin < 0:
                raise CheckpointError(f"load: {path}: tensor {name!r} ({d.name}, {shape}) "
                                      f"needs {expected} bytes but its offsets give {end - begin}"
                                      " (a wrong dtype or shape in the header?)")
            if end > data_len:
                raise CheckpointError(f"load: {path} is truncated: tensor {name!r} ends at byte "
                                      f"{end} of a {data_len}-byte data section")
            f.seek(data_start + begin)
            raw = f.read(end - begin)
            crc = checksums.get(name)
            if crc is not None and _tensor_crc(info, raw) != crc:
                raise CheckpointError(f"load: {path} is corrupted: the bytes of tensor {name!r} "
                                      f"({d.name}, {shape}) do not match the checksum written "
                                      "with them")
            arr = np.frombuffer(raw, dtype=d.np.newbyteorder("<"))
            arr = arr.astype(d.np).reshape(shape)
            data = arr if dev.type == "cpu" else dev.backend.asarray(arr, d)
            tensors[name] = wrap(data, dev)
    tree = meta.get(_FORMAT_KEY)
    if tree is None:
        return tensors
    try:
        return _unflatten(json.loads(tree), tensors)
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"load: {path}: the scitensor metadata is corrupted "
                              f"({type(e).__name__}: {e})") from None
