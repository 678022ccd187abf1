"""Shared GPU timing for the benchmarks: CUDA events (CuPy's or PyTorch's) around a step."""

from __future__ import annotations

import statistics


def event_ms(step, record, sync, warmup: int, reps: int) -> float:
    """Median milliseconds of ``step(i)`` between two events from ``record()``.

    Args:
        step: the work, called with the repetition index (to rotate inputs).
        record: returns a recorded event (``cupy.cuda.Event`` or ``torch.cuda.Event``).
        sync: waits for the device (after the warm-up).
        warmup, reps: untimed and timed repetitions.
    """
    for i in range(warmup):
        step(i)
    sync()
    times = []
    for i in range(reps):
        start = record()
        step(i)
        end = record()
        end.synchronize()
        times.append(elapsed_ms(start, end))
    return statistics.median(times)


def elapsed_ms(start, end) -> float:
    """Milliseconds between two recorded events of either library."""
    import cupy

    if isinstance(start, cupy.cuda.Event):
        return cupy.cuda.get_elapsed_time(start, end)
    return start.elapsed_time(end)
