"""Shared fixtures: the ``device`` fixture runs a test on the CPU and, when usable, on CUDA.

Set ``SCITENSOR_TEST_DEVICE=cpu`` or ``=cuda`` to force the whole suite onto one device.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import scitensor as st


def _devices():
    forced = os.environ.get("SCITENSOR_TEST_DEVICE")
    if forced:
        return [forced]
    out = ["cpu"]
    if st.cuda_status()[0]:
        out.append("cuda")
    return out


DEVICES = _devices()


@pytest.fixture(params=DEVICES)
def device(request):
    """A :class:`scitensor.Device` to run the test on."""
    dev = st.Device(request.param)
    if dev.type == "cuda" and not st.cuda_status()[0]:
        pytest.skip(f"CUDA is not usable here: {st.cuda_status()[1]}")
    return dev


@pytest.fixture
def rng():
    """A NumPy random generator seeded per test."""
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _reset_state():
    st.manual_seed(0)
    st.set_default_dtype(st.float32)
    yield
    st.set_default_dtype(st.float32)
