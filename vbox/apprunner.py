# Runs under the real MicroPython unix port, as the "CPU" of a virtual box in app
# mode. It does what MicroPython's esp32 port does at boot: mount the vfs
# partition (littlefs v2, 4096-byte blocks, read/prog 32, lookahead 32) from the
# box's flash through a block device, run boot.py then main.py from it.
# A blank vfs gets a fresh filesystem; one that does not mount loops on the
# "filesystem corrupted" message, as a real box does.
#   micropython apprunner.py FLASH_FILE VFS_OFFSET VFS_SIZE SCENARIO_JSON|- BANNER MAC BASE ALLOWANCE
# A board does all this in C: the Python here leaves the heap once main.py starts,
# but for the block device (vbox/app_flashdev.py), so the agent measured on a
# virtual box has the heap a board gives it.
import gc
import sys

import app_mount

mount_bytes = app_mount.start(sys.argv)
del app_mount
del sys.modules["app_mount"]
import vboxenv  # noqa: E402

# The emulated board's modules (network, machine, time, select, esp32) come
# before the built-ins: the unix port's machine and time are "extensible", so a
# file module of that name shadows them (and imports them as umachine, utime).
sys.path[:] = ["", "/board", ".frozen", "/lib"] if vboxenv.board else ["", ".frozen", "/lib"]
if vboxenv.board:
    # A board has these in C (in flash): loaded here, before the measurement, they
    # count as emulation (vbox/device.py BOARD_ALLOWANCE), not as the agent's heap.
    import select  # noqa: E402,F401
    import time  # noqa: E402,F401

    import _board  # noqa: E402,F401
    import esp32  # noqa: E402,F401
    import machine  # noqa: E402,F401
    import network  # noqa: E402,F401
    del _board, esp32, machine, network, select, time
del vboxenv
gc.collect()
# The interpreter has ALLOWANCE more heap than the box is given (vbox/device.py):
# whatever this emulation holds beyond what a board's C boot holds (the interpreter's
# own start, argv[7], and the mounted filesystem) is taken from it, and a ballast
# takes the rest, so main.py starts with the heap a board would leave it.
emulation = gc.mem_alloc() - mount_bytes - int(sys.argv[7])
ballast = int(sys.argv[8]) - emulation
print("vbox:heap emulation=%d mount=%d ballast=%d" % (emulation, mount_bytes, ballast))
ballast = bytearray(ballast) if ballast > 0 else None
del mount_bytes, emulation
for name in ("boot.py", "main.py"):
    try:
        f = open(name)
    except OSError:
        continue
    try:
        # The board's pyexec keeps no source text while the script runs: neither do we.
        code = compile(f.read(), name, "exec")
        f.close()
        gc.collect()
        exec(code, {"__name__": "__main__", "__file__": name})
        del code
    except SystemExit:
        raise
    except BaseException as e:
        sys.print_exception(e)          # and on to main.py, as a board does
print(sys.argv[5])
print('Type "help()" for more information.')
sys.stdout.write(">>> ")
