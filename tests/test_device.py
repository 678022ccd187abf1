"""Devices: parsing, interning, errors, the default device, devices() and best_device()."""

from __future__ import annotations

import logging
import pickle
import threading

import numpy as np
import pytest

import scitensor as st

CUDA_OK = st.cuda_status()[0]


@pytest.fixture(autouse=True)
def _restore_default_device():
    yield
    st.set_default_device("cpu")


def test_parsing_and_interning():
    cpu = st.Device("cpu")
    assert cpu is st.Device() is st.Device("CPU") is st.Device("cpu:0") is st.Device("cpu", 0)
    assert cpu.type == "cpu" and cpu.index is None and str(cpu) == "cpu"
    c0 = st.Device("cuda")
    assert c0 is st.Device("cuda:0") is st.Device("cuda", 0) is st.Device(" CUDA:0 ")
    assert c0.type == "cuda" and c0.index == 0
    c1 = st.Device("cuda:1")
    assert c1 is st.Device("cuda", 1) is st.Device("cuda", np.int64(1)) and c1.index == 1
    assert repr(c1) == "Device('cuda:1')" and str(c1) == "cuda:1"
    assert st.Device(c1) is c1
    assert pickle.loads(pickle.dumps(c1)) is c1


def test_equality_and_hashing():
    assert st.Device("cpu") == "cpu" and st.Device("cuda") == "cuda:0"
    assert st.Device("cuda") != "cuda:1" and st.Device("cuda") != "nonsense"
    assert st.Device("cpu") != 5
    d = {st.Device("cuda"): 1}
    assert d[st.Device("cuda:0")] == 1


@pytest.mark.parametrize("args,exc,msg", [
    (("tpu",), ValueError, "unknown device type 'tpu'"),
    (("cuda:x",), ValueError, "bad device index in 'cuda:x'"),
    (("cuda:-1",), ValueError, "bad device index"),
    (("cuda", -1), ValueError, "negative CUDA index -1"),
    (("cuda:1", 1), ValueError, "index given twice"),
    (("cpu:1",), ValueError, "the CPU has no index"),
    ((0,), TypeError, "expected a string like 'cpu' or 'cuda:0', got int"),
    (("cuda", "1"), TypeError, "index must be an int, got '1'"),
    (("cuda", 1.5), TypeError, "index must be an int, got 1.5"),
    (("cuda", True), TypeError, "index must be an int, got True"),
])
def test_errors(args, exc, msg):
    with pytest.raises(exc, match="Device: " + msg):
        st.Device(*args)


def test_constructing_a_cuda_device_does_not_touch_the_gpu():
    d = st.Device("cuda:5")  # no probing until a backend is needed
    assert d.type == "cuda" and d.index == 5


def test_default_device_context_and_setter(device):
    assert st.get_default_device() is st.Device("cpu")
    with st.default_device(device) as d:
        assert d is device
        assert st.get_default_device() is device
        assert st.zeros(2).device is device and st.arange(3).device is device
        assert st.tensor([1.0]).device is device and st.rand(2).device is device
        with st.default_device("cpu"):
            assert st.ones(1).device == "cpu"
        assert st.ones(1).device is device
    assert st.get_default_device() == "cpu"
    st.set_default_device(device)
    assert st.get_default_device() is device and st.eye(2).device is device
    st.set_default_device("cpu")
    assert st.zeros(1).device == "cpu"


def test_default_device_context_restores_on_error():
    with pytest.raises(KeyError), st.default_device("cpu"):
        raise KeyError
    assert st.get_default_device() == "cpu"


def test_default_device_context_is_per_thread():
    seen = []
    with st.default_device("cpu"):
        t = threading.Thread(target=lambda: seen.append(st.get_default_device()))
        t.start()
        t.join()
    assert seen == [st.Device("cpu")]


@pytest.mark.skipif(CUDA_OK, reason="checks the behaviour without a usable GPU")
def test_unusable_cuda_is_reported_early():
    with pytest.raises(RuntimeError, match="device cuda:7 is not usable"):
        st.set_default_device("cuda:7")
    assert st.get_default_device() == "cpu"
    with pytest.raises(RuntimeError, match="not usable"), st.default_device("cuda"):
        pass
    assert st.get_default_device() == "cpu"
    with pytest.raises(RuntimeError, match=r"st.best_device\(\)"):
        st.zeros(2, device="cuda")


def test_devices_and_best_device(caplog):
    ok, why = st.cuda_status()
    assert isinstance(ok, bool) and isinstance(why, str) and why
    devs = st.devices()
    assert devs[0] is st.Device("cpu")
    assert all(d.type == "cuda" for d in devs[1:]) and (len(devs) > 1) == ok
    with caplog.at_level(logging.INFO, logger="scitensor"):
        best = st.best_device()
    assert best in devs
    if ok:
        assert best is st.Device("cuda:0")
    else:
        assert best is st.Device("cpu")
        assert "best_device: using the CPU because" in caplog.text and why in caplog.text


def test_mixing_devices_is_an_error():
    if not CUDA_OK:
        pytest.skip("needs a GPU")
    a, b = st.ones(2), st.ones(2, device="cuda")
    with pytest.raises(ValueError, match="different devices"):
        a + b
    with pytest.raises(ValueError, match="different devices"):
        st.concatenate([a, b])
