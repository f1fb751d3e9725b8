# select for the emulated ESP32 board: the port's own (uselect), with poll
# timeouts in box time (vbox/board/_board.py), so that the event loop's waits
# run at the board's speedup.
import _board
import uselect
from uselect import *  # noqa: F401,F403


class poll:
    def __init__(self):
        p = self.p = uselect.poll()
        self.register = p.register
        self.unregister = p.unregister
        self.modify = p.modify

    def poll(self, timeout=-1):
        return self.p.poll(_board.real(timeout))

    def ipoll(self, timeout=-1, flags=0):
        return self.p.ipoll(_board.real(timeout), flags)
