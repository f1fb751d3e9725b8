from agent.backoff import full_jitter, phase


def test_full_jitter_stays_in_window(tmp):
    for attempt in range(0, 12):
        ceiling = min(300.0, 1.0 * (1 << attempt))
        for _ in range(50):
            d = full_jitter(attempt, 1.0, 300.0)
            assert 0 <= d <= ceiling


def test_full_jitter_is_spread(tmp):
    ds = [full_jitter(8, 1.0, 300.0) for _ in range(200)]
    assert max(ds) > 200 and min(ds) < 56      # uses the whole [0, 256) window
    assert len(set(ds)) > 190


def test_cap_applies(tmp):
    assert max(full_jitter(30, 1.0, 5.0) for _ in range(100)) <= 5.0
    assert full_jitter(1000, 1.0, 5.0) <= 5.0


def test_phase_is_stable_and_spread(tmp):
    assert phase("box-1", 300) == phase("box-1", 300)
    ps = set(phase("box-%d" % i, 300) for i in range(200))
    assert len(ps) > 120      # ~146 expected for 200 uniform draws over 300 slots
    assert all(0 <= p < 300 for p in ps)
