"""Coverage and speed telemetry validate against the contract's schemas."""
from __future__ import annotations

import asyncio

import pytest

from agent import coverage, speedtest
from agent.hal.sim_wifi import SCENARIOS, SimWifi
from backend import speedtest_server
from backend.contract import ContractError, validate

BOX = "box-1"


def env(kind: str, data: dict, seq: int = 1) -> dict:
    return {"v": 1, "box": BOX, "boot": 1, "seq": seq, "ts": 1767225600, "kind": kind, "data": data}


def coverage_report(**over) -> dict:
    sc = dict(SCENARIOS["weak_bedroom"], **over)
    w = SimWifi(sc, 3)
    cov = coverage.Coverage(b"salt")
    for t in range(0, 300, 10):
        cov.sample(w.stations(t), 10)
    return cov.report(w.scan(t) if sc.get("rssi", True) else None, w.channel())


def test_coverage_messages_validate():
    validate(f"homebox/v1/{BOX}/telemetry/coverage", env("coverage", coverage_report(jitter=3)))
    d = coverage_report(rssi=False)
    assert d["rssi"] == "unsupported"
    validate(f"homebox/v1/{BOX}/telemetry/coverage", env("coverage", d))


def test_coverage_schema_rejects_a_clear_mac_and_out_of_range_dbm():
    d = coverage_report()
    d["stations"][0]["id"] = "a4:5e:60:11:22:33"
    with pytest.raises(ContractError):
        validate(f"homebox/v1/{BOX}/telemetry/coverage", env("coverage", d))
    d = coverage_report()
    d["stations"][0]["signal_strength"]["max"] = 5
    with pytest.raises(ContractError):
        validate(f"homebox/v1/{BOX}/telemetry/coverage", env("coverage", d))


def test_speed_messages_validate():
    srv = speedtest_server.start()
    try:
        url = "http://127.0.0.1:%d" % srv.server_address[1]
        r = speedtest.run(url, streams=2, seconds=1.5, budget=400_000_000, warmup=0.25,
                          plan=(10_000_000, 1_000_000), bufsize=16384)
        validate(f"homebox/v1/{BOX}/telemetry/speed", env("speed", r))
        assert r["bytes"] <= r["budget"]
        # the agent's own event-loop runner gives the same shape
        r2 = asyncio.run(speedtest.arun(url, 2, 1, 2_000_000, plan=(None, None), bufsize=8192))
        validate(f"homebox/v1/{BOX}/telemetry/speed", env("speed", r2))
        assert r2["bytes"] <= 2_000_000 and r2["down"]["stop"] == "budget"
    finally:
        srv.shutdown()
    validate(f"homebox/v1/{BOX}/telemetry/speed", env("speed", {"skipped": "busy", "bytes": 0, "budget": 0}))
    with pytest.raises(ContractError):
        validate(f"homebox/v1/{BOX}/telemetry/speed", env("speed", {"bytes": 0, "budget": 0}))
