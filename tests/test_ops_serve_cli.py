"""`homebox ops account|token|inventory|audit|serve`: the thin CLI over the
accounts, the inventory and the server, with --json."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from flashing.ledger import Ledger


def _hb(*args, db, stdin=None, timeout=60):
    r = subprocess.run([sys.executable, "-m", "homebox.cli", *args, "--db", db], input=stdin,
                       capture_output=True, text=True, timeout=timeout)
    return r


def test_accounts_tokens_inventory_and_serve(tmp_path):
    db = f"sqlite:///{tmp_path}/b.db"
    r = _hb("ops", "account", "add", "ada", "--role", "admin", "--password-stdin", "--json", db=db,
            stdin="ada-admin-pass-1\n")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"name": "ada", "role": "admin"}
    r = _hb("ops", "account", "add", "bob", "--role", "viewer", "--password-stdin", "--json", db=db, stdin="short\n")
    assert r.returncode == 1 and "too short" in json.loads(r.stdout)["message"]
    assert "ada-admin-pass-1" not in r.stdout + r.stderr
    tok = json.loads(_hb("ops", "token", "create", "ada", "--label", "crm", "--json", db=db).stdout)["token"]
    assert tok.startswith("hbt_")
    with Ledger(tmp_path / "ledger.db") as led:
        serial = led.allocate("a4:5e:60:00:00:09").serial
    r = _hb("ops", "inventory", "import", "--ledger", str(tmp_path / "ledger.db"), "--json", db=db)
    assert json.loads(r.stdout) == {"imported": 1}
    r = _hb("ops", "inventory", "set", serial, "--building", "tower-C", "--json", db=db)
    assert json.loads(r.stdout)["building"] == "tower-C"
    assert _hb("ops", "inventory", "set", "HB-999999", "--building", "x", db=db).returncode == 1
    log = json.loads(_hb("ops", "audit", "--json", db=db).stdout)
    assert {e["action"] for e in log} >= {"account.add", "token.create", "inventory.import", "place"}
    assert [a["name"] for a in json.loads(_hb("ops", "account", "list", "--json", db=db).stdout)] == ["ada"]

    # the server: prints its address as JSON, answers with the token, stops after --duration
    p = subprocess.Popen([sys.executable, "-m", "homebox.cli", "ops", "serve", "--db", db, "--port", "0",
                          "--duration", "30", "--grace", "0", "--json"], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(p.stdout.readline())
        req = urllib.request.Request(info["url"] + "/api/v1/boxes?building=tower-C",
                                     headers={"Authorization": f"Bearer {tok}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            page = json.loads(resp.read())
        assert [(b["box"], b["state"], b["alarms"]) for b in page["items"]] == [(serial, "never_connected", 1)]
    finally:
        p.terminate()
        p.wait(10)
