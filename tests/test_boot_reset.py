"""A box whose boot counter went back (issue 14 §3): the store starts a new epoch
instead of dropping the new incarnation's telemetry as duplicates; redelivered
duplicates stay deduplicated. Both stores. The end-to-end re-flash of a virtual
box is in tests/test_reflash_identity.py."""
import json

from backend import status
from backend.ingest import classify
from backend.store import EPOCH_STRIDE, Store
from tests.test_ingest import tel

S = EPOCH_STRIDE


def _status(box, boot, state="online"):
    return classify(f"homebox/v1/{box}/status",
                    json.dumps({"state": state, "box": box, "boot": boot}).encode(), retained=True)


def test_counter_going_back_starts_an_epoch_and_keeps_every_message(db_url):
    s = Store(db_url)
    old = [tel("A", 1, i) for i in range(1, 6)] + [tel("A", 2, i) for i in range(1, 4)]
    s.write_batch([_status("A", 1)] + old[:5])
    s.write_batch([_status("A", 2)] + old[5:])
    # a redelivery of the old incarnation: duplicates, no alarm
    c = s.write_batch(old)
    assert c["stored"] == 0 and c["duplicates"] == 8
    assert s.alarms() == {} and s.epochs()["A"] == {"epoch": 0, "top_boot": 2,
                                                     "changed_at": s.epochs()["A"]["changed_at"]}
    # re-flashed without NVS: boot 1 again, seq from 1, later timestamps
    new = [tel("A", 1, i, ts=1767230000 + i) for i in range(1, 5)]
    c = s.write_batch([_status("A", 1)] + new[:2])
    assert c["stored"] == 2
    c = s.write_batch(new[2:] + new[:2])              # the rest, and a redelivery
    assert c["stored"] == 2 and c["duplicates"] == 2
    assert [x for x in s.seqs("A") if x[1] > S] == [("A", S + 1, i) for i in range(1, 5)]
    assert len(s.seqs("A")) == 12
    e = s.epochs()["A"]
    assert (e["epoch"], e["top_boot"]) == (1, 1)
    (a,) = s.alarms()["A"]
    assert a["code"] == "boot_counter_reset" and a["n"] == 1 and "epoch 1" in a["detail"]
    (b,) = s.boxes()
    assert (b["state"], b["state_boot"]) == ("online", S + 1)
    # the next boot of the new incarnation, with a drop it declares
    drop = tel("A", 2, 5, kind="event", data={"type": "outbox_dropped", "count": 2, "dropped_total": 2,
                                                  "ranges": [[2, 2, 3]]})
    s.write_batch([_status("A", 2), tel("A", 2, 1, ts=1767240000), tel("A", 2, 4, ts=1767240004), drop])
    assert s.boxes()[0]["state_boot"] == S + 2
    assert {(g["boot"], g["first"], g["last"], g["cause"]) for g in s.gaps("A")} == {(S + 2, 2, 3, "dropped")}
    assert s.latest()[("A", "health")]["boot"] == S + 2
    rows = status.fleet(s, now=1767240100)
    (row,) = rows
    assert any(x["code"] == "boot_counter_reset" for x in row["alarms"])
    assert row["boot"] == 2 and row["epoch"] == 1
    s.close()


def test_no_epoch_for_a_normal_fleet(db_url):
    s = Store(db_url)
    s.write_batch([_status("B", 3), tel("B", 3, 1), tel("B", 3, 2)])
    s.write_batch([_status("B", 2, "offline"), _status("B", 2), tel("B", 2, 7), tel("B", 4, 1)])
    assert s.alarms() == {}
    assert s.epochs()["B"]["epoch"] == 0 and s.epochs()["B"]["top_boot"] == 4
    assert s.seqs("B") == [("B", 2, 7), ("B", 3, 1), ("B", 3, 2), ("B", 4, 1)]
    s.close()


def test_bench_parts_leave_the_nvs_partition_alone():
    from firmware import partitions as pt
    from flashing.image import keep_nvs
    from vbox import standin
    base = standin.make_base("4MB")
    table = pt.micropython_table(4 * pt.MB)
    parts = keep_nvs([(0x1000, base), (0x200000, b"fs")], table)
    assert [(o, len(d)) for o, d in parts] == [(0x1000, 0x8000), (0xF000, len(base) - 0xE000), (0x200000, 2)]
    assert parts[0][1] + b"\xff" * 0x6000 + parts[1][1] == base
    # a base that writes into the nvs partition is flashed whole
    odd = base[:0x9000] + b"\0" + base[0x9001:]
    assert keep_nvs([(0x1000, odd)], table) == [(0x1000, odd)]
