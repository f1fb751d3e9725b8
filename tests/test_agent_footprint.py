"""The agent's heap bound on the real MicroPython interpreter (figures: make bench)."""
import json

from boxproc import BoxProcess
from helpers import Capture

# The core runtime lives in ~55 KB; with the update rules' effects task and the
# default lineup it needs ~63 KB live, so the bound tested today is 80k, not the
# 64k target (docs/performance.md says what is left to get there).
HEAP = "80k"


def test_1000_cycles_in_bounded_heap(broker, tmp_path):
    cap = Capture(broker.port)
    box = BoxProcess(tmp_path, "box-heap", broker.port, "micropython", heap=HEAP,
                     max_cycles=1000, speedup=60000, drain_rate=5000).start()
    assert box.wait(120) == 0, box.output()
    out = "\n".join(box.lines)
    assert "MemoryError" not in out
    assert box.log_values("stopped", "cycles") == ["1000"]
    assert cap.wait_for(lambda c: len(c.telemetry()) >= 1000, 20)
    cap.close()
    seqs = sorted(json.loads(p)["seq"] for t, p, _ in cap.messages if "/telemetry/" in t)
    assert seqs == list(range(1, 1001))
