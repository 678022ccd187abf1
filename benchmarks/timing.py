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
    if hasattr(start, "elapsed_time"):  # torch.cuda.Event (and test doubles)
        return start.elapsed_time(end)
    import cupy

    return cupy.cuda.get_elapsed_time(start, end)


def queued_ms(step, record, sleep, warmup: int, reps: int, per_spin: int = 5) -> float:
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
        per_spin: steps queued behind each spin (see below).
    """
    import time

    for i in range(warmup):
        step(i)
    record().synchronize()
    t0 = time.perf_counter()
    step(0)
    record().synchronize()
    per_step_ms = 1e3 * (time.perf_counter() - t0)
    # A few steps per spin: the driver's launch queue holds about a thousand pending
    # launches; past that the host blocks until the GPU drains, and the steps queued after it
    # would be timed at the host's pace again (a step of ~80 launches fills it in ~12 steps).
    times = []
    for first in range(0, reps, per_spin):
        n = min(per_spin, reps - first)
        sleep(1.0 + 2.0 * per_step_ms * n)
        events = [record()]
        for i in range(first, first + n):
            step(i)
            events.append(record())
        events[-1].synchronize()
        times += [elapsed_ms(events[i], events[i + 1]) for i in range(n)]
    return statistics.median(times)


def interleaved_event_ms(contenders: dict, warmup: int, reps: int, rounds: int = 5) -> dict:
    """:func:`event_ms` for several contenders, measured in alternating rounds.

    Host-bound steps (eager training steps) vary by 10–30 % over seconds on a shared
    machine (CPU clocks, neighbours): timing one library for a few seconds and then the
    other turns that drift into a false ratio. Here each round times every contender for
    ``reps / rounds`` steps, in alternating order, and each contender's median is taken over
    all its steps.

    Args:
        contenders: ``{name: (step, record, sync)}`` as for :func:`event_ms`.
        warmup: untimed steps per contender before the first round.
        reps: timed steps per contender in all.
        rounds: how many times to alternate.

    Returns:
        ``{name: median ms}``.
    """
    per_round = max(1, reps // rounds)
    times: dict = {name: [] for name in contenders}
    for step, _, sync in contenders.values():
        for i in range(warmup):
            step(i)
        sync()
    names = list(contenders)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            step, record, sync = contenders[name]
            for i in range(per_round):
                start = record()
                step(r * per_round + i)
                end = record()
                end.synchronize()
                times[name].append(elapsed_ms(start, end))
    return {name: statistics.median(v) for name, v in times.items()}


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

