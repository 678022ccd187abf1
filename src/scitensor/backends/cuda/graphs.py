"""CUDA graph capture and replay for :func:`scitensor.jit`.

A capture runs the step once on the backend's stream with stream capture on (CuPy's
default, relaxed mode), allocating from a *private* CuPy memory pool: the graph's buffers
(intermediates, outputs, gradients) live at fixed addresses that nothing outside the graph
can reuse between replays, and the graph has no allocation nodes, so it can be relaunched
while its outputs are alive. The pool is kept alive by the jit cache entry.
"""

from __future__ import annotations

import contextlib

import cupy

_get_stream = cupy.cuda.get_current_stream


class CudaGraphPrimitives:
    """Mixin for :class:`~scitensor.backends.cuda.backend.CudaBackend`."""

    def capture(self, fn):
        """Capture ``fn()`` into a CUDA graph. Returns ``(graph, pool, fn's result)``."""
        stream = _get_stream(self.index)
        if stream.ptr == 0:
            # The backend makes its stream current on the thread that created it; a thread
            # that never adopted it (the backend was first used from another thread, e.g. a
            # data-loading one) is still on the legacy default stream, where nothing can be
            # captured. Adopt the backend's stream here: it is a blocking stream, so it stays
            # ordered after this thread's earlier legacy-stream work.
            self.stream.use()
            stream = self.stream
        stream.synchronize()  # pending eager work must not be mistaken for graph work
        pool = cupy.cuda.MemoryPool()
        with cupy.cuda.using_allocator(pool.malloc):
            stream.begin_capture()
            try:
                out = fn()
            except BaseException:
                with contextlib.suppress(Exception):
                    stream.end_capture()
                raise
            graph = stream.end_capture()
        return graph, pool, out

    def graph_launch(self, graph) -> None:
        """Replay a captured graph on the backend's stream (asynchronously)."""
        graph.launch(_get_stream(self.index))
        from ...runtime import SYNC_EVERY_OP

        if SYNC_EVERY_OP[0]:
            self.synchronize()

    def copy_into(self, dst, src) -> None:
        """``dst[...] = src`` on the stream (same shape and dtype)."""
        if dst.flags.c_contiguous and src.flags.c_contiguous:
            dst.data.copy_from_device_async(src.data, src.nbytes, _get_stream(self.index))
        else:
            cupy.copyto(dst, src)
