"""Shape ops: forward against NumPy, gradient checks, Hypothesis properties over shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

import scitensor as st
from scitensor.testing import check_grad

HSET = settings(max_examples=30, deadline=None)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
nonempty_shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)


def arr(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def t(a, device, **kw):
    return st.tensor(a, dtype=st.float64, device=device, **kw)


def same(x: st.Tensor, expected: np.ndarray):
    got = x.numpy()
    assert got.shape == expected.shape, (got.shape, expected.shape)
    np.testing.assert_array_equal(got, expected)


# ---- forward vs NumPy ---------------------------------------------------------------------
CASES = [
    ("reshape", lambda x: x.reshape(4, -1), lambda a: a.reshape(4, -1)),
    ("reshape_tuple", lambda x: st.reshape(x, (3, 8)), lambda a: a.reshape(3, 8)),
    ("view", lambda x: x.view(-1), lambda a: a.reshape(-1)),
    ("transpose", lambda x: x.transpose(), lambda a: a.transpose()),
    ("transpose_axes", lambda x: x.transpose(2, 0, 1), lambda a: a.transpose(2, 0, 1)),
    ("permute_neg", lambda x: st.permute(x, (-1, 0, -2)), lambda a: a.transpose(2, 0, 1)),
    ("swapaxes", lambda x: x.swapaxes(0, -1), lambda a: a.swapaxes(0, -1)),
    ("T", lambda x: x.T, lambda a: a.T),
    ("mT", lambda x: x.mT, lambda a: np.swapaxes(a, -1, -2)),
    ("expand", lambda x: x[:, :1].expand(5, -1, 3, -1), lambda a: np.broadcast_to(
        a[:, :1], (5, 2, 3, 4))),
    ("broadcast_to", lambda x: st.broadcast_to(x[:1], (2, 2, 3, 4)),
     lambda a: np.broadcast_to(a[:1], (2, 2, 3, 4))),
    ("squeeze_all", lambda x: x[:1, :, 1:2].squeeze(), lambda a: a[:1, :, 1:2].squeeze()),
    ("squeeze_axes", lambda x: x[:1, :, 1:2].squeeze((0, -1)),
     lambda a: a[:1, :, 1:2].squeeze((0, 2))),
    ("unsqueeze", lambda x: x.unsqueeze(1), lambda a: np.expand_dims(a, 1)),
    ("unsqueeze_neg", lambda x: x.unsqueeze(-1), lambda a: np.expand_dims(a, -1)),
    ("flatten", lambda x: x.flatten(), lambda a: a.reshape(-1)),
    ("flatten_range", lambda x: x.flatten(1, 2), lambda a: a.reshape(2, 12)),
    ("flatten_neg", lambda x: x.flatten(-2), lambda a: a.reshape(2, 12)),
    ("concatenate", lambda x: st.concatenate([x, x[:1] * 2], axis=0),
     lambda a: np.concatenate([a, a[:1] * 2], 0)),
    ("concatenate_neg", lambda x: st.concatenate([x, x[..., :2]], axis=-1),
     lambda a: np.concatenate([a, a[..., :2]], -1)),
    ("stack", lambda x: st.stack([x, -x, x], axis=1), lambda a: np.stack([a, -a, a], 1)),
    ("stack_neg", lambda x: st.stack([x, x], axis=-1), lambda a: np.stack([a, a], -1)),
    ("split_sections", lambda x: st.split(x, 2, axis=2)[1], lambda a: np.split(a, 2, 2)[1]),
    ("split_indices", lambda x: x.split([1, 3], axis=-1)[1],
     lambda a: np.split(a, [1, 3], -1)[1]),
    ("pad", lambda x: st.pad(x, ((1, 0), (0, 2), (1, 1))),
     lambda a: np.pad(a, ((1, 0), (0, 2), (1, 1)))),
    ("pad_int", lambda x: st.pad(x, 1, value=3.0), lambda a: np.pad(a, 1, constant_values=3)),
    ("pad_pair", lambda x: st.pad(x, (2, 0)), lambda a: np.pad(a, (2, 0))),
    ("flip_all", lambda x: st.flip(x), lambda a: np.flip(a)),
    ("flip_axes", lambda x: x.flip((0, -1)), lambda a: np.flip(a, (0, 2))),
    ("flip_int", lambda x: x.flip(1), lambda a: np.flip(a, 1)),
]


@pytest.mark.parametrize("name,op,ref", CASES, ids=[c[0] for c in CASES])
def test_forward_matches_numpy(device, name, op, ref):
    a = arr((2, 3, 4))
    same(op(t(a, device)), ref(a))


@pytest.mark.parametrize("name,op,ref", CASES, ids=[c[0] for c in CASES])
def test_gradient(name, op, ref):
    assert check_grad(op, st.tensor(arr((2, 3, 4)), dtype=st.float64))


@pytest.mark.parametrize("name,op,ref", CASES, ids=[c[0] for c in CASES])
def test_forward_on_non_contiguous_input(device, name, op, ref):
    base = arr((4, 3, 8))
    a = base[::-2, :, ::2][:, :, :4].transpose(0, 1, 2)  # negative and positive strides
    a = a.copy() if device.type != "cpu" else a
    x = st.from_numpy(a) if device.type == "cpu" else t(a, device)
    same(op(x), ref(a))


def test_split_returns_all_pieces_with_gradient():
    x = st.tensor(arr((5, 2)), requires_grad=True)
    parts = st.split(x, [1, 3])
    assert [p.shape for p in parts] == [(1, 2), (2, 2), (2, 2)]
    (parts[0].sum() * 1 + parts[2].sum() * 3).backward()
    np.testing.assert_array_equal(x.grad.numpy()[:, 0], [1, 0, 0, 3, 3])


def test_split_negative_and_out_of_order_indices_match_numpy():
    a = np.arange(7.0)
    for idx in ([-2], [5, 2], [-3, -1], [0, 7, 9], [2, 2]):
        got = st.split(st.tensor(a), idx)
        ref = np.split(a, idx)
        assert [g.tolist() for g in got] == [r.tolist() for r in ref], idx


def test_concatenate_and_stack_promote_dtypes(device):
    i = st.ones(2, dtype=st.int32, device=device)
    f = st.ones(2, dtype=st.float16, device=device)
    assert st.concatenate([i, f]).dtype is st.float16
    assert st.stack([i, f.astype(st.float64)]).dtype is st.float64


def test_concatenate_gradient_with_mixed_requires_grad():
    a = st.tensor(arr((2, 3)), requires_grad=True)
    b = st.tensor(arr((1, 3)))
    y = st.concatenate([a, b])
    y.backward(st.ones_like(y) * 2)
    np.testing.assert_array_equal(a.grad.numpy(), np.full((2, 3), 2.0))
    assert b.grad is None


def test_stack_gradient_of_gradient():
    x = st.tensor([1.0, 2.0], dtype=st.float64)
    f = lambda v: (st.stack([v * v, v], axis=1) ** 2).sum()  # sum v^4 + v^2
    g2 = st.grad(lambda v: st.grad(f)(v).sum())(x)
    np.testing.assert_allclose(g2.numpy(), 12 * x.numpy() ** 2 + 2)


def test_broadcast_to_gradient_sums_over_broadcast_axes():
    x = st.tensor(arr((3, 1)), requires_grad=True)
    y = st.broadcast_to(x, (2, 3, 4))
    y.backward(st.ones(2, 3, 4, dtype=st.float64))
    np.testing.assert_array_equal(x.grad.numpy(), np.full((3, 1), 8.0))


def test_view_ops_share_memory_on_cpu():
    a = np.zeros((2, 3))
    x = st.from_numpy(a)
    x.reshape(6)[0] = 1.0
    x.T[2, 1] = 2.0
    assert a[0, 0] == 1.0 and a[1, 2] == 2.0


def test_no_graph_without_grad(device):
    x = st.ones(2, 3, device=device)
    y = x.reshape(3, 2).T.unsqueeze(0).flip(1)
    assert not y.requires_grad and y.is_leaf


# ---- Hypothesis ---------------------------------------------------------------------------
@HSET
@given(shape=shapes, data=hs.data())
def test_reshape_and_transpose_properties(shape, data):
    a = arr(shape)
    x = st.tensor(a)
    perm = data.draw(hs.permutations(range(len(shape))))
    same(x.transpose(*perm) if perm else x.transpose(), a.transpose(perm or None))
    same(x.reshape(-1), a.reshape(-1))
    same(x.flatten(), a.reshape(-1))
    same(x.reshape(shape[::-1]), a.reshape(shape[::-1]))
    if perm and a.size:
        assert check_grad(lambda v: v.transpose(*perm).reshape(-1), x)


@HSET
@given(shape=nonempty_shapes, data=hs.data())
def test_axis_ops_with_negative_axes(shape, data):
    a = arr(shape)
    x = st.tensor(a)
    nd = len(shape)
    ax = data.draw(hs.integers(-nd, nd - 1))
    ax2 = data.draw(hs.integers(-nd, nd - 1))
    same(x.swapaxes(ax, ax2), np.swapaxes(a, ax, ax2))
    same(x.flip(ax), np.flip(a, ax))
    same(x.unsqueeze(ax), np.expand_dims(a, ax))
    same(st.concatenate([x, x], ax), np.concatenate([a, a], ax))
    same(st.stack([x, x], ax), np.stack([a, a], ax))
    ones = tuple(i for i, n in enumerate(shape) if n == 1)
    same(x.squeeze(), a.squeeze())
    if ones:
        same(x.squeeze(ones[-1] - nd), np.squeeze(a, ones[-1]))
    n = shape[ax]
    cuts = sorted(data.draw(hs.lists(hs.integers(0, n), max_size=3)))
    got = st.split(x, cuts, ax)
    ref = np.split(a, cuts, ax)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        same(g, r)
    assert check_grad(lambda v: st.stack([v.flip(ax), v], ax).swapaxes(ax, ax2), x)


@HSET
@given(shape=shapes, data=hs.data())
def test_broadcast_and_pad_properties(shape, data):
    a = arr(shape)
    x = st.tensor(a)
    lead = data.draw(hs.lists(hs.integers(0, 3), max_size=2))
    target = tuple(lead) + tuple(data.draw(hs.sampled_from([n, 3])) if n == 1 else n
                                 for n in shape)
    same(st.broadcast_to(x, target), np.broadcast_to(a, target))
    pw = tuple(tuple(data.draw(hs.lists(hs.integers(0, 2), min_size=2, max_size=2)))
               for _ in shape)
    same(st.pad(x, pw, value=1.5), np.pad(a, pw, constant_values=1.5) if pw else a)
    if x.size and int(np.prod(target)):
        assert check_grad(lambda v: st.broadcast_to(v, target) * 1.0, x)
        assert check_grad(lambda v: st.pad(v, pw), x)


@HSET
@given(shape=nonempty_shapes, data=hs.data())
def test_non_contiguous_views_gradients(shape, data):
    """Ops applied to strided and negative-stride views give NumPy's values and gradients."""
    big = arr(tuple(2 * n for n in shape))
    key = tuple(slice(None, None, data.draw(hs.sampled_from([2, -2]))) for _ in shape)
    view = big[key]
    x = st.from_numpy(view)
    assert x.shape == view.shape
    same(x.T.reshape(-1), view.T.reshape(-1))
    same(x.flip(0).unsqueeze(0), np.flip(view, 0)[None])
    xb = st.tensor(big, requires_grad=True)
    xb[key].T.reshape(-1).sum().backward()
    expected = np.zeros_like(big)
    expected[key] = 1.0
    same(xb.grad, expected)


# ---- errors ---------------------------------------------------------------------------------
def test_errors_name_the_op_and_shapes(device):
    x = st.zeros(2, 3, device=device)
    with pytest.raises(ValueError, match=r"reshape: .*\(2, 3\).*\(4, 2\)"):
        x.reshape(4, 2)
    with pytest.raises(ValueError, match="reshape"):
        x.reshape(-1, -1)
    with pytest.raises(ValueError, match=r"transpose: .*permutation"):
        x.transpose(0, 0)
    with pytest.raises(IndexError, match="swapaxes: axis 2 is out of range"):
        x.swapaxes(0, 2)
    with pytest.raises(ValueError, match=r"broadcast_to: cannot broadcast shape \(2, 3\)"):
        st.broadcast_to(x, (3, 3))
    with pytest.raises(ValueError, match="expand: -1"):
        x.expand(-1, 2, 3)
    with pytest.raises(ValueError, match=r"squeeze: axis 0 .* size 2"):
        x.squeeze(0)
    with pytest.raises(ValueError, match=r"concatenate: shapes \[\(2, 3\), \(2, 2\)\]"):
        st.concatenate([x, st.zeros(2, 2, device=device)])
    with pytest.raises(ValueError, match="concatenate: zero-dimensional"):
        st.concatenate([st.zeros((), device=device)])
    with pytest.raises(ValueError, match="stack: all tensors must have the same shape"):
        st.stack([x, x.T])
    with pytest.raises(TypeError, match="stack: expected a list or tuple"):
        st.stack(x)
    with pytest.raises(ValueError, match="stack: needs at least one"):
        st.stack([])
    with pytest.raises(ValueError, match="split: axis 1 of size 3 cannot be split into 2"):
        st.split(x, 2, axis=1)
    with pytest.raises(ValueError, match="pad: pad_width"):
        st.pad(x, ((1, 1), (1, 1), (1, 1)))
    with pytest.raises(ValueError, match="pad: pad_width"):
        st.pad(x, -1)
    with pytest.raises(ValueError, match="flatten: start_axis"):
        x.flatten(1, 0)
    with pytest.raises(TypeError, match="reshape: input must be a Tensor"):
        st.reshape(np.zeros(3), 3)
    s = st.tensor(1.0, device=device)
    with pytest.raises(ValueError, match="split: a 0-d tensor cannot be split"):
        st.split(s, 1)
    with pytest.raises(IndexError, match="swapaxes: a 0-d tensor has no axes"):
        s.swapaxes(0, 0)
    with pytest.raises(TypeError, match="split: indices_or_sections must be an int or a list"):
        st.split(x, [1.5], axis=1)
    with pytest.raises(ValueError, match="pad: pad_width 'ab' is not"):
        st.pad(x, "ab")


def test_pad_and_split_accept_numpy_spellings(device):
    x = st.ones(2, 3, device=device)
    assert st.pad(x, ((1, 2),)).shape == (5, 6)  # one pair for every axis
    assert st.pad(x, np.array([[1, 0], [0, 2]])).shape == (3, 5)
    assert [p.shape for p in st.split(x, np.array([1]), axis=1)] == [(2, 1), (2, 2)]
    assert st.pad(st.tensor(2.0, device=device), ()).item() == 2.0  # 0-d: nothing to pad
