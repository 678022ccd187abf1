"""``nn.ModuleList`` and ``nn.ModuleDict``: children are registered for parameters(),
state_dict(), to(), train()/eval()."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

import scitensor as st
from scitensor import nn, optim


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(4), nn.Dense(4, 4), nn.GELU())
                                     for _ in range(2)])
        self.heads = nn.ModuleDict({"cls": nn.Dense(4, 3), "drop": nn.Dropout(0.5)})
        self.register_buffer("scale", st.full((4,), 2.0))

    def forward(self, ids):
        x = self.embed(ids) * self.scale
        for block in self.blocks:
            x = x + block(x)
        return self.heads["cls"](self.heads["drop"](x))


def test_names_and_parameters():
    net = Net()
    names = list(net.state_dict())
    assert names == ["embed.weight",
                     "blocks.0.0.weight", "blocks.0.0.bias", "blocks.0.1.weight",
                     "blocks.0.1.bias",
                     "blocks.1.0.weight", "blocks.1.0.bias", "blocks.1.1.weight",
                     "blocks.1.1.bias",
                     "heads.cls.weight", "heads.cls.bias", "scale"]
    assert net.num_parameters() == 40 + 2 * (4 + 4 + 16 + 4) + 12 + 3
    assert [n for n, _ in net.named_children()] == ["embed", "blocks", "heads"]
    assert [n for n, _ in net.blocks.named_children()] == ["0", "1"]
    assert [n for n, _ in net.heads.named_children()] == ["cls", "drop"]
    assert "blocks.1.2" in dict(net.named_modules())


def test_state_dict_round_trip_through_a_file():
    st.manual_seed(1)
    a = Net()
    ids = st.tensor([[1, 2, 3]])
    a.eval()
    path = os.path.join(tempfile.mkdtemp(), "net.safetensors")
    st.save(a.state_dict(), path)
    st.manual_seed(2)
    b = Net().eval()
    assert not np.allclose(a(ids).numpy(), b(ids).numpy())
    assert b.load_state_dict(st.load(path)) == nn.LoadResult([], [])
    np.testing.assert_array_equal(a(ids).numpy(), b(ids).numpy())
    with pytest.raises(KeyError, match=r"missing keys \['heads.cls.bias'\]"):
        state = a.state_dict()
        del state["heads.cls.bias"]
        b.load_state_dict(state)


def test_to_moves_children(device):
    net = Net().to(device)
    assert all(p.device == device for p in net.parameters())
    assert net.blocks[1][1].weight.device == device and net.scale.device == device
    out = net.eval()(st.tensor([[0, 9]], device=device))
    assert out.device == device and out.shape == (1, 2, 3)
    net.double()
    assert all(p.dtype is st.float64 for p in net.parameters())
    assert net.heads["cls"].bias.dtype is st.float64


def test_train_eval_reach_children():
    net = Net().eval()
    assert not net.blocks.training and not net.blocks[0][2].training
    assert not net.heads["drop"].training
    ids = st.tensor([[4, 5]])
    np.testing.assert_array_equal(net(ids).numpy(), net(ids).numpy())  # dropout off
    net.train()
    assert net.heads["drop"].training and net.blocks[1].training


def test_optimizer_updates_every_child():
    net = Net()
    before = {n: p.numpy().copy() for n, p in net.named_parameters()}
    opt = optim.SGD(net.parameters(), lr=0.1)
    net(st.tensor([[1, 2, 3, 4]])).sum().backward()
    opt.step()
    changed = [n for n, p in net.named_parameters() if not np.array_equal(p.numpy(), before[n])]
    assert "blocks.0.1.weight" in changed and "heads.cls.weight" in changed


def test_module_list_methods():
    layers = nn.ModuleList()
    assert len(layers) == 0 and list(layers.parameters()) == []
    a, b, c = nn.Dense(2, 2), nn.ReLU(), nn.Dense(2, 3)
    layers.append(a).extend([b])
    layers.insert(1, c)
    assert list(layers) == [a, c, b] and layers[-1] is b
    assert [n for n, _ in layers.named_parameters()] == ["0.weight", "0.bias", "1.weight",
                                                         "1.bias"]
    sub = layers[1:]
    assert isinstance(sub, nn.ModuleList) and list(sub) == [c, b]
    layers[2] = nn.Dense(3, 1)
    del layers[0]
    assert len(layers) == 2 and next(n for n, _ in layers.named_parameters()) == "0.weight"
    assert len(layers + [nn.Tanh()]) == 3
    assert "(0): Dense(in_features=2, out_features=3, bias=True)" in repr(layers)
    with pytest.raises(IndexError, match="index 5 is out of range for 2 modules"):
        layers[5]
    with pytest.raises(TypeError, match=r"items must be nn\.Module"):
        layers.append(lambda x: x)
    with pytest.raises(TypeError, match="iterable of modules"):
        layers.extend(nn.Dense(1, 1))
    with pytest.raises(NotImplementedError, match="not callable"):
        layers(st.ones(2))


def test_module_dict_methods():
    heads = nn.ModuleDict([("a", nn.Dense(2, 1))])
    heads["b"] = nn.Dense(2, 2)
    heads.update({"c": nn.Identity()})
    assert list(heads) == ["a", "b", "c"] and "b" in heads and len(heads) == 3
    assert [k for k, _ in heads.items()] == list(heads.keys())
    assert isinstance(heads.pop("a"), nn.Dense)
    del heads["c"]
    assert list(heads.keys()) == ["b"] and list(heads.state_dict()) == ["b.weight", "b.bias"]
    with pytest.raises(KeyError, match=r"no module named 'zz'; keys are \['b'\]"):
        heads["zz"]
    with pytest.raises(KeyError, match=r"without '\.'"):
        heads["x.y"] = nn.ReLU()
    with pytest.raises(TypeError, match=r"items must be nn\.Module"):
        heads["x"] = st.ones(2)
    with pytest.raises(TypeError, match=r"\(key, module\) pairs"):
        heads.update([nn.ReLU()])
    with pytest.raises(NotImplementedError, match="not callable"):
        heads(st.ones(2))


def test_shared_module_in_two_containers_counts_once():
    shared = nn.Dense(3, 3)
    m = nn.Module()
    m.a = nn.ModuleList([shared])
    m.b = nn.ModuleDict({"s": shared})
    assert len(list(m.parameters())) == 2
