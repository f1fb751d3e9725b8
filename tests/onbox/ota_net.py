# Over-the-air releases over the network: the download into the inactive slot,
# resumed after cut connections and after a power cut, and refused when a file
# does not match its manifest. Needs the release server that
# tests/test_ota_download.py starts (HB_OTA_URL, HB_OTA_GOOD, HB_OTA_BAD), under
# CPython and MicroPython.
import asyncio
import os

from otabox import Box, release_files, sha

from agent import fsutil
from agent import ota_install as inst

URL = os.getenv("HB_OTA_URL")


def _doc(name, man, v=2):
    return {"version": v, "box": "b1", "release": name, "url": URL + "/" + name, "manifest": man,
            "confirm_s": 60}


def _run(box, doc):
    asyncio.run(inst.install(box, doc))


def _check_slot(tmp, slot, tag):
    for p, data in release_files(tag).items():
        with open("%s/ota/%s/%s" % (tmp, slot, p), "rb") as f:
            assert f.read() == data, p
        assert not fsutil.exists("%s/ota/%s/%s.part" % (tmp, slot, p))


def test_install_resumes_cut_downloads_and_switches(tmp):
    # the server cuts the manifest once and agent/hal/x.py twice (tests/test_ota_download.py)
    box = Box(tmp)
    fsutil.write_json(tmp + "/ota/boot.json", {"slot": "a", "state": "ok", "version": 1, "release": "0.1"})
    _run(box, _doc("good", os.getenv("HB_OTA_GOOD")))
    _check_slot(tmp, "b", "good")
    p = fsutil.read_json(tmp + "/ota/boot.json")
    assert p["slot"] == "b" and p["state"] == "trial" and p["tries"] == 0 and p["version"] == 2
    assert p["prev"] == "a" and p["prev_version"] == 1 and p["confirm_s"] == 60
    assert box.reboot == "good" and box.stop.is_set()


def test_a_part_file_left_by_a_power_cut_is_resumed_and_stale_files_go(tmp):
    box = Box(tmp)
    files = release_files("good")
    fsutil.makedirs(tmp + "/ota/a/agent/hal")
    with open(tmp + "/ota/a/agent/hal/x.py.part", "wb") as f:
        f.write(files["agent/hal/x.py"][:700])              # cut at 700 bytes
    with open(tmp + "/ota/a/agent/old.mpy", "wb") as f:
        f.write(b"an older release's module")
    with open(tmp + "/ota/a/agent/__init__.py", "wb") as f:
        f.write(files["agent/__init__.py"])                  # already there, and right
    _run(box, _doc("good", os.getenv("HB_OTA_GOOD")))
    _check_slot(tmp, "a", "good")
    assert not fsutil.exists(tmp + "/ota/a/agent/old.mpy")
    p = fsutil.read_json(tmp + "/ota/boot.json")
    assert p["slot"] == "a" and p["prev"] == "" and p["state"] == "trial"


def test_a_part_left_by_another_release_is_fetched_again(tmp):
    box = Box(tmp)
    fsutil.makedirs(tmp + "/ota/a/agent/hal")
    with open(tmp + "/ota/a/agent/hal/x.py.part", "wb") as f:
        f.write(b"Z = 3\n" * 100)                            # another release's bytes
    _run(box, _doc("good", os.getenv("HB_OTA_GOOD")))
    _check_slot(tmp, "a", "good")


def test_a_file_that_does_not_match_its_manifest_is_refused(tmp):
    box = Box(tmp)
    fsutil.write_json(tmp + "/ota/boot.json", {"slot": "a", "state": "ok", "version": 1})
    try:
        _run(box, _doc("bad", os.getenv("HB_OTA_BAD")))
        raise AssertionError("installed")
    except inst.Bad as e:
        assert e.field == "manifest" and "sha256" in e.reason, e
    assert fsutil.read_json(tmp + "/ota/boot.json")["slot"] == "a"
    assert box.reboot is None


def test_a_manifest_that_is_not_the_signed_one_is_refused(tmp):
    box = Box(tmp)
    try:
        _run(box, _doc("good", sha(b"another manifest")))
        raise AssertionError("installed")
    except inst.Bad as e:
        assert e.field == "manifest", e
    assert not fsutil.exists(tmp + "/ota/boot.json")


def test_a_missing_release_is_refused(tmp):
    box = Box(tmp)
    try:
        _run(box, _doc("none", os.getenv("HB_OTA_GOOD")))
        raise AssertionError("installed")
    except inst.Bad as e:
        assert e.field == "url" and "404" in e.reason, e
