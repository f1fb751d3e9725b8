"""The agent's heap bound on the real MicroPython interpreter (figures: make bench,
docs/performance.md)."""
import json
import re

from tests.boxproc import BoxProcess
from tests.helpers import Capture
from vbox.device import ROM_BOOT_ALLOWANCE

# The bound: 1,000 telemetry cycles in a 64 KiB heap, default config.
# Live heap of the default box on the 64-bit unix port: ~55 KB (it was ~63 KB,
# which needed 80k). Rarely run code is loaded when it runs and released
# (agent/*_cold.py, the section rules); see docs/performance.md.
HEAP = "64k"


def test_1000_cycles_in_bounded_heap(broker, tmp_path):
    cap = Capture(broker.port)
    # shutdown_drain: on a loaded host the last records may still be in the outbox
    # when the 1,000th cycle ends; the box drains them before it stops.
    box = BoxProcess(tmp_path, "box-heap", broker.port, "micropython", heap=HEAP,
                     max_cycles=1000, speedup=60000, drain_rate=5000, shutdown_drain=20).start()
    assert box.wait(120) == 0, box.output()
    out = "\n".join(box.lines)
    assert "MemoryError" not in out and "failed" not in out, box.output()
    assert box.log_values("stopped", "cycles") == ["1000"]
    assert box.log_values("stopped", "backlog") == ["0"]
    # the broker holds them all (backlog 0); a starved capture thread may still be
    # taking them: wait for the condition, with room for a loaded host
    assert cap.wait_for(lambda c: c.telemetry_count() >= 1000, 120), len(cap.telemetry())
    cap.close()
    health = [json.loads(p) for t, p, _ in cap.messages if t.endswith("/telemetry/health")]
    seqs = sorted(m["seq"] for m in health)
    assert seqs == list(range(1, 1001))
    # the live heap (after a collection, in every health report) stays bounded:
    # no leak over 1,000 cycles, and room left for the transient allocations
    alloc = [m["data"]["heap_alloc"] for m in health]
    assert max(alloc) < 60 * 1024, max(alloc)
    assert alloc[-1] - alloc[10] < 2048, (alloc[10], alloc[-1])


def test_1000_cycles_in_64k_on_the_board_boot_path(broker, tmp_path):
    """The same bound where a box really runs: the firmware a bench flashes, booted by
    the (virtual) board from littlefs, firmware/main.py with its serial console."""
    from vbox import boardrun
    box_id = "box-heap-board"
    cfg = {"box_id": box_id, "broker_host": "127.0.0.1", "broker_port": broker.port,
           "state_dir": "/state", "max_cycles": 1000, "speedup": 60000, "telemetry_interval": 60,
           "keepalive": 10, "backoff_base": 0.2, "backoff_cap": 2.0, "drain_rate": 5000,
           "shutdown_drain": 20}
    cap = Capture(broker.port)
    box = boardrun.boot_firmware(tmp_path / "box", cfg, {"mqtt_user": box_id, "mqtt_password": "pw"},
                                 heap=HEAP)
    try:
        ended = boardrun.wait_stopped(box, 240)
        con = box.console()
        assert ended, con[-3000:]
        assert "MemoryError" not in con and "Traceback" not in con and "failed" not in con, con[-3000:]
        assert "agent starting, box %s, hal sim" % box_id in con
        assert re.search(r"\[hb\] stopped cycles=1000 .*backlog=0 ", con), con[-3000:]
        assert cap.wait_for(lambda c: len({json.loads(p)["seq"] for t, p, _r in c.messages
                                            if t.endswith("/telemetry/health")}) >= 1000, 30), \
            (len(cap.messages), sorted({t for t, _p, _r in cap.messages}), con[-1500:])
    finally:
        box.stop()
        cap.close()
    # The emulated ROM boot holds less than its allowance, and a ballast the rest:
    # the agent had the heap a board leaves it (vbox/device.py).
    rom = json.loads((box.dir / "stats.json").read_text())["rom_boot_heap"]
    assert rom["ballast"] >= 0 and rom["emulation"] + rom["ballast"] == ROM_BOOT_ALLOWANCE, rom
    health = [json.loads(p) for t, p, _ in cap.messages if t.endswith("/telemetry/health")]
    assert sorted({m["seq"] for m in health}) == list(range(1, 1001))
    alloc = [m["data"]["heap_alloc"] - ROM_BOOT_ALLOWANCE for m in health]
    assert max(alloc) < 60 * 1024, max(alloc)
    assert alloc[-1] - alloc[10] < 2048, (alloc[10], alloc[-1])
