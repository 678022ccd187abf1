"""``Embedding``: a learned table of vectors looked up by integer ids (token embeddings)."""

from __future__ import annotations

import numbers

from ..autodiff.mode import no_grad
from ..creation import randn
from ..tensor import Tensor
from . import functional as F
from .module import Module
from .parameter import Parameter

__all__ = ["Embedding"]


def _positive(value, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"Embedding: {name} must be a positive int, got {value!r}")
    return int(value)


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``; ``layer(ids)`` returns
    ``weight[ids]`` (:func:`scitensor.nn.functional.embedding`: a row gather forward, a
    scatter-add into the table backward).

    The weight starts ``N(0, 1)`` as in PyTorch (GPT-style models often re-initialise it with
    ``nn.init.normal_(layer.weight, std=0.02)``); the ``padding_idx`` row starts at zero and
    never receives a gradient, so it stays zero under optimizers without weight decay.

    Args:
        num_embeddings: the number of rows (the vocabulary size).
        embedding_dim: the size of each vector.
        padding_idx: a row that gets no gradient (negative counts from the end), or None.
        device, dtype: where and in which floating dtype to create the weight.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> emb = nn.Embedding(10, 4, padding_idx=0)
        >>> out = emb(st.tensor([[1, 2, 0]]))
        >>> out.shape, emb.weight[0].tolist()
        ((1, 3, 4), [0.0, 0.0, 0.0, 0.0])
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 device=None, dtype=None):
        super().__init__()
        self.num_embeddings = _positive(num_embeddings, "num_embeddings")
        self.embedding_dim = _positive(embedding_dim, "embedding_dim")
        self.padding_idx = F._padding_index(padding_idx, self.num_embeddings, "Embedding")
        self.weight = Parameter(randn(self.num_embeddings, self.embedding_dim, device=device,
                                      dtype=dtype))
        self.reset_padding()

    @classmethod
    def from_pretrained(cls, weight: Tensor, freeze: bool = True,
                        padding_idx: int | None = None) -> Embedding:
        """An Embedding whose table is (a copy of) ``weight``.

        Args:
            weight: ``(num_embeddings, embedding_dim)`` floating tensor.
            freeze: keep the table fixed (``requires_grad=False``).
            padding_idx: as for the constructor (the row is not zeroed here).

        Example:
            >>> import scitensor as st
            >>> from scitensor import nn
            >>> emb = nn.Embedding.from_pretrained(st.eye(3))
            >>> emb(st.tensor([2])).tolist(), emb.weight.requires_grad
            ([[0.0, 0.0, 1.0]], False)
        """
        if not isinstance(weight, Tensor) or weight.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: weight must be a 2-D Tensor, got "
                             f"{getattr(weight, 'shape', type(weight).__name__)}")
        layer = cls.__new__(cls)
        Module.__init__(layer)
        layer.num_embeddings, layer.embedding_dim = weight.shape
        layer.padding_idx = F._padding_index(padding_idx, layer.num_embeddings, "Embedding")
        with no_grad():
            layer.weight = Parameter(weight.detach().to(copy=True), requires_grad=not freeze)
        return layer

    def reset_padding(self) -> None:
        """Set the ``padding_idx`` row to zero (no-op without one)."""
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"
