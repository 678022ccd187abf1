"""jit on the CPU runs the function as is; on CUDA it captures and replays (same semantics)."""

import itertools

import numpy as np
import pytest

import scitensor as st


def test_jit_equals_eager(device):
    def f(x, y, scale):
        return (x * y).sum(axis=0) * scale, x.relu()

    jf = st.jit(f)
    for _ in range(4):
        x = st.randn(5, 3, device=device)
        y = st.randn(5, 3, device=device)
        a, b = jf(x, y, 2.0)
        ea, eb = f(x, y, 2.0)
        np.testing.assert_allclose(a.numpy(), ea.numpy(), rtol=1e-6)
        np.testing.assert_allclose(b.numpy(), eb.numpy(), rtol=1e-6)


def test_outputs_stay_valid_after_next_call(device):
    jf = st.jit(lambda x: x * 3)
    outs = [jf(st.full((4,), float(i), device=device)) for i in range(4)]
    assert [o.tolist()[0] for o in outs] == [0.0, 3.0, 6.0, 9.0]


def test_new_shapes_and_values_give_new_signatures(device):
    jf = st.jit(lambda x, k: x * k)
    assert jf(st.ones(2, device=device), 2).tolist() == [2.0, 2.0]
    assert jf(st.ones(3, device=device), 2).tolist() == [2.0, 2.0, 2.0]
    assert jf(st.ones(2, device=device), 5).tolist() == [5.0, 5.0]


def test_training_step_matches_eager(device):
    def make():
        st.manual_seed(0)
        w = st.randn(4, 3, device=device, requires_grad=True)
        return w

    def step(w, x):
        loss = ((x @ w) ** 2).mean()
        loss.backward()
        with st.no_grad():
            w.data -= 0.1 * w.grad.data
        w.grad = None
        return loss

    w1, w2 = make(), make()
    jstep = st.jit(step)
    xs = [st.randn(8, 4, device=device) for _ in range(6)]
    for x in xs:
        l1 = step(w1, x)
        l2 = jstep(w2, x)
        np.testing.assert_allclose(l1.item(), l2.item(), rtol=1e-5)
    np.testing.assert_allclose(w1.numpy(), w2.numpy(), rtol=1e-5)


def test_unhashable_argument_is_a_clear_error():
    jf = st.jit(lambda x, opts: x)
    with pytest.raises(TypeError, match="not hashable"):
        jf(st.ones(1), {1, 2})


def test_gpu_run_returns_completed_result(device):
    out = st.gpu.run(lambda x: (x + 1).sum(), st.ones(4, device=device))
    assert out.item() == 8.0


def _cuda_only(device):
    if device.type != "cuda":
        pytest.skip("CUDA graph capture behaviour")


def test_dropout_draws_fresh_masks_on_every_replay(device):
    _cuda_only(device)
    from scitensor.nn import functional as F

    jf = st.jit(lambda x: F.dropout(x, 0.5, training=True))
    x = st.ones(4096, device=device)
    masks = [jf(x).numpy() != 0 for _ in range(5)]  # eager, capture+replay, replays
    for a, b in itertools.pairwise(masks):
        assert (a != b).any(), "two calls drew the same dropout mask"
    for m in masks:
        assert 0.4 < m.mean() < 0.6


def test_random_numbers_are_fresh_on_replay(device):
    _cuda_only(device)
    jf = st.jit(lambda x: x + st.rand(64, device=x.device))
    z = st.zeros(64, device=device)
    outs = [jf(z).numpy() for _ in range(4)]
    assert len({o.tobytes() for o in outs}) == 4


@pytest.mark.parametrize("what", ["item", "numpy", "repr", "bool"])
def test_host_sync_inside_capture_raises(device, what):
    _cuda_only(device)

    def f(x):
        y = x * 2
        if what == "item":
            y.sum().item()
        elif what == "numpy":
            y.numpy()
        elif what == "repr":
            repr(y)
        elif y.sum():
            pass
        return y

    jf = st.jit(f)
    x = st.ones(3, device=device)
    jf(x)  # eager warm-up is fine
    with pytest.raises(st.HostSyncInCaptureError, match="jit"):
        jf(x)


def test_inputs_reach_the_graph_on_every_call(device):
    _cuda_only(device)
    jf = st.jit(lambda x, y: x @ y)
    for _ in range(5):
        x = st.randn(8, 16, device=device)
        y = st.randn(16, 4, device=device)
        np.testing.assert_allclose(jf(x, y).numpy(), x.numpy() @ y.numpy(), rtol=1e-4,
                                   atol=1e-5)
    assert jf.stats["captures"] == 1 and jf.stats["replays"] == 3
