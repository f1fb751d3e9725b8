# Store-and-forward outbox on the box's filesystem.
#
# Records are lines in append-only segment files, oldest first:
#     <prio>|<boot>|<seq>|<topic suffix>|<payload json>\n
# The file `head` holds {"seg": n, "off": bytes}: everything before it has been
# PUBACKed. A record is removed only after its PUBACK, by moving the head.
# A power cut can leave a partial last line; it is cut off at the next boot (that
# record was never handed out, so its sequence number was never used).
# When the outbox is over its byte bound, the oldest segment loses its
# low-priority records, and the loss is reported in a high-priority event.
# The boot scan and the dropping are cold code (agent/outbox_cold.py): loaded
# when they run, then released.
from agent import fsutil
from agent.compat import forget

PRIO_LOW = 0
PRIO_HIGH = 1


class Outbox:
    def __init__(self, path, max_bytes=262144, seg_bytes=16384):
        self.path = path
        self.max_bytes = max_bytes
        self.seg_bytes = seg_bytes
        fsutil.makedirs(path)
        self.count = 0
        self.bytes = 0
        self.dropped = 0          # records dropped since boot
        self.dropped_total = 0    # persisted across boots
        self.pending_drop = None  # [count, [[boot, first, last], ...]] to report
        self._peeked = None       # (seg, off_after, (topic, payload), line length)
        self._segs = []
        self._max_boot = 0
        from agent import outbox_cold
        outbox_cold.load(self)
        forget("agent.outbox_cold")

    # ---- paths ------------------------------------------------------------
    def _seg_path(self, n):
        return "%s/%08d.seg" % (self.path, n)

    def _head_path(self):
        return self.path + "/head"

    def max_boot(self):
        # The highest boot number still stored: the boot counter must exceed it.
        return self._max_boot

    # ---- writing ------------------------------------------------------------
    def put(self, boot, seq, topic, payload, prio=PRIO_LOW):
        line = "%d|%d|%d|%s|%s\n" % (prio, boot, seq, topic, payload)
        if not self._segs or fsutil.size(self._seg_path(self._segs[-1])) >= self.seg_bytes:
            self._segs.append(self._segs[-1] + 1 if self._segs else self.head[0])
        with open(self._seg_path(self._segs[-1]), "a") as f:
            f.write(line)
        self.count += 1
        self.bytes += len(line)
        if self.bytes > self.max_bytes:
            from agent import outbox_cold
            try:
                outbox_cold.make_room(self)
            finally:
                forget("agent.outbox_cold")

    def take_drop_report(self):
        pd = self.pending_drop
        self.pending_drop = None
        return pd

    # ---- draining -------------------------------------------------------------
    def peek(self):
        """The oldest unacked record as (topic, payload bytes), or None."""
        if self._peeked is not None:
            return self._peeked[2]
        while self._segs:
            n = self._segs[0]
            with open(self._seg_path(n), "rb") as f:
                f.seek(self.head[1])
                line = f.readline()
            if line and line[-1:] == b"\n":
                parts = line[:-1].split(b"|", 4)
                rec = (parts[3].decode(), parts[4])
                self._peeked = (n, self.head[1] + len(line), rec, len(line))
                return rec
            if len(self._segs) == 1:
                return None
            # This segment is exhausted and a newer one exists.
            self._segs.pop(0)
            self._write_head(self._segs[0], 0)
            fsutil.remove(self._seg_path(n))
        return None

    def ack(self):
        """The peeked record got its PUBACK: move the head past it."""
        pk = self._peeked
        if pk is None:
            return
        self._peeked = None
        self._write_head(pk[0], pk[1])
        self.count -= 1
        self.bytes -= pk[3]

    def _write_head(self, seg, off):
        self.head = [seg, off]
        fsutil.write_json(self._head_path(), {"seg": seg, "off": off, "dropped": self.dropped_total})
