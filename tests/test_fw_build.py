"""homebox fw build: compiled agent on a littlefs v2 image sized to the vfs
partition, overlay, manifest, byte-identical rebuilds, base firmware checks and
merged image, refusal of wrong-size images."""
import hashlib
import json
import subprocess
import sys

import pytest

from firmware import build as fb
from firmware import partitions as pt
from tests.helpers import ROOT, micropython_path
from vbox import standin

OVERLAY = {"config.json": json.dumps({"box_id": "fw-test", "broker_host": "127.0.0.1", "state_dir": "/state"}),
           "secrets.json": json.dumps({"mqtt_user": "u", "mqtt_password": "not-in-the-manifest"})}


def _mount(image: bytes):
    from littlefs import LittleFS, UserContext
    ctx = UserContext(len(image))
    ctx.buffer[:] = image
    return LittleFS(context=ctx, block_size=4096, block_count=len(image) // 4096,
                    read_size=32, prog_size=32, lookahead_size=32)


def _base_and_lock(tmp_path, flash_size="4MB"):
    base = standin.make_base(flash_size)
    (tmp_path / "base.bin").write_bytes(base)
    lock = fb.load_lock()
    lock["sha256"] = hashlib.sha256(base).hexdigest()
    (tmp_path / "lock.json").write_text(json.dumps(lock))
    return tmp_path / "base.bin", tmp_path / "lock.json"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("fw")
    return fb.build(out / "a", "4MB", overlay=OVERLAY)


def test_image_mounts_with_micropython_geometry_and_holds_the_agent(built):
    image = (built.out_dir / "vfs.bin").read_bytes()
    off, size = pt.vfs_for("4MB")
    assert (off, size) == (0x200000, 0x200000) and len(image) == size
    fs = _mount(image)
    names = set(fs.listdir("/"))
    assert {"boot.py", "main.py", "agent", "config.json", "secrets.json"} <= names
    assert "runtime.mpy" in fs.listdir("/agent") and "runtime.py" not in fs.listdir("/agent")
    with fs.open("agent/runtime.mpy", "rb") as f:
        head = f.read(4)
    assert head[0:1] == b"M" and head[1] == 6 and head[2] == 0   # mpy v6, portable bytecode
    with fs.open("main.py", "r") as f:
        assert "boot.board()" in f.read()
    lfs = built.manifest["littlefs"]
    assert (lfs["block_size"], lfs["read_size"], lfs["prog_size"], lfs["lookahead_size"]) == (4096, 32, 32, 32)


def test_manifest_has_sha256_of_every_part_and_no_secret_hashes(built):
    m = built.manifest
    for part in m["parts"]:
        assert hashlib.sha256((built.out_dir / part["file"]).read_bytes()).hexdigest() == part["sha256"]
    assert {p["name"] for p in m["parts"]} == {"vfs", "partition-table"}
    files = {f["path"]: f for f in m["files"]}
    assert files["secrets.json"].get("secret") is True and "sha256" not in files["secrets.json"]
    assert "not-in-the-manifest" not in (built.out_dir / "manifest.json").read_text()
    assert m["micropython"]["release"] == fb.load_lock()["micropython"]
    assert m["flash"] == [{"name": "vfs", "file": "vfs.bin", "offset": 0x200000,
                           "sha256": next(p["sha256"] for p in m["parts"] if p["name"] == "vfs")}]


def test_same_inputs_give_byte_identical_outputs(built, tmp_path):
    again = fb.build(tmp_path / "b", "4MB", overlay=OVERLAY)
    for name in ("vfs.bin", "partition-table.bin", "manifest.json"):
        assert (again.out_dir / name).read_bytes() == (built.out_dir / name).read_bytes(), name
    other = fb.build(tmp_path / "c", "4MB", overlay=dict(OVERLAY, **{"config.json": '{"box_id": "other"}'}))
    assert (other.out_dir / "vfs.bin").read_bytes() != (built.out_dir / "vfs.bin").read_bytes()


@pytest.mark.parametrize("size,offset,length", [("2MB", 0x170000, 0x90000), ("8MB", 0x200000, 0x600000),
                                                ("16MB", 0x200000, 0xE00000)])
def test_image_fits_the_vfs_of_each_flash_size(tmp_path, size, offset, length):
    r = fb.build(tmp_path, size, overlay=OVERLAY)
    image = (tmp_path / "vfs.bin").read_bytes()
    total = pt.parse_flash_size(size)
    assert r.manifest["littlefs"]["offset"] == offset and len(image) == length
    assert "main.py" in _mount(image).listdir("/")
    table = pt.parse_table((tmp_path / "partition-table.bin").read_bytes())
    assert pt.vfs_region(table, total) == (offset, len(image))


def test_partition_table_round_trips_and_rejects_corruption():
    table = pt.micropython_table(4 * pt.MB)
    raw = pt.encode_table(table)
    assert len(raw) == 0xC00 and pt.parse_table(raw) == table
    bad = bytearray(raw)
    bad[40] ^= 1
    with pytest.raises(pt.PartitionError, match="MD5"):
        pt.parse_table(bytes(bad))
    with pytest.raises(pt.PartitionError):
        pt.parse_table(b"\xff" * 0xC00)


def test_wrong_size_fs_image_is_refused(tmp_path):
    small = fb.make_fs_image([("boot.py", b"# hi\n")], 0x90000)       # a 2MB-flash vfs
    (tmp_path / "small.bin").write_bytes(small)
    with pytest.raises(fb.ImageSizeError, match="vfs partition of a 4MB flash is 2097152 bytes"):
        fb.build(tmp_path / "out", "4MB", fs_image=tmp_path / "small.bin")
    # right length, but a superblock made for another block count
    padded = small + b"\xff" * (0x200000 - len(small))
    (tmp_path / "padded.bin").write_bytes(padded)
    with pytest.raises(fb.ImageSizeError, match="does not mount"):
        fb.check_fs_image(padded, "4MB")
    r = subprocess.run([sys.executable, "-m", "homebox.cli", "fw", "build", "--fs-image", str(tmp_path / "small.bin"),
                        "--out", str(tmp_path / "cli")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "FAILED" in r.stderr and "littlefs would not mount it" in r.stderr
    # and the right one is accepted as it is
    good = fb.make_fs_image([("boot.py", b"# hi\n")], 0x200000)
    (tmp_path / "good.bin").write_bytes(good)
    assert (fb.build(tmp_path / "ok", "4MB", fs_image=tmp_path / "good.bin").out_dir / "vfs.bin").read_bytes() == good


def test_mpy_cross_version_is_checked_against_the_lock(tmp_path):
    lock = fb.load_lock()
    release, mpy = fb.mpy_cross_version()
    assert (release, mpy) == (lock["micropython"], lock["mpy_version"])
    exe = micropython_path()
    assert exe and fb.interpreter_mpy_version(exe) == lock["mpy_version"]
    (tmp_path / "old.json").write_text(json.dumps(dict(lock, micropython="1.22.0", mpy_version="6.2")))
    with pytest.raises(fb.MpyCrossMismatch, match="pins 1.22.0"):
        fb.build(tmp_path / "out", "4MB", lock_path=tmp_path / "old.json")


def test_base_firmware_is_checked_and_merged(tmp_path):
    base, lock = _base_and_lock(tmp_path)
    r = fb.build(tmp_path / "out", "4MB", overlay=OVERLAY, base_bin=base, lock_path=lock)
    merged = (tmp_path / "out" / "merged.bin").read_bytes()
    vfs = (tmp_path / "out" / "vfs.bin").read_bytes()
    assert len(merged) == 4 * pt.MB - 0x1000
    assert merged[:len(base.read_bytes())] == base.read_bytes()
    assert merged[0x200000 - 0x1000:] == vfs
    assert r.manifest["flash"][0]["offset"] == 0x1000 and r.manifest["micropython"]["base_included"]
    # a .bin that is not the pinned one
    (tmp_path / "other.bin").write_bytes(base.read_bytes()[:-1] + b"\x00")
    with pytest.raises(fb.BaseFirmwareError, match="does not match the lock"):
        fb.build(tmp_path / "o2", "4MB", base_bin=tmp_path / "other.bin", lock_path=lock)
    # the shipped lock has no hash yet: it refuses rather than trusting the file
    if fb.load_lock()["sha256"] == fb.UNKNOWN_SHA:
        with pytest.raises(fb.BaseFirmwareError, match="does not record the SHA-256"):
            fb.build(tmp_path / "o3", "4MB", base_bin=base)


def test_cli_build_with_overlay_dir_json(tmp_path):
    ov = tmp_path / "overlay"
    ov.mkdir()
    (ov / "config.json").write_text(OVERLAY["config.json"])
    r = subprocess.run([sys.executable, "-m", "homebox.cli", "fw", "build", "--overlay", str(ov), "--out",
                        str(tmp_path / "out"), "--json"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert any(f["path"] == "config.json" for f in m["files"])
    assert m == json.loads((tmp_path / "out" / "manifest.json").read_text())


def test_only_secret_files_are_kept_out_of_manifests():
    from firmware.build import is_secret
    assert is_secret("/secrets.json") and is_secret("/secrets.json.tmp") and is_secret("/ca/box.key")
    # code named like a secret is code: its hash belongs in the manifest (OTA checks it)
    assert not is_secret("/agent/secretstore.mpy") and not is_secret("/agent/keys.mpy")
