"""Shared GPU timing for the benchmarks: CUDA events (CuPy's or PyTorch's) around a step."""

from __future__ import annotations

import statistics

_CYCLES_PER_MS = None  # torch.cuda._sleep cycles per millisecond, measured once


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


def queued_ms(step, record, sleep, warmup: int, reps: int) -> float:
    """Median device milliseconds per ``step(i)`` with the host's enqueue cost hidden.

    ``event_ms`` times from the host's point of view: a step whose kernels take less time
    than the Python that enqueues them shows the host cost. For kernel throughput (GB/s,
    TFLOP/s) we want the device time alone, so this queues every step behind a GPU spin
    (``sleep(ms)``, e.g. ``torch.cuda._sleep`` on the library's stream) long enough to cover
    the enqueuing, with an event between consecutive steps; the device then runs the steps
    back to back and the events measure each one's kernels only.

    Args:
        step: the work, called with the repetition index.
        record: returns a recorded event on the stream the step runs on.
        sleep: ``sleep(ms)`` queues a spin of about ``ms`` milliseconds on that stream.
        warmup, reps: untimed and timed repetitions.
    """
    import time

    for i in range(warmup):
        step(i)
    record().synchronize()
    t0 = time.perf_counter()
    step(0)
    record().synchronize()
    per_step_ms = 1e3 * (time.perf_counter() - t0)
    sleep(1.0 + 2.0 * per_step_ms * reps)
    events = [record()]
    for i in range(reps):
        step(i)
        events.append(record())
    events[-1].synchronize()
    return statistics.median(elapsed_ms(events[i], events[i + 1]) for i in range(reps))


def torch_spin(stream=None):
    """A ``sleep(ms)`` for :func:`queued_ms`: ``torch.cuda._sleep`` calibrated once, on
    ``stream`` (a ``torch.cuda.Stream``/``ExternalStream``; the current stream when None)."""
    import torch

    cycles_per_ms = sleep_cycles_per_ms()

    def sleep(ms: float) -> None:
        if stream is None:
            torch.cuda._sleep(int(ms * cycles_per_ms))
        else:
            with torch.cuda.stream(stream):
                torch.cuda._sleep(int(ms * cycles_per_ms))

    return sleep


def sleep_cycles_per_ms() -> float:
    """GPU clock cycles per millisecond of ``torch.cuda._sleep`` (measured once per process)."""
    import torch

    global _CYCLES_PER_MS
    if _CYCLES_PER_MS is None:
        torch.cuda._sleep(1000)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        torch.cuda._sleep(20_000_000)
        b.record()
        b.synchronize()
        _CYCLES_PER_MS = 20_000_000 / a.elapsed_time(b)
    return _CYCLES_PER_MS


def cupy_stream_spin():
    """A ``sleep(ms)`` on CuPy's current stream (where scitensor queues its work)."""
    import cupy
    import torch

    return torch_spin(torch.cuda.ExternalStream(cupy.cuda.get_current_stream().ptr))

