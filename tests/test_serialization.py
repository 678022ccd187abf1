import os
import subprocess
import sys

import numpy as np
import pytest

import scitensor as st
from scitensor.serialization import CheckpointError


@pytest.fixture
def path(tmp_path):
    return tmp_path / "ckpt.safetensors"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "int32",
                                   "int64", "bool"])
def test_round_trip_every_dtype(path, dtype, device):
    x = (st.randn(3, 5, device=device) * 4).astype(dtype)
    st.save(x, path)
    y = st.load(path, device=device)
    assert y.dtype == x.dtype and y.shape == x.shape and y.device == device
    np.testing.assert_array_equal(y.numpy().astype(np.float64), x.numpy().astype(np.float64))


def test_nested_state_round_trips_exactly(path):
    state = {"model": {"w": st.randn(4, 2), "b": st.zeros(2)},
             "opt": {"step": 12, "lr": 1e-3, "betas": (0.9, 0.999), "state": {0: [st.ones(3)]}},
             "name": "mlp", "flag": True, "nothing": None}
    st.save(state, path)
    back = st.load(path)
    assert back["opt"]["step"] == 12 and back["opt"]["betas"] == (0.9, 0.999)
    assert back["name"] == "mlp" and back["flag"] is True and back["nothing"] is None
    assert list(back["opt"]["state"].keys()) == [0]
    np.testing.assert_array_equal(back["model"]["w"].numpy(), state["model"]["w"].numpy())


def test_readable_by_safetensors_numpy_loader(path):
    from safetensors.numpy import load_file

    st.save({"layer": {"weight": st.arange(6).reshape(2, 3), "bias": st.ones(3)}}, path)
    arrays = load_file(str(path))
    assert set(arrays) == {"layer.weight", "layer.bias"}
    np.testing.assert_array_equal(arrays["layer.weight"], np.arange(6).reshape(2, 3))


def test_reads_files_written_by_safetensors(path):
    from safetensors.numpy import save_file

    save_file({"a": np.arange(4, dtype=np.float32)}, str(path))
    out = st.load(path)
    assert out["a"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_truncated_file_raises_clear_error(path):
    st.save({"w": st.ones(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        st.load(path)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="too short"):
        st.load(path)


def test_foreign_file_raises_clear_error(path):
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        st.load(path)


def test_unsupported_object_is_rejected_without_writing(path):
    with pytest.raises(TypeError, match="cannot store a object"):
        st.save({"x": object()}, path)
    assert not path.exists()


def test_interrupted_save_keeps_previous_checkpoint(path, tmp_path):
    st.save({"w": st.ones(3)}, path)
    # a writer killed half-way: it never reaches the rename
    script = (
        "import os, scitensor as st, scitensor.serialization as s\n"
        "real = os.replace\n"
        "os.replace = lambda *a: os._exit(9)\n"
        f"st.save({{'w': st.zeros(1000)}}, {str(path)!r})\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9
    assert st.load(path)["w"].tolist() == [1.0, 1.0, 1.0]
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    assert len(leftovers) <= 1  # the killed writer's temp file, never the target
