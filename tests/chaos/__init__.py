"""System-level fault runs against real processes: power cuts, a broker crash and
network partitions, with the real agent (CPython and MicroPython), a real
Mosquitto and the real backend ingest writing to SQLite.

    python -m tests.chaos [--kills 200] [--boxes 8] [--fuzz-examples 1000]   # `make chaos`

tests/test_chaos.py runs the same scenarios with reduced counts inside `make test`.

What is checked, from the outside only (box logs, the box's state files, the
broker's messages and the backend's database):

- after every cut the box's filesystem mounts (the littlefs in a virtual ESP32's
  flash, vbox/) and every state file parses; every box boots again;
- every record still in a box's outbox at a cut reaches the database later;
- every (box, boot) stream in the database holds seq 1..max, each once; a gap is
  allowed only where the box declared it dropped (its outbox bound);
- no (box, boot, seq) ever carries two different messages (a reused number);
- every box converges to its desired versions (reported == desired, on disk too).

The package, by concern:

- harness.py: the backend (Mosquitto, ingest, store), the operator, the tally;
- boxes.py: agent processes and virtual ESP32s (littlefs in their flash);
- checks.py: state files after a cut, the streams in the database, convergence;
- netns.py: network namespaces and veth links (root);
- faults.py: the scenarios: power cuts, broker crash, partition;
- __main__.py: `make chaos`, with every fuzz target (tests/fuzzing.py).
"""
from __future__ import annotations

from tests.chaos.faults import broker_crash, partition, power_cuts
from tests.chaos.harness import ChaosError, Tally
from tests.chaos.netns import netns_available

__all__ = ["ChaosError", "Tally", "broker_crash", "netns_available", "partition", "power_cuts"]
