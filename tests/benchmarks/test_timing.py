"""benchmarks.timing.interleaved_event_ms: alternating rounds, per-contender medians."""

from benchmarks.timing import interleaved_event_ms


class FakeClock:
    """Events that stamp a shared clock; each step advances it by the contender's cost times
    a drift factor that grows over the run (a host slowing down)."""

    def __init__(self):
        self.now = 0.0
        self.calls = []

    def event(self):
        clock = self

        class Event:
            t = clock.now

            def synchronize(self):
                pass

            def elapsed_time(self, other):
                return other.t - self.t

        return Event()


def test_interleaving_cancels_a_steady_drift_and_alternates_order():
    clock = FakeClock()

    def contender(name, cost):
        def step(i):
            clock.calls.append(name)
            clock.now += cost * (1.0 + 0.01 * len(clock.calls))  # the machine slows down
        return step, clock.event, lambda: None

    res = interleaved_event_ms({"a": contender("a", 1.0), "b": contender("b", 1.0)},
                               warmup=2, reps=20, rounds=5)
    # equal work: back-to-back timing would give b ~20 % slower; alternating rounds keep the
    # two medians within a few percent
    assert abs(res["a"] / res["b"] - 1.0) < 0.05, res
    timed = clock.calls[4:]  # after both warm-ups
    assert len(timed) == 40
    firsts = [timed[i] for i in range(0, 40, 8)]  # who starts each round (4 + 4 steps)
    assert firsts == ["a", "b", "a", "b", "a"]


def test_interleaving_keeps_a_real_difference():
    clock = FakeClock()

    def contender(cost):
        def step(i):
            clock.now += cost
        return step, clock.event, lambda: None

    res = interleaved_event_ms({"fast": contender(1.0), "slow": contender(1.5)}, warmup=1,
                               reps=10, rounds=5)
    assert res == {"fast": 1.0, "slow": 1.5}
