"""The bench station as a library: slots, the ten-step pipeline, the ledger,
labels. `homebox bench ...` (homebox/cli_bench.py) is a thin layer over it.

    from flashing import slots, station, image
    from common import credentials
    fw = image.load_firmware(base_bin, virtual=False)
    pub = credentials.load_operator_pub("operator.pub")   # the operator's public key
    cfg = station.Config(out_dir, ledger, pub, "file", fw, broker="10.0.0.2:1883")
    report = station.Station(cfg).run(slots.discover(Path("bench-slots.json")))

Modules:
    errors       typed failures: kind, verdict (FAIL / QUARANTINE) and advice
    esp          one box over esptool's API (connect, identify, flash, reset)
    slots        ports by USB location, explicit lists, virtual boxes
    ledger       SQLite record of serials, attempts, verdicts, sealed escrow (no secret in clear)
    image        the per-box filesystem image, built in memory
    acceptance   hw-tests/ (pytest-embedded) on the box console
    label        the tenant's sticker (PNG + PDF, Wi-Fi QR code)
    pipeline     the ten steps for one slot
    station      all slots in parallel, one process each, and the run report
"""
