import pickle

import numpy as np
import pytest

import scitensor as st
from scitensor import nn, optim


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(st.ones(3))
        self.pair = (nn.Dense(3, 3), nn.Dense(3, 3, bias=False))
        self.heads = {"a": nn.Dense(3, 2), "b": [nn.Parameter(st.zeros(2))]}
        self.not_a_param = st.ones(3, requires_grad=True)  # plain tensors are not parameters
        self.register_buffer("running", st.zeros(3))
        self.register_buffer("count", st.zeros((), dtype=st.int64))
        self.register_buffer("scratch", st.zeros(3), persistent=False)

    def forward(self, x):
        h = self.pair[1](self.pair[0](x * self.scale))
        return self.heads["a"](h) + self.heads["b"][0]


def test_parameters_found_through_attributes_tuples_and_dicts():
    m = Block()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "heads.b.0", "pair.0.weight", "pair.0.bias", "pair.1.weight",
                     "heads.a.weight", "heads.a.bias"]
    assert len(list(m.parameters())) == 7
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())
    assert m.num_parameters() == 3 + 2 + 12 + 9 + 6 + 2
    assert [n for n, _ in m.named_parameters(recurse=False)] == ["scale", "heads.b.0"]


def test_shared_parameters_appear_once():
    shared = nn.Dense(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(model.parameters())) == 2
    assert len(list(model.children())) == 2  # shared Dense once, ReLU once


def test_children_and_named_modules():
    m = Block()
    assert [n for n, _ in m.named_children()] == ["pair.0", "pair.1", "heads.a"]
    assert [n for n, _ in m.named_modules()] == ["", "pair.0", "pair.1", "heads.a"]
    assert next(iter(m.modules())) is m


def test_buffers_and_state_dict_keys():
    m = Block()
    assert [n for n, _ in m.named_buffers()] == ["running", "count", "scratch"]
    keys = list(m.state_dict())
    assert keys[:7] == [n for n, _ in m.named_parameters()]
    assert keys[7:] == ["running", "count"]  # non-persistent buffers are not saved
    assert not any(t.requires_grad for t in m.state_dict().values())


def test_register_buffer_errors():
    m = nn.Module()
    with pytest.raises(TypeError, match="must be a Tensor"):
        m.register_buffer("x", [1, 2])
    with pytest.raises(TypeError, match="Parameter"):
        m.register_buffer("x", nn.Parameter(st.ones(2)))
    with pytest.raises(ValueError, match="identifier"):
        m.register_buffer("a.b", st.ones(2))


def test_train_eval_propagate():
    m = nn.Sequential(nn.Dense(2, 2), nn.Sequential(nn.ReLU()))
    assert m.training and m[1][0].training
    assert m.eval() is m
    assert not any(mod.training for mod in m.modules())
    m.train()
    assert all(mod.training for mod in m.modules())


def test_call_runs_forward_and_missing_forward_is_clear():
    m = Block()
    assert m(st.ones(4, 3)).shape == (4, 2)
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(st.ones(1))


def test_module_without_super_init_still_works():
    class NoInit(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(st.ones(2))

        def forward(self, x):
            return x * self.w

    m = NoInit()
    assert [n for n, _ in m.named_parameters()] == ["w"]
    assert m.training
    m.register_buffer("b", st.zeros(1))
    assert list(m.state_dict()) == ["w", "b"]


def test_state_dict_round_trip_is_in_place(device):
    st.manual_seed(1)
    a = nn.Sequential(nn.Dense(4, 5), nn.ReLU(), nn.Dense(5, 3)).to(device)
    st.manual_seed(2)
    b = nn.Sequential(nn.Dense(4, 5), nn.ReLU(), nn.Dense(5, 3)).to(device)
    w_obj, w_arr = b[0].weight, b[0].weight.data
    x = st.randn(2, 4, device=device)
    assert not np.allclose(a(x).numpy(), b(x).numpy())
    res = b.load_state_dict(a.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    assert b[0].weight is w_obj and b[0].weight.data is w_arr
    # the load copied: changing a does not change b
    with st.no_grad():
        a[0].weight[...] = 0.0
    assert np.abs(b[0].weight.numpy()).sum() > 0


def test_state_dict_shares_memory_with_the_module():
    m = nn.Dense(2, 2)
    sd = m.state_dict()
    with st.no_grad():
        m.weight[...] = 7.0
    assert sd["weight"].tolist() == [[7.0, 7.0], [7.0, 7.0]]


def test_load_state_dict_accepts_numpy_and_other_dtypes():
    m = nn.Dense(2, 3)
    m.load_state_dict({"weight": np.arange(6.0).reshape(2, 3),
                       "bias": st.ones(3, dtype=st.float64)})
    assert m.weight.dtype == st.float32 and m.bias.dtype == st.float32
    assert m.weight.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_load_state_dict_buffers():
    m, n = Block(), Block()
    with st.no_grad():
        m.running[...] = 5.0
        m.count[...] = 3
    n.load_state_dict(m.state_dict())
    assert n.running.tolist() == [5.0, 5.0, 5.0] and n.count.item() == 3
    assert n.count.dtype == st.int64


def test_load_state_dict_errors_leave_module_unchanged():
    m = nn.Sequential(nn.Dense(2, 3), nn.Dense(3, 1))
    before = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    good = {k: st.zeros(*v.shape) for k, v in m.state_dict().items()}

    missing = dict(good)
    del missing["1.bias"]
    with pytest.raises(KeyError, match=r"missing keys \['1.bias'\]"):
        m.load_state_dict(missing)

    extra = dict(good, **{"2.weight": st.zeros(1)})
    with pytest.raises(KeyError, match=r"unexpected keys \['2.weight'\]"):
        m.load_state_dict(extra)

    bad_shape = dict(good, **{"1.weight": st.zeros(1, 3)})
    with pytest.raises(ValueError, match=r"'1.weight' has shape \(1, 3\).*\(3, 1\)"):
        m.load_state_dict(bad_shape)

    with pytest.raises(TypeError, match="dict"):
        m.load_state_dict([1, 2])

    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_load_state_dict_non_strict_reports_keys():
    m = nn.Sequential(nn.Dense(2, 3), nn.Dense(3, 1))
    res = m.load_state_dict({"0.weight": st.ones(2, 3), "extra": st.ones(1)}, strict=False)
    assert res.missing_keys == ["0.bias", "1.weight", "1.bias"]
    assert res.unexpected_keys == ["extra"]
    assert m[0].weight.tolist() == [[1.0] * 3] * 2


def test_to_dtype_keeps_parameter_objects_and_optimizer():
    m = Block()
    opt = optim.SGD(m.parameters(), lr=0.1)
    params = list(m.parameters())
    assert m.to(dtype=st.float64) is m
    assert all(p.dtype == st.float64 for p in m.parameters())
    assert [id(p) for p in m.parameters()] == [id(p) for p in params]
    assert m.running.dtype == st.float64
    assert m.count.dtype == st.int64  # integer buffers keep their dtype
    out = m(st.ones(2, 3, dtype=st.float64)).sum()
    out.backward()
    opt.step()
    assert m.scale.dtype == st.float64
    assert m.float().scale.dtype == st.float32 and m.double().scale.dtype == st.float64
    with pytest.raises(TypeError, match="floating"):
        m.to(dtype=st.int32)


def test_to_device(device):
    m = Block().to(device)
    assert all(p.device == device for p in m.parameters())
    assert all(b.device == device for b in m.buffers())
    assert m(st.ones(1, 3, device=device)).device == device


def test_zero_grad_and_requires_grad():
    m = nn.Dense(3, 2)
    m(st.ones(1, 3)).sum().backward()
    assert m.weight.grad is not None
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())
    assert not m(st.ones(1, 3)).requires_grad


def test_apply_visits_every_module():
    seen = []
    nn.Sequential(nn.Dense(1, 1), nn.ReLU()).apply(lambda mod: seen.append(type(mod).__name__))
    assert seen == ["ReLU", "Dense", "Sequential"]


def test_repr_is_readable():
    m = nn.Sequential(nn.Dense(64, 128), nn.ReLU(), nn.Sequential(nn.GELU("tanh")))
    assert repr(m) == (
        "Sequential(\n"
        "  (0): Dense(in_features=64, out_features=128, bias=True)\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): GELU(approximate='tanh')\n"
        "  )\n"
        ")")


def test_parameter_is_a_tensor_sharing_storage():
    t = st.ones(2, 3)
    p = nn.Parameter(t)
    assert isinstance(p, st.Tensor) and p.requires_grad and p.is_leaf
    assert p.data is t.data and p.device is t.device
    y = p * 2
    assert type(y) is st.Tensor and y.requires_grad
    assert nn.Parameter([1.0, 2.0]).tolist() == [1.0, 2.0]
    assert not nn.Parameter(st.ones(1), requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:\ntensor(")
    with pytest.raises(TypeError, match="floating"):
        nn.Parameter(st.arange(3))


def test_parameter_pickles():
    p = nn.Parameter(st.tensor([1.0, 2.0]))
    q = pickle.loads(pickle.dumps(p))
    assert isinstance(q, nn.Parameter) and q.requires_grad and q.tolist() == [1.0, 2.0]


def test_deepcopy_and_pickle_make_independent_models():
    import copy

    m = nn.Sequential(nn.Dense(2, 3), nn.ReLU())
    m.register_buffer("b", st.ones(2))
    for c in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert isinstance(c[0].weight, nn.Parameter) and c[0].weight is not m[0].weight
        assert list(c.state_dict()) == ["0.weight", "0.bias", "b"]
        x = st.randn(4, 2)
        np.testing.assert_array_equal(c(x).numpy(), m(x).numpy())
        with st.no_grad():
            c[0].weight[...] = 0.0
        assert np.abs(m[0].weight.numpy()).sum() > 0
