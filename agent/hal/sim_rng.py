# The sim's own PRNG (xorshift32): the same numbers on CPython and MicroPython,
# whose `random` modules differ. Used by the simulated Wi-Fi and Linky; the core
# SimHal does not need it, so it stays out of the resident heap.


class XorShift:
    def __init__(self, seed):
        self.s = (seed & 0xFFFFFFFF) or 0x9E3779B9

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def random(self):
        return self.next() / 4294967296.0

    def randint(self, a, b):
        return a + self.next() % (b - a + 1)
