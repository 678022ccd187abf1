"""Checkpoints under failure: a writer killed mid-save, truncated, corrupted, foreign and
wrong-dtype files.

The contract (docs/errors.md): an interrupted save leaves the previous checkpoint intact;
loading a damaged file either raises :class:`scitensor.CheckpointError` naming the file and
the problem, or (a harmless change such as whitespace in the header) returns exactly the saved
object. Nothing else: no other exception type, no silently wrong values.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import scitensor as st
from scitensor import nn
from scitensor.serialization import CheckpointError


def _state():
    st.manual_seed(3)
    return {"model": {"w": st.randn(3, 4), "b": st.arange(5, dtype=st.int32)},
            "opt": {"step": 7, "lr": 0.5, "betas": (0.9, 0.99), "flag": True},
            "half": st.randn(2, dtype=st.float16), "name": "run-1"}


def _same(a, b) -> bool:
    if isinstance(a, st.Tensor):
        return (isinstance(b, st.Tensor) and a.dtype is b.dtype and a.shape == b.shape
                and a.numpy().tobytes() == b.numpy().tobytes())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    obj = _state()
    st.save(obj, path)
    return path, obj, path.read_bytes()


# ---- a writer killed part-way ------------------------------------------------------------

def test_writer_killed_mid_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    marker = tmp_path / "writing"
    old = {"w": st.arange(6, dtype=st.float32), "step": 1}
    st.save(old, path)
    before = path.read_bytes()
    # the child writes a 32 MiB checkpoint, stalls after its third write call (the header
    # and part of the data are on disk), and is killed with SIGKILL there
    script = textwrap.dedent(f"""
        import os, time, scitensor as st
        real_fdopen = os.fdopen

        class Stalling:
            def __init__(self, f):
                self.f, self.calls = f, 0
            def write(self, b):
                self.calls += 1
                if self.calls == 3:
                    self.f.write(b[: len(b) // 2])
                    self.f.flush()
                    open({str(marker)!r}, "w").close()
                    time.sleep(120)
                return self.f.write(b)
            def __getattr__(self, name):
                return getattr(self.f, name)
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                return self.f.__exit__(*exc)

        os.fdopen = lambda *a, **k: Stalling(real_fdopen(*a, **k))
        st.save({{"w": st.zeros(4 * 2**20), "extra": st.ones(4 * 2**20), "step": 2}},
                {str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the writer never reached the middle"
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -9
    assert path.read_bytes() == before, "the previous checkpoint was touched"
    assert _same(st.load(path), old)
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert len(partial) == 1, [p.name for p in tmp_path.iterdir()]
    with pytest.raises(CheckpointError, match="truncated"):
        st.load(partial[0])


def test_save_failing_midway_removes_its_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    st.save({"w": st.ones(3)}, path)

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space left"):
        st.save({"w": st.zeros(1000)}, path)
    assert st.load(path)["w"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]


# ---- truncated, corrupted, foreign, wrong dtype -------------------------------------------

def test_every_truncation_raises_checkpoint_error(saved, tmp_path):
    path, obj, data = saved
    cut = tmp_path / "cut.safetensors"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError):
            st.load(cut)
    cut.write_bytes(data)
    assert _same(st.load(cut), obj)


def _load_outcome(path, obj):
    """``"error"`` (a CheckpointError) or ``"same"``; anything else fails the test."""
    try:
        got = st.load(path)
    except CheckpointError as e:
        assert str(path) in str(e), f"the error does not name the file: {e}"
        return "error"
    assert _same(got, obj), "a damaged checkpoint loaded as a different object"
    return "same"


def test_every_single_byte_corruption_is_caught(saved, tmp_path):
    path, obj, data = saved
    bad = tmp_path / "bad.safetensors"
    outcomes = {"error": 0, "same": 0}
    for i in range(len(data)):
        for flip in (0x01, 0xFF):
            b = bytearray(data)
            b[i] ^= flip
            bad.write_bytes(bytes(b))
            outcomes[_load_outcome(bad, obj)] += 1
    assert outcomes["error"] > outcomes["same"]


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=hs.lists(hs.tuples(hs.integers(0, 10**6), hs.integers(0, 255)), min_size=1,
                      max_size=6))
def test_random_multi_byte_corruption_is_caught(saved, tmp_path, edits):
    path, obj, data = saved
    b = bytearray(data)
    for pos, value in edits:
        b[pos % len(b)] = value
    bad = tmp_path / "multi.safetensors"
    bad.write_bytes(bytes(b))
    _load_outcome(bad, obj)


def _raw_file(path, header: dict, payload: bytes):
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + payload)


@pytest.mark.parametrize("code", ["F8_E4M3", "U8", "C64", "I16", "", 7, None])
def test_unsupported_dtype_raises(tmp_path, code):
    path = tmp_path / "x.safetensors"
    _raw_file(path, {"x": {"dtype": code, "shape": [2], "data_offsets": [0, 2]}}, b"\0\0")
    with pytest.raises(CheckpointError, match=f"{path}.*'x'"):
        st.load(path)


@pytest.mark.parametrize("header, payload, match", [
    ({"x": {"dtype": "F64", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16,
     "needs 32 bytes"),  # the dtype says F64 but the data was written as F32
    ({"x": {"dtype": "F32", "shape": [-4], "data_offsets": [16, 0]}}, b"\0" * 16,
     "malformed"),  # a negative dimension
    ({"x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
      "__metadata__": ["not", "a", "dict"]}, b"\0" * 16, "__metadata__"),
    ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, b"\0" * 16,
     "truncated"),
    ({"x": ["F32", [4]]}, b"", "malformed"),
    ({"x": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4,
     "malformed"),
])
def test_inconsistent_headers_raise(tmp_path, header, payload, match):
    path = tmp_path / "x.safetensors"
    _raw_file(path, header, payload)
    with pytest.raises(CheckpointError, match=match):
        st.load(path)


@pytest.mark.parametrize("content", [b"", b"\0" * 7, b"PK\x03\x04" + b"\0" * 60,
                                     b"# a text file\n" * 20, b"\xff" * 64,
                                     struct.pack("<Q", 2) + b"[]"])
def test_foreign_files_raise(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path)):
        st.load(path)


def test_metadata_corruption_that_stays_valid_json_is_caught(saved, tmp_path):
    """A damaged key inside the saved structure still parses; the metadata checksum catches
    it (it would otherwise load as a different object)."""
    path, obj, data = saved
    n = struct.unpack("<Q", data[:8])[0]
    head = data[8:8 + n]
    target = b'\\"step\\"'
    assert target in head
    bad = tmp_path / "renamed.safetensors"
    bad.write_bytes(data[:8] + head.replace(target, b'\\"stop\\"') + data[8 + n:])
    with pytest.raises(CheckpointError, match="metadata"):
        st.load(bad)


def test_dtype_in_the_header_changed_is_caught(saved, tmp_path):
    """I32 -> F32 keeps every size right; the per-tensor checksum covers the dtype too."""
    path, obj, data = saved
    n = struct.unpack("<Q", data[:8])[0]
    head = data[8:8 + n]
    assert head.count(b'"I32"') == 1
    bad = tmp_path / "retyped.safetensors"
    bad.write_bytes(data[:8] + head.replace(b'"I32"', b'"F32"') + data[8 + n:])
    with pytest.raises(CheckpointError, match="corrupted"):
        st.load(bad)


def test_files_without_checksums_still_load(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"a": np.arange(4, dtype=np.float32)}, str(path))
    assert st.load(path)["a"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_wrong_dtype_state_is_cast_on_load_state_dict(tmp_path):
    """A float64 checkpoint loads into a float32 model (values rounded to float32)."""
    m64 = nn.Dense(3, 2).double()
    path = tmp_path / "m.safetensors"
    st.save(m64.state_dict(), path)
    m32 = nn.Dense(3, 2)
    m32.load_state_dict(st.load(path))
    assert m32.weight.dtype is st.float32
    np.testing.assert_array_equal(m32.weight.numpy(), m64.weight.numpy().astype(np.float32))


def test_colliding_names_keep_every_tensor(tmp_path):
    path = tmp_path / "c.safetensors"
    obj = {"a.b": st.ones(2), "a": {"b": st.zeros(3)}, "__metadata__": st.full((1,), 5.0)}
    st.save(obj, path)
    assert _same(st.load(path), obj)


def test_directory_and_missing_paths_raise_os_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        st.load(tmp_path / "missing.safetensors")
    with pytest.raises(IsADirectoryError):
        st.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        st.save({"w": st.ones(1)}, tmp_path / "no" / "such" / "dir.safetensors")
