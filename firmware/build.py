"""Build a box's firmware parts: the agent and board glue compiled to .mpy, a
littlefs v2 image that fits the vfs partition, per-box overlay files, a manifest
with the SHA-256 of every part, and, given the pinned MicroPython base .bin, one
merged image to flash at 0x1000 (esptool's merge_bin).

The same inputs always give byte-identical outputs: files go into the image in
sorted order, littlefs stores no timestamps, and the manifest has no dates.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from firmware import partitions as pt
from firmware import toolchain

AGENT_DIR = toolchain.AGENT_DIR
BOARD_DIR = Path(__file__).resolve().parent
BOARD_FILES = ("boot.py", "main.py", "otaboot.py")
LOCK_PATH = BOARD_DIR / "base-firmware.lock.json"
UNKNOWN_SHA = "unknown-until-downloaded"
MANIFEST_FORMAT = 1


class FirmwareError(Exception):
    """Base class: a firmware build that cannot go on. The message says what to do."""


class MpyCrossMismatch(FirmwareError):
    """mpy-cross (or the interpreter) does not match the pinned MicroPython release."""


class ImageSizeError(FirmwareError):
    """A filesystem image that does not fit, or does not match, the vfs partition."""


class BaseFirmwareError(FirmwareError):
    """A base .bin that is not the pinned release, or a lock that cannot check it."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_lock(path: Path | None = None) -> dict:
    path = Path(path or LOCK_PATH)
    try:
        lock = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BaseFirmwareError(f"cannot read the base firmware lock {path}: {e}") from None
    for key in ("micropython", "mpy_version", "sha256", "url"):
        if key not in lock:
            raise BaseFirmwareError(f"lock {path} lacks {key!r}")
    return lock


# --- mpy-cross ---------------------------------------------------------------

def mpy_cross_exe() -> str:
    try:
        return toolchain.mpy_cross_exe()
    except toolchain.BoxRunError as e:
        raise FirmwareError(str(e)) from None


_VERSION_RE = re.compile(r"MicroPython v(\d+\.\d+\.\d+)\S*.*emitting mpy v(\d+)\.(\d+)")


def mpy_cross_version(exe: str | None = None) -> tuple[str, str]:
    """(MicroPython release, mpy version) of an mpy-cross, e.g. ("1.29.0", "6.3")."""
    exe = exe or mpy_cross_exe()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    m = _VERSION_RE.search(out)
    if not m:
        raise MpyCrossMismatch(f"cannot read the version of {exe}: {out.strip()!r}")
    return m.group(1), f"{m.group(2)}.{m.group(3)}"


def check_mpy_cross(lock: dict, exe: str | None = None) -> tuple[str, str]:
    release, mpy = mpy_cross_version(exe)
    if release != lock["micropython"] or mpy != lock["mpy_version"]:
        raise MpyCrossMismatch(
            f"mpy-cross is MicroPython {release} (mpy v{mpy}) but the base firmware lock pins "
            f"{lock['micropython']} (mpy v{lock['mpy_version']}): .mpy files would not load on the box. "
            "Install the matching mpy-cross (requirements/*.lock) or update the lock.")
    return release, mpy


def interpreter_mpy_version(micropython: str) -> str:
    """The mpy version a MicroPython interpreter loads (sys.implementation._mpy)."""
    code = "import sys; v = sys.implementation._mpy; print('%d.%d' % (v & 0xff, (v >> 8) & 3))"
    r = subprocess.run([micropython, "-c", code], capture_output=True, text=True, timeout=30)
    if r.returncode:
        raise MpyCrossMismatch(f"cannot ask {micropython} for its mpy version: {r.stderr.strip()}")
    return r.stdout.strip()


_COMPILED: dict[str, list[tuple[str, bytes]]] = {}


def compile_tree(dest: Path, exe: str | None = None, opt: int = 3,
                 agent_dir: Path | None = None, arch: str = "xtensawin") -> list[tuple[str, bytes]]:
    """Compile agent/**/*.py to .mpy; returns (path on the box, bytes), sorted.
    Data files (*.json) under agent/ go in as they are. `arch` is the ESP32's
    native-code architecture: only modules with @micropython.native/viper code
    carry it; plain bytecode .mpy files stay portable (they also load on the
    unix port of a virtual box)."""
    exe = exe or mpy_cross_exe()
    agent = Path(agent_dir or AGENT_DIR)
    top = agent.parent
    out: list[tuple[str, bytes]] = []
    # agent/manifest.py is the freezing manifest (a build input), not a module
    srcs = sorted(p for p in agent.rglob("*.py")
                  if "__pycache__" not in p.parts and p.relative_to(agent).as_posix() != "manifest.py")
    key = hashlib.sha256(f"{exe}|{opt}|{arch}".encode())
    for src in srcs + sorted(agent.rglob("*.json")):
        key.update(src.relative_to(top).as_posix().encode() + b"\0" + src.read_bytes())
    if key.hexdigest() in _COMPILED:          # same sources, same compiler: same bytes
        return list(_COMPILED[key.hexdigest()])
    for src in srcs:
        rel = src.relative_to(top).as_posix()
        try:
            data = toolchain.mpy_compile(exe, src, rel, dest / Path(rel).with_suffix(".mpy"), opt, arch)
        except toolchain.BoxRunError as e:
            raise FirmwareError(str(e)) from None
        out.append((Path(rel).with_suffix(".mpy").as_posix(), data))
    for data in sorted(agent.rglob("*.json")):
        out.append((data.relative_to(top).as_posix(), data.read_bytes()))
    out.sort()
    _COMPILED[key.hexdigest()] = list(out)
    return out


# --- littlefs ----------------------------------------------------------------

def _new_fs(block_count: int):
    from littlefs import LittleFS
    return LittleFS(block_size=pt.LFS_BLOCK_SIZE, block_count=block_count,
                    read_size=pt.LFS_READ_SIZE, prog_size=pt.LFS_PROG_SIZE,
                    lookahead_size=pt.LFS_LOOKAHEAD)


def make_fs_image(files: list[tuple[str, bytes]], size: int) -> bytes:
    """A littlefs v2 image of exactly `size` bytes holding `files` (path, bytes)."""
    from littlefs import LittleFSError
    if size % pt.LFS_BLOCK_SIZE:
        raise ImageSizeError(f"vfs size {size:#x} is not a multiple of {pt.LFS_BLOCK_SIZE}")
    fs = _new_fs(size // pt.LFS_BLOCK_SIZE)
    try:
        for path, data in sorted(files):
            parent = path.rsplit("/", 1)[0] if "/" in path else ""
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(path, "wb") as f:
                f.write(data)
    except LittleFSError as e:
        total = sum(len(d) for _, d in files)
        raise ImageSizeError(f"the files ({total} bytes) do not fit a {size // 1024} KiB vfs: {e}") from None
    image = bytes(fs.context.buffer)
    assert len(image) == size
    return image


def superblock_geometry(image: bytes) -> tuple[int, int] | None:
    """(block_size, block_count) recorded in a littlefs v2 superblock, or None.
    The superblock lives in the metadata pair of blocks 0 and 1: the block with
    the newer revision count holds the newest entry, an inline struct after
    the "littlefs" name tag: version, block_size, block_count (little-endian)."""
    import struct
    best = None
    for blk in (0, 1):
        for size in (pt.LFS_BLOCK_SIZE,):
            data = image[blk * size:(blk + 1) * size]
            if len(data) < 4 or data[:4] == b"\xff\xff\xff\xff":
                continue
            rev = struct.unpack_from("<I", data)[0]
            at = data.rfind(b"littlefs")
            if at < 0 or at + 8 + 4 + 12 > len(data):
                continue
            _ver, bsize, bcount = struct.unpack_from("<III", data, at + 8 + 4)
            if best is None or (rev - best[0]) & 0x80000000 == 0:
                best = (rev, bsize, bcount)
    return (best[1], best[2]) if best else None


def check_fs_image(image: bytes, flash_size: str | int) -> int:
    """Refuse an image that would not mount in this flash's vfs. Returns the
    vfs offset. Checks the length and the superblock's block count."""
    from littlefs import LittleFSError, UserContext
    size = pt.parse_flash_size(flash_size)
    offset, vfs_size = pt.vfs_for(size)
    if len(image) != vfs_size:
        raise ImageSizeError(
            f"filesystem image is {len(image)} bytes ({len(image) // pt.LFS_BLOCK_SIZE} blocks) but the "
            f"vfs partition of a {pt.size_name(size)} flash is {vfs_size} bytes "
            f"({vfs_size // pt.LFS_BLOCK_SIZE} blocks) at {offset:#x}: littlefs would not mount it "
            f"and MicroPython would loop on 'filesystem corrupted'. Rebuild it with --flash-size {pt.size_name(size)}.")
    from littlefs import LittleFS
    ctx = UserContext(len(image))
    ctx.buffer[:] = image
    blocks = vfs_size // pt.LFS_BLOCK_SIZE
    why = "no littlefs superblock in the image"
    try:
        # mount=False: by default littlefs-python formats (in memory) what it
        # cannot mount, and the check would pass on garbage.
        fs = LittleFS(context=ctx, mount=False, block_size=pt.LFS_BLOCK_SIZE, block_count=blocks,
                      read_size=pt.LFS_READ_SIZE, prog_size=pt.LFS_PROG_SIZE, lookahead_size=pt.LFS_LOOKAHEAD)
        fs.mount()
        fs.listdir("/")
        found = superblock_geometry(image)
    except LittleFSError as e:
        found, why = None, str(e)
    if found != (pt.LFS_BLOCK_SIZE, blocks):
        detail = f"its superblock says {found[1]} blocks of {found[0]} bytes" if found else why
        raise ImageSizeError(
            f"filesystem image does not mount as littlefs v2 with {blocks} blocks of {pt.LFS_BLOCK_SIZE} "
            f"bytes ({detail}): MicroPython would refuse it. Rebuild it for this flash size.")
    return offset


def read_overlay(overlay: Path | dict | None) -> list[tuple[str, bytes]]:
    if overlay is None:
        return []
    if isinstance(overlay, dict):
        items = [(str(k).lstrip("/"), v.encode() if isinstance(v, str) else bytes(v)) for k, v in overlay.items()]
    else:
        root = Path(overlay)
        if not root.is_dir():
            raise FirmwareError(f"overlay {root} is not a directory")
        items = [(p.relative_to(root).as_posix(), p.read_bytes())
                 for p in sorted(root.rglob("*")) if p.is_file()]
    for path, _ in items:
        if ".." in path.split("/") or not path:
            raise FirmwareError(f"overlay path {path!r} is not inside the filesystem")
    return sorted(items)


# --- base firmware -----------------------------------------------------------

def check_base_bin(data: bytes, lock: dict, flash_size: int) -> list[pt.Partition]:
    """Check a MicroPython base .bin against the lock; returns its partition table."""
    want = lock["sha256"]
    got = sha256(data)
    if want == UNKNOWN_SHA:
        raise BaseFirmwareError(
            f"the lock does not record the SHA-256 of {lock.get('file', 'the base firmware')} yet, so this "
            f".bin (sha256 {got}) cannot be checked. Verify it came from {lock['url']}, then record it in "
            f"{LOCK_PATH.name}.")
    if got != want:
        raise BaseFirmwareError(
            f"base firmware sha256 {got} does not match the lock ({want}, MicroPython {lock['micropython']} "
            f"from {lock['url']}): wrong or corrupted download.")
    off = lock.get("offset", pt.BOOTLOADER_OFFSET)
    rel = pt.PARTITION_TABLE_OFFSET - off
    try:
        table = pt.parse_table(data[rel:rel + pt.PARTITION_TABLE_SIZE])
    except pt.PartitionError as e:
        raise BaseFirmwareError(f"base firmware has no readable partition table at {pt.PARTITION_TABLE_OFFSET:#x}: {e}") from None
    vfs_off, _ = pt.vfs_region(table, flash_size)
    if off + len(data) > vfs_off:
        raise BaseFirmwareError(f"base firmware ends at {off + len(data):#x}, past the vfs start {vfs_off:#x}")
    return table


def is_secret(path: str) -> bool:
    """A file whose content stays out of manifests and records (secrets.json, keys)."""
    name = path.rsplit("/", 1)[-1]
    # secrets.json and its temporaries; not agent/secretstore.mpy, which is code
    return name.split(".", 1)[0] == "secrets" or name.endswith((".key", ".pem"))


# --- the build ---------------------------------------------------------------

def image_files(lock: dict, overlay: Path | dict | None = None, mpy_cross: str | None = None,
                agent_dir: Path | str | None = None) -> tuple[list[tuple[str, bytes]], str, str]:
    """The files of a box's filesystem, in memory and sorted: the board glue,
    the compiled agent, then the overlay on top. Returns (files, MicroPython
    release, mpy version). With make_fs_image() this builds an image without
    writing anything to disk (the bench keeps per-box secrets off the disk)."""
    release, mpy = check_mpy_cross(lock, mpy_cross)
    with tempfile.TemporaryDirectory() as tmp:
        files = compile_tree(Path(tmp), mpy_cross, agent_dir=Path(agent_dir) if agent_dir else None,
                             arch=lock.get("mpy_arch", "xtensawin"))
    board = [(name, (BOARD_DIR / name).read_bytes()) for name in BOARD_FILES]
    merged: dict[str, bytes] = dict(board + files)
    merged.update(dict(read_overlay(overlay)))
    return sorted(merged.items()), release, mpy


@dataclass
class BuildResult:
    out_dir: Path
    manifest: dict
    parts: dict = field(default_factory=dict)   # name -> Path

    def flash_args(self) -> list[tuple[int, Path]]:
        """(offset, file) pairs to hand to esptool write_flash."""
        return [(p["offset"], self.out_dir / p["file"]) for p in self.manifest["flash"]]


def build(out_dir: Path | str, flash_size: str | int = "4MB", overlay: Path | dict | None = None,
          base_bin: Path | str | None = None, fs_image: Path | str | None = None,
          lock_path: Path | str | None = None, mpy_cross: str | None = None,
          agent_dir: Path | str | None = None) -> BuildResult:
    """Build the parts into out_dir and write manifest.json. See the module docstring."""
    out = Path(out_dir)
    size = pt.parse_flash_size(flash_size)
    lock = load_lock(Path(lock_path) if lock_path else None)
    table = pt.micropython_table(size)
    base = Path(base_bin).read_bytes() if base_bin else None
    if base is not None:
        table = check_base_bin(base, lock, size)
    vfs_off, vfs_size = pt.vfs_region(table, size)

    if fs_image is not None:
        image = Path(fs_image).read_bytes()
        check_fs_image(image, size)
        files: list[tuple[str, bytes]] = []
        release, mpy = lock["micropython"], lock["mpy_version"]
    else:
        files, release, mpy = image_files(lock, overlay, mpy_cross, agent_dir)
        image = make_fs_image(files, vfs_size)

    out.mkdir(parents=True, exist_ok=True)
    parts: dict[str, Path] = {}
    manifest_parts = []

    def emit(name: str, fname: str, data: bytes, offset: int | None) -> None:
        (out / fname).write_bytes(data)
        parts[name] = out / fname
        entry = {"name": name, "file": fname, "size": len(data), "sha256": sha256(data)}
        if offset is not None:
            entry["offset"] = offset
        manifest_parts.append(entry)

    emit("vfs", "vfs.bin", image, vfs_off)
    emit("partition-table", "partition-table.bin", pt.encode_table(table), pt.PARTITION_TABLE_OFFSET)
    flash = [{"name": "vfs", "file": "vfs.bin", "offset": vfs_off}]
    if base is not None:
        from esptool.cmds import merge_bin
        base_off = lock.get("offset", pt.BOOTLOADER_OFFSET)
        merged_img = merge_bin([(base_off, base), (vfs_off, image)], chip=lock.get("chip", "esp32"),
                               target_offset=base_off)
        assert merged_img is not None
        emit("base", "base.bin", base, base_off)
        emit("merged", "merged.bin", merged_img, base_off)
        flash = [{"name": "merged", "file": "merged.bin", "offset": base_off}]

    manifest = {
        "format": MANIFEST_FORMAT,
        "flash_size": pt.size_name(size),
        "micropython": {"release": release, "mpy_version": mpy, "board": lock.get("board"),
                        "mpy_arch": lock.get("mpy_arch", "xtensawin"),
                        "base_sha256": lock["sha256"], "base_url": lock["url"],
                        "base_included": base is not None},
        "littlefs": {"block_size": pt.LFS_BLOCK_SIZE, "block_count": vfs_size // pt.LFS_BLOCK_SIZE,
                     "read_size": pt.LFS_READ_SIZE, "prog_size": pt.LFS_PROG_SIZE,
                     "lookahead_size": pt.LFS_LOOKAHEAD, "offset": vfs_off, "size": vfs_size},
        "partitions": [p.as_dict() for p in table],
        "parts": manifest_parts,
        # Secrets stay out of the manifest, even hashed: it travels with records.
        "files": [{"path": p, "size": len(d), "secret": True} if is_secret(p)
                  else {"path": p, "size": len(d), "sha256": sha256(d)} for p, d in files],
        "flash": [dict(f, sha256=next(m["sha256"] for m in manifest_parts if m["name"] == f["name"]))
                  for f in flash],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return BuildResult(out, manifest, parts)
