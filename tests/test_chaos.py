"""The system-level fault runs of tests/chaos/ with reduced counts, inside
`make test` (`make chaos` runs them in full: 200 power cuts, 8 boxes).

HB_CHAOS_KILLS and HB_CHAOS_BOXES change the counts here too."""
from __future__ import annotations

import os

import pytest

from tests.boxproc import BoxProcess
from tests.chaos import broker_crash, netns_available, partition, power_cuts
from tests.helpers import free_port

KILLS = int(os.environ.get("HB_CHAOS_KILLS", "20"))
BOXES = int(os.environ.get("HB_CHAOS_BOXES", "4"))


def _report(tally) -> None:
    print(f"\nchaos: {tally.line()}")
    tally.check()


def test_power_cuts_lose_nothing_and_converge(tmp_path):
    t = power_cuts(tmp_path, kills=KILLS, boxes=BOXES)
    _report(t)
    assert t.kills == KILLS and t.converged == t.boxes
    assert t.seqs_checked > 100 and t.pending_at_cuts > 0


def test_broker_crash_reconcile_and_outbox_bound(tmp_path):
    t = broker_crash(tmp_path)
    _report(t)
    assert t.extra["re-published by reconcile"] > 0 and t.declared_dropped > 0


@pytest.mark.skipif(netns_available() is not None, reason=f"network partition: {netns_available()}")
def test_partition_offline_detection_and_ordered_drain(tmp_path):
    t = partition(tmp_path)
    _report(t)


def test_long_outage_with_a_small_outbox_keeps_running(tmp_path):
    # No broker at all: every report stays in a 3000-byte outbox, whose sealed
    # segments end up holding only high-priority records. Each outbox_dropped event
    # once displaced another one until Box.emit recursed out of the heap (issue 9).
    box = BoxProcess(tmp_path, "ob-mp", free_port(), "micropython", outbox_max_bytes=3000,
                     outbox_seg_bytes=1000, max_cycles=1500, speedup=30000)
    box.start()
    rc = box.wait(120)
    assert rc == 0 and box.log_values("stopped", "cycles") == ["1500"], box.output()
