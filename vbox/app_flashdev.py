# The virtual box's flash as MicroPython's block-device protocol sees it (what
# esp32.Partition is on a board). Runs under the MicroPython unix port, loaded by
# vbox/apprunner.py; it stays in RAM as long as the filesystem is mounted, so it
# holds nothing else.
SEC = 4096
BLANK = 256


class FlashBdev:
    def __init__(self, f, offset, size):
        self.f = f
        self.offset = offset
        self.blocks = size // SEC
        # A real board erases in its flash driver, outside the heap: the erase here
        # writes one small blank, made once, so it takes only 256 bytes of the heap
        # the agent shares.
        self.blank = b"\xff" * BLANK

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
            for _ in range(SEC // BLANK):
                self.f.write(self.blank)
            return 0
        return 0
