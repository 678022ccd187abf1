"""Clustering: k-means (Lloyd's algorithm) with fused GPU kernels and a NumPy CPU path.

Example:
    >>> import scitensor as st
    >>> x = st.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    >>> st.cluster.kmeans(x, 2, seed=0).labels.tolist() in ([0, 0, 1, 1], [1, 1, 0, 0])
    True
"""

from .kmeans import KMeansResult, assign, kmeans, update

__all__ = ["KMeansResult", "assign", "kmeans", "update"]
