# Over-the-air releases, the parts without a network: the desired document and
# its signature, the manifest's lines, the boot pointer's slot choice, try
# counter and fall-back (firmware/otaboot.py), the confirmation and the report
# of a fall-back. Run under CPython and MicroPython by tests/test_onbox.py.
import json

from otabox import Box, manifest, release_files, sha, signed

from agent import fsutil
from agent import ota_cold as ota
from agent import ota_install as inst

GOOD = {"version": 5, "release": "0.2.0", "url": "http://127.0.0.1:1/r", "manifest": "a" * 64,
        "confirm_s": 60}


def _raises(fn, *args):
    try:
        fn(*args)
    except Exception as e:
        return e
    raise AssertionError("no exception")


def _rep(box):
    return box.twin.reported.get("release")


def test_a_forged_or_foreign_release_is_refused(tmp):
    box = Box(tmp)
    d = signed(GOOD)
    d["manifest"] = "b" * 64                     # tampered after signing
    assert ota.handle(box, json.dumps(d)) == "rejected"
    assert _rep(box)["rejected"]["field"] == "sig"
    assert _rep(box)["rejected"]["version"] == 5
    other = signed(GOOD, "ff" * 32)               # another box's key
    assert ota.handle(box, json.dumps(other)) == "rejected"
    unsigned = dict(GOOD, box="b1")
    assert ota.handle(box, json.dumps(unsigned)) == "rejected"
    assert box.ota_task is None and not fsutil.exists(tmp + "/ota/boot.json")


def test_bad_release_fields_are_refused_with_the_field(tmp):
    box = Box(tmp)
    for field, bad in (("url", "https://x/"), ("manifest", "A" * 64), ("release", ""), ("confirm_s", 1),
                       ("extra", 1)):
        d = dict(GOOD)
        d[field] = bad
        assert ota.handle(box, json.dumps(signed(d))) == "rejected", field
        assert _rep(box)["rejected"]["field"] == field, (field, _rep(box))
    assert ota.handle(box, b"{not json") == "rejected"
    assert ota.handle(box, b"x" * 2000) == "rejected"
    assert _rep(box)["rejected"]["field"] == "$"


def test_a_handled_version_is_a_replay(tmp):
    box = Box(tmp)
    fsutil.write_json(tmp + "/state/ota.json", {"handled": 5})
    assert ota.handle(box, json.dumps(signed(GOOD))) == "replay"
    assert box.ota_task is None


def test_the_running_release_is_applied_at_once(tmp):
    box = Box(tmp)
    fsutil.write_json(tmp + "/ota/boot.json", {"slot": "a", "state": "ok", "version": 5, "release": "0.2.0"})
    assert ota.handle(box, json.dumps(signed(GOOD))) == "applied"
    r = _rep(box)
    assert r["status"] == "applied" and r["version"] == 5 and r["release"] == "0.2.0" and r["slot"] == "a"
    assert fsutil.read_json(tmp + "/state/ota.json")["handled"] == 5


def test_manifest_lines_are_checked(tmp):
    h = "0" * 64
    assert inst.manifest_entry("%s 12 agent/x.mpy\n" % h) == (h, 12, "agent/x.mpy")
    for line in ("%s 12 boot.py" % h, "%s 12 agent/../main.py" % h, "%s -1 agent/x.mpy" % h,
                 "%s 99999999 agent/x.mpy" % h, "zz 12 agent/x.mpy", "%s 12 agent/X.mpy" % h,
                 "%s twelve agent/x.mpy" % h, "%s 12" % h):
        assert isinstance(_raises(inst.manifest_entry, line), inst.Bad), line
    files = release_files("0.2.0")
    with open(tmp + "/m", "wb") as f:
        f.write(manifest("0.2.0", files))
    got = list(inst.entries(tmp + "/m"))
    assert [g[2] for g in got] == sorted(files)
    assert got[0][0] == sha(files[got[0][2]]) and got[0][1] == len(files[got[0][2]])
    with open(tmp + "/m2", "wb") as f:
        f.write(b"something else 1\n")
    e = _raises(lambda: list(inst.entries(tmp + "/m2")))
    assert isinstance(e, inst.Bad) and e.field == "manifest"


def _slot(root, slot):
    fsutil.makedirs(root + "/" + slot + "/agent")
    with open(root + "/" + slot + "/agent/__init__.mpy", "wb") as f:
        f.write(b"M")


def test_boot_counts_trial_boots_then_falls_back(tmp):
    import otaboot
    root = tmp + "/ota"
    fsutil.makedirs(root)
    _slot(root, "a")
    _slot(root, "b")
    otaboot.write({"slot": "b", "state": "trial", "tries": 0, "version": 7, "release": "0.3.0",
                   "prev": "a", "prev_version": 6, "prev_release": "0.2.0"}, root)
    for n in range(1, otaboot.TRIES + 1):
        assert otaboot.pick(root) == root + "/b"
        assert otaboot.read(root)["tries"] == n
    # the trial used its tries without a confirmation: back to a, and why
    assert otaboot.pick(root) == root + "/a"
    p = otaboot.read(root)
    assert p["slot"] == "a" and p["state"] == "ok" and p["version"] == 6 and p["release"] == "0.2.0"
    assert p["rolled_back"]["version"] == 7 and "not confirmed after 3 boots" in p["rolled_back"]["reason"]
    assert otaboot.pick(root) == root + "/a"          # and it stays there
    assert not fsutil.exists(root + "/boot.json.tmp")


def test_a_failed_trial_falls_back_at_the_next_boot(tmp):
    import otaboot
    root = tmp + "/ota"
    fsutil.makedirs(root)
    _slot(root, "a")
    otaboot.write({"slot": "a", "state": "trial", "tries": 1, "version": 3, "release": "0.2.0", "prev": ""}, root)
    assert otaboot.fail("crashed: ImportError('x')", root)
    assert otaboot.pick(root) is None                 # the factory agent
    p = otaboot.read(root)
    assert p["slot"] == "" and p["rolled_back"]["reason"] == "crashed: ImportError('x')"
    assert not otaboot.fail("again", root)            # nothing on trial any more


def test_boot_refuses_an_empty_slot_and_a_broken_pointer(tmp):
    import otaboot
    root = tmp + "/ota"
    fsutil.makedirs(root)
    otaboot.write({"slot": "b", "state": "trial", "tries": 0, "version": 3, "prev": ""}, root)
    assert otaboot.pick(root) is None                 # b holds no agent
    assert "no agent" in otaboot.read(root)["rolled_back"]["reason"]
    with open(root + "/boot.json", "w") as f:
        f.write('{"slot": "b", "sta')                 # cannot happen (tmp + rename), but
    assert otaboot.pick(root) is None                 # the factory agent still boots
    assert otaboot.pick(tmp + "/nothing") is None


def test_confirm_keeps_the_release_and_reports_it(tmp):
    box = Box(tmp)
    _slot(tmp + "/ota", "b")
    p = {"slot": "b", "state": "trial", "tries": 1, "version": 8, "release": "0.3.0", "prev": "a"}
    fsutil.write_json(tmp + "/ota/boot.json", p)
    box.trial = p
    ota.confirm(box)
    q = fsutil.read_json(tmp + "/ota/boot.json")
    assert q["state"] == "ok" and q["tries"] == 0 and q["slot"] == "b"
    assert box.trial is None
    r = _rep(box)
    assert r["status"] == "applied" and r["version"] == 8 and r["release"] == "0.3.0"
    assert fsutil.read_json(tmp + "/state/ota.json")["handled"] == 8
    assert ota.handle(box, json.dumps(signed(dict(GOOD, version=8)))) == "replay"


def test_a_fall_back_is_reported_as_a_rejection_once(tmp):
    box = Box(tmp)
    p = {"slot": "a", "state": "ok", "version": 6, "release": "0.2.0",
         "rolled_back": {"version": 7, "release": "0.3.0", "slot": "b", "reason": "crashed: E"}}
    fsutil.write_json(tmp + "/ota/boot.json", p)
    ota.rolled_back(box, p)
    r = _rep(box)
    assert r["status"] == "rejected" and r["version"] == 6
    assert r["rejected"]["version"] == 7 and r["rejected"]["field"] == "release"
    assert "rolled back to slot a: crashed: E" == r["rejected"]["reason"]
    q = fsutil.read_json(tmp + "/ota/boot.json")
    assert "rolled_back" not in q and q["last_rollback"]["version"] == 7
    # the retained document of the release that was rolled back changes nothing
    assert ota.handle(box, json.dumps(signed(dict(GOOD, version=7)))) == "replay"
