# Outbox unit tests; run under CPython and MicroPython by tests/test_onbox.py.
from agent import fsutil
from agent.outbox import PRIO_HIGH, Outbox


def _drain(ob):
    got = []
    while True:
        rec = ob.peek()
        if rec is None:
            return got
        got.append(rec)
        ob.ack()


def test_put_peek_ack_in_order(tmp):
    ob = Outbox(tmp + "/ob")
    for i in range(1, 6):
        ob.put(1, i, "telemetry/health", '{"seq":%d}' % i)
    assert ob.count == 5
    got = _drain(ob)
    assert [g[1] for g in got] == [b'{"seq":%d}' % i for i in range(1, 6)]
    assert got[0][0] == "telemetry/health"
    assert ob.count == 0 and ob.bytes == 0


def test_unacked_record_is_peeked_again(tmp):
    ob = Outbox(tmp + "/ob")
    ob.put(1, 1, "t", "a")
    ob.put(1, 2, "t", "b")
    assert ob.peek()[1] == b"a"
    assert ob.peek()[1] == b"a"      # no PUBACK yet: still the oldest
    ob.ack()
    assert ob.peek()[1] == b"b"


def test_survives_reopen_and_keeps_position(tmp):
    ob = Outbox(tmp + "/ob", seg_bytes=64)
    for i in range(1, 21):
        ob.put(3, i, "t", "payload-%02d" % i)
    for _ in range(7):
        ob.peek()
        ob.ack()
    ob2 = Outbox(tmp + "/ob", seg_bytes=64)
    assert ob2.count == 13
    assert ob2.top_boot == 3
    got = _drain(ob2)
    assert got[0][1] == b"payload-08" and got[-1][1] == b"payload-20"
    assert len(got) == 13


def test_torn_tail_is_cut_and_appends_continue(tmp):
    ob = Outbox(tmp + "/ob")
    ob.put(1, 1, "t", "one")
    ob.put(1, 2, "t", "two")
    seg = tmp + "/ob/" + [n for n in fsutil.listdir(tmp + "/ob") if n.endswith(".seg")][0]
    with open(seg, "a") as f:
        f.write("0|1|3|t|thr")          # a power cut in the middle of a write
    ob2 = Outbox(tmp + "/ob")
    assert ob2.count == 2
    ob2.put(2, 1, "t", "after")
    got = _drain(ob2)
    assert [g[1] for g in got] == [b"one", b"two", b"after"]


def test_bound_drops_oldest_low_priority_and_reports_it(tmp):
    ob = Outbox(tmp + "/ob", max_bytes=600, seg_bytes=150)
    ob.put(1, 1, "event", "important", PRIO_HIGH)
    for i in range(2, 40):
        ob.put(1, i, "t", "x" * 20)
    assert ob.bytes <= 600
    assert ob.dropped > 0
    rep = ob.take_drop_report()
    assert rep[0] == ob.dropped
    # Dropped sequence numbers are reported as ranges, starting after the event.
    assert rep[1][0][0] == 1 and rep[1][0][1] == 2
    assert ob.take_drop_report() is None
    got = _drain(ob)
    assert got[0][1] == b"important"            # high priority survived
    assert len(got) + rep[0] == 39


def test_drop_total_persists(tmp):
    ob = Outbox(tmp + "/ob", max_bytes=300, seg_bytes=100)
    for i in range(1, 40):
        ob.put(1, i, "t", "y" * 20)
    total = ob.dropped_total
    assert total > 0
    ob2 = Outbox(tmp + "/ob", max_bytes=300, seg_bytes=100)
    assert ob2.dropped_total == total


def test_stale_head_segment_files_are_removed(tmp):
    ob = Outbox(tmp + "/ob", seg_bytes=40)
    for i in range(1, 10):
        ob.put(1, i, "t", "z" * 10)
    _drain(ob)
    ob.put(1, 10, "t", "last")
    segs = [n for n in fsutil.listdir(tmp + "/ob") if n.endswith(".seg")]
    assert len(segs) <= 2
    assert _drain(Outbox(tmp + "/ob", seg_bytes=40)) == [("t", b"last")]
