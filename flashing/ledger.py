"""The bench ledger: one SQLite file, shared by every slot of a run and by
every bench that points at the same file. Transactional (WAL, BEGIN IMMEDIATE),
so serial numbers stay unique across processes and benches.

It never holds a secret in clear: per box it keeps the broker's password hash
(Mosquitto's $7$ format), and each set of credentials the bench generated as an
escrow record sealed to the operator's public key (common/credentials.py escrow),
which nothing on the bench can open.

Tables:
    boxes     one row per box (by MAC): serial, chip, flash, broker hash, last verdict
    runs      one row per `bench run`: station, technician, tool versions, summary
    escrow    one row per box per key version: the broker hash and the sealed secrets,
              until `bench export-escrow` hands them to the operator
    attempts  one row per box per run: slot, port, images flashed (SHA-256),
              each step with its timing and retries, verdict, failure and advice,
              and the box's self-test checks (name, pass/fail/n/a, plain detail)
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from flashing.errors import LedgerError

SCHEMA = """
CREATE TABLE IF NOT EXISTS boxes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    serial TEXT UNIQUE NOT NULL,
    mac TEXT UNIQUE NOT NULL,
    chip TEXT, chip_revision TEXT, flash_id TEXT, flash_size TEXT,
    mqtt_hash TEXT,
    wifi_ssid TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    verdict TEXT,
    last_run TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    station TEXT, technician TEXT,
    tools TEXT,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    slot TEXT NOT NULL, port TEXT NOT NULL,
    mac TEXT, serial TEXT,
    started_at REAL NOT NULL, finished_at REAL,
    verdict TEXT, failure TEXT,
    chip TEXT, flash TEXT,
    images TEXT, steps TEXT,
    station TEXT, technician TEXT, tools TEXT,
    label TEXT,
    checks TEXT
);
CREATE TABLE IF NOT EXISTS escrow (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    serial TEXT NOT NULL,
    version INTEGER NOT NULL,
    mqtt_hash TEXT NOT NULL,
    wifi_ssid TEXT,
    sealed TEXT NOT NULL,
    run_id TEXT,
    created_at REAL NOT NULL,
    UNIQUE (serial, version)
);
CREATE INDEX IF NOT EXISTS attempts_serial ON attempts(serial);
CREATE INDEX IF NOT EXISTS attempts_mac ON attempts(mac);
"""


@dataclass(frozen=True)
class Identity:
    serial: str
    mac: str
    seq: int
    new: bool                # allocated now (False: the box came back)
    mqtt_hash: str | None


def normalize_mac(mac: str) -> str:
    m = mac.strip().lower().replace("-", ":")
    parts = m.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise LedgerError(f"not a MAC address: {mac!r}")
    return m


class Ledger:
    def __init__(self, path: Path | str, prefix: str = "HB"):
        self.path = Path(path)
        self.prefix = prefix
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout=30000")
            self._prepare(time.monotonic() + 30)
        except sqlite3.Error as e:
            raise LedgerError(f"cannot open the ledger {self.path}: {e}") from None
        self.db.row_factory = sqlite3.Row

    def _prepare(self, deadline: float) -> None:
        # Turning a fresh file to WAL takes an exclusive lock, and SQLite answers
        # "database is locked" at once, without its busy handler, when another
        # bench opens the same new file at that instant: try again until the deadline.
        pause = 0.01
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                # One write transaction taken up front: two benches creating the tables
                # at once would otherwise race from a read snapshot to a write, which
                # WAL refuses at once (SQLITE_BUSY_SNAPSHOT) without waiting.
                self.db.executescript("BEGIN IMMEDIATE;\n" + SCHEMA + "\nCOMMIT;")
                cols = {r[1] for r in self.db.execute("PRAGMA table_info(attempts)")}
                if "checks" not in cols:          # a ledger from before the self-test checks were kept
                    self.db.executescript("BEGIN IMMEDIATE;\nALTER TABLE attempts ADD COLUMN checks TEXT;\nCOMMIT;")
                return
            except sqlite3.OperationalError as e:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                busy = "locked" in str(e) or "busy" in str(e)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _tx(self):
        return _Tx(self.db)

    # --- identities ------------------------------------------------------------
    def allocate(self, mac: str, chip: dict | None = None) -> Identity:
        """The box's serial: the one it already has (same MAC), or the next one.
        Idempotent per MAC, unique across runs and benches sharing the file."""
        mac = normalize_mac(mac)
        chip = chip or {}
        now = time.time()
        with self._tx():
            row = self.db.execute("SELECT seq, serial, mqtt_hash FROM boxes WHERE mac = ?", (mac,)).fetchone()
            if row:
                self.db.execute("UPDATE boxes SET chip = COALESCE(?, chip), chip_revision = COALESCE(?, chip_revision), "
                                "flash_id = COALESCE(?, flash_id), flash_size = COALESCE(?, flash_size), updated_at = ? "
                                "WHERE mac = ?", (chip.get("chip"), chip.get("revision"), chip.get("flash_id"),
                                                  chip.get("flash_size"), now, mac))
                return Identity(row["serial"], mac, row["seq"], False, row["mqtt_hash"])
            cur = self.db.execute(
                "INSERT INTO boxes (serial, mac, chip, chip_revision, flash_id, flash_size, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (f"pending-{mac}", mac, chip.get("chip"), chip.get("revision"), chip.get("flash_id"),
                 chip.get("flash_size"), now, now))
            seq = cur.lastrowid
            serial = f"{self.prefix}-{seq:06d}"
            self.db.execute("UPDATE boxes SET serial = ? WHERE seq = ?", (serial, seq))
            return Identity(serial, mac, seq, True, None)

    def set_broker_hash(self, serial: str, mqtt_hash: str, wifi_ssid: str | None = None) -> None:
        if not mqtt_hash.startswith("$7$"):
            raise LedgerError("only Mosquitto $7$ hashes go into the ledger")
        with self._tx():
            self.db.execute("UPDATE boxes SET mqtt_hash = ?, wifi_ssid = COALESCE(?, wifi_ssid), updated_at = ? "
                            "WHERE serial = ?", (mqtt_hash, wifi_ssid, time.time(), serial))

    def add_escrow(self, rec: dict, run_id: str | None = None) -> None:
        """One sealed escrow record (common/credentials.py escrow) and the box's broker hash."""
        if not rec.get("sealed") or not str(rec.get("mqtt_hash", "")).startswith("$7$"):
            raise LedgerError("an escrow record needs a sealed blob and a $7$ hash")
        with self._tx():
            self.db.execute("INSERT INTO escrow (serial, version, mqtt_hash, wifi_ssid, sealed, run_id, created_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", (rec["box"], int(rec["version"]), rec["mqtt_hash"],
                                                             rec.get("wifi_ssid"), rec["sealed"], run_id, time.time()))
            self.db.execute("UPDATE boxes SET mqtt_hash = ?, wifi_ssid = COALESCE(?, wifi_ssid), updated_at = ? "
                            "WHERE serial = ?", (rec["mqtt_hash"], rec.get("wifi_ssid"), time.time(), rec["box"]))

    def next_key_version(self, serial: str) -> int:
        row = self.db.execute("SELECT MAX(version) FROM escrow WHERE serial = ?", (serial,)).fetchone()
        return (row[0] or 0) + 1

    def escrow_records(self) -> list[dict]:
        """Every escrow record, oldest first, as `ops keys import` takes them."""
        return [{"box": r["serial"], "version": r["version"], "mqtt_hash": r["mqtt_hash"],
                 "wifi_ssid": r["wifi_ssid"], "sealed": r["sealed"], "created_at": r["created_at"]}
                for r in self.db.execute("SELECT * FROM escrow ORDER BY id")]

    # --- runs and attempts -----------------------------------------------------
    def start_run(self, run_id: str, station: str, technician: str, tools: dict) -> None:
        with self._tx():
            self.db.execute("INSERT INTO runs (run_id, started_at, station, technician, tools) VALUES (?, ?, ?, ?, ?)",
                            (run_id, time.time(), station, technician, json.dumps(tools, sort_keys=True)))

    def finish_run(self, run_id: str, summary: dict) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET finished_at = ?, summary = ? WHERE run_id = ?",
                            (time.time(), json.dumps(summary, sort_keys=True), run_id))

    def record(self, run_id: str, result: dict, station: str, technician: str, tools: dict) -> int:
        """Step 10: the attempt of one box, as the pipeline reports it."""
        failure = result.get("failure")
        with self._tx():
            cur = self.db.execute(
                "INSERT INTO attempts (run_id, slot, port, mac, serial, started_at, finished_at, verdict, failure, "
                "chip, flash, images, steps, station, technician, tools, label, checks) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, result["slot"], result["port"], result.get("mac"), result.get("serial"),
                 result["started_at"], result["finished_at"], result["verdict"],
                 json.dumps(failure, sort_keys=True) if failure else None,
                 json.dumps(result.get("chip"), sort_keys=True), json.dumps(result.get("flash"), sort_keys=True),
                 json.dumps(result.get("images"), sort_keys=True), json.dumps(result.get("steps")),
                 station, technician, json.dumps(tools, sort_keys=True),
                 json.dumps(result.get("label"), sort_keys=True) if result.get("label") else None,
                 json.dumps(_checks(result)) if _checks(result) else None))
            if result.get("mac"):
                self.db.execute("UPDATE boxes SET verdict = ?, last_run = ?, updated_at = ? WHERE mac = ?",
                                (result["verdict"], run_id, time.time(), result["mac"]))
            return cur.lastrowid

    # --- queries ---------------------------------------------------------------
    def box(self, serial: str | None = None, mac: str | None = None) -> dict | None:
        if serial:
            row = self.db.execute("SELECT * FROM boxes WHERE serial = ?", (serial,)).fetchone()
        elif mac:
            row = self.db.execute("SELECT * FROM boxes WHERE mac = ?", (normalize_mac(mac),)).fetchone()
        else:
            raise LedgerError("give a serial or a MAC")
        return dict(row) if row else None

    def boxes(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM boxes ORDER BY seq")]

    def history(self, serial: str | None = None, mac: str | None = None) -> dict | None:
        """A box's record and every attempt on it, oldest first."""
        box = self.box(serial, mac)
        if box is None and mac:
            # a box that never got a serial (quarantined at once) still has its attempts
            m = normalize_mac(mac)
            first = self.db.execute("SELECT chip, flash FROM attempts WHERE mac = ? ORDER BY id LIMIT 1", (m,)).fetchone()
            if first is None:
                return None
            chip = json.loads(first["chip"] or "null") or {}
            flash = json.loads(first["flash"] or "null") or {}
            box = {"serial": None, "mac": m, "chip": chip.get("description"), "chip_revision": chip.get("revision"),
                   "flash_id": flash.get("flash_id"), "flash_size": flash.get("flash_size"), "mqtt_hash": None,
                   "wifi_ssid": None, "verdict": None}
        if box is None:
            return None
        rows = self.db.execute("SELECT a.*, r.started_at AS run_started FROM attempts a JOIN runs r USING (run_id) "
                               "WHERE a.mac = ? ORDER BY a.id", (box["mac"],)).fetchall()
        attempts = []
        for r in rows:
            a = dict(r)
            for k in ("failure", "chip", "flash", "images", "steps", "tools", "label", "checks"):
                a[k] = json.loads(a[k]) if a.get(k) else None
            attempts.append(a)
        if box["verdict"] is None and attempts:
            box["verdict"] = attempts[-1]["verdict"]
        return {"box": box, "attempts": attempts}

    def broker_credentials(self) -> dict[str, dict]:
        """{serial: {"mqtt_hash": $7$...}} for `homebox ops broker-config --credentials`."""
        return {r["serial"]: {"mqtt_hash": r["mqtt_hash"]}
                for r in self.db.execute("SELECT serial, mqtt_hash FROM boxes WHERE mqtt_hash IS NOT NULL ORDER BY seq")}


def _checks(result: dict) -> list[dict]:
    """The self-test's checks of an attempt: names, statuses and plain details
    (the box's answers are scrubbed of secrets; nothing else is kept)."""
    t = result.get("tests") or {}
    return [{"name": c.get("name"), "status": c.get("status"), "detail": c.get("detail")}
            for c in t.get("checks") or []]


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise LedgerError(f"the ledger is busy or unwritable: {e}") from None
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
        return False
