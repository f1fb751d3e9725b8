# Runs under the real MicroPython unix port, as the "CPU" of a virtual box in app
# mode. It does what MicroPython's esp32 port does at boot: mount the vfs
# partition (littlefs v2, 4096-byte blocks, read/prog 32, lookahead 32) from the
# box's flash through a block device, run boot.py then main.py from it.
# A blank vfs gets a fresh filesystem; one that does not mount loops on the
# "filesystem corrupted" message, as a real box does.
#   micropython apprunner.py FLASH_FILE VFS_OFFSET VFS_SIZE SCENARIO_JSON|- BANNER [MAC]
import os
import sys

import vfs

SEC = 4096


class FlashBdev:
    def __init__(self, f, offset, size):
        self.f = f
        self.offset = offset
        self.blocks = size // SEC
        # One erased block, made once: an erase must not allocate 4 KiB from the
        # heap the agent shares (a real board erases in the flash driver).
        self.blank = b"\xff" * SEC

    def readblocks(self, block, buf, off=0):
        self.f.seek(self.offset + block * SEC + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=None):
        if off is None:
            # Whole-block write without a prior erase (littlefs always erases
            # first, through ioctl 6).
            self.ioctl(6, block)
            off = 0
        self.f.seek(self.offset + block * SEC + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return SEC
        if op == 6:  # erase
            self.f.seek(self.offset + arg * SEC)
            self.f.write(self.blank)
            return 0
        return 0


def fs_corrupted():
    import time
    while 1:
        print("The filesystem appears to be corrupted. If you had important data there, you\n"
              "may want to make a flash snapshot to try to recover it. Otherwise, perform\n"
              "factory reprogramming of MicroPython firmware (completely erase flash, followed\n"
              "by firmware programming).\n")
        time.sleep(3)


def mount(bdev):
    try:
        fs = vfs.VfsLfs2(bdev, readsize=32, progsize=32, lookahead=32)
    except OSError:
        buf = bytearray(SEC)
        bdev.readblocks(0, buf)
        for b in buf:
            if b != 0xFF:
                fs_corrupted()
        print("Performing initial setup")
        vfs.VfsLfs2.mkfs(bdev, readsize=32, progsize=32, lookahead=32)
        fs = vfs.VfsLfs2(bdev, readsize=32, progsize=32, lookahead=32)
        vfs.umount("/")
        vfs.mount(fs, "/")
        with open("/boot.py", "w") as f:
            f.write("# This file is executed on every boot (including wake-boot from deepsleep)\n")
        return
    vfs.umount("/")
    vfs.mount(fs, "/")


def run_file(name):
    try:
        os.stat(name)
    except OSError:
        return
    with open(name) as f:
        src = f.read()
    g = {"__name__": "__main__", "__file__": name}
    exec(compile(src, name, "exec"), g)


def main():
    path, off, size, scenario, banner = sys.argv[1:6]
    sc = None
    if scenario != "-":
        import json
        with open(scenario) as f:
            sc = json.load(f)

    class Env:
        pass

    Env.scenario = sc
    # The eFuse base MAC, as machine.unique_id() gives it on the chip.
    Env.mac = sys.argv[6] if len(sys.argv) > 6 else None
    sys.modules["vboxenv"] = Env
    flash = open(path, "r+b")
    mount(FlashBdev(flash, int(off), int(size)))
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    try:
        run_file("boot.py")
        run_file("main.py")
    except SystemExit:
        raise
    except BaseException as e:
        sys.print_exception(e)
    print(banner)
    print('Type "help()" for more information.')
    sys.stdout.write(">>> ")


main()
