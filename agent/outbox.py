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
from agent.compat import cold

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
        self.peeked = None        # (seg, off_after, record, length): handed out, not acked
        self.segs = []            # the segment numbers, oldest first
        self.top_boot = 0         # the highest boot number stored: the boot counter exceeds it
        self.head = None          # [seg, off]: everything before it was PUBACKed
        cold("agent.outbox_cold", "load", self)

    # ---- paths ------------------------------------------------------------
    def seg_path(self, n):
        return "%s/%08d.seg" % (self.path, n)

    def head_path(self):
        return self.path + "/head"

    # ---- writing ------------------------------------------------------------
    def put(self, boot, seq, topic, payload, prio=PRIO_LOW):
        # The payload is written as it is, not copied into one line first: a
        # report is the largest object a box builds, and two copies of it need
        # two holes of that size in a fragmented heap.
        head = "%d|%d|%d|%s|" % (prio, boot, seq, topic)
        if not self.segs or fsutil.size(self.seg_path(self.segs[-1])) >= self.seg_bytes:
            self.segs.append(self.segs[-1] + 1 if self.segs else self.head[0])
        with open(self.seg_path(self.segs[-1]), "a") as f:
            f.write(head)
            f.write(payload)
            f.write("\n")
        self.count += 1
        self.bytes += len(head) + len(payload) + 1
        if self.bytes > self.max_bytes:
            cold("agent.outbox_cold", "make_room", self)

    def take_drop_report(self):
        pd = self.pending_drop
        self.pending_drop = None
        return pd

    # ---- draining -------------------------------------------------------------
    def peek(self):
        """The oldest unacked record as (topic, payload bytes), or None."""
        if self.peeked is not None:
            return self.peeked[2]
        while self.segs:
            n = self.segs[0]
            with open(self.seg_path(n), "rb") as f:
                f.seek(self.head[1])
                line = f.readline()
            if line and line[-1:] == b"\n":
                # <prio>|<boot>|<seq>|<topic>|<payload>: one copy of the payload
                i = line.find(b"|", line.find(b"|", line.find(b"|") + 1) + 1) + 1
                j = line.find(b"|", i)
                rec = (line[i:j].decode(), line[j + 1:-1])
                self.peeked = (n, self.head[1] + len(line), rec, len(line))
                return rec
            if len(self.segs) == 1:
                return None
            # This segment is exhausted and a newer one exists.
            self.segs.pop(0)
            self.write_head(self.segs[0], 0)
            fsutil.remove(self.seg_path(n))
        return None

    def ack(self):
        """The peeked record got its PUBACK: move the head past it."""
        pk = self.peeked
        if pk is None:
            return
        self.peeked = None
        self.write_head(pk[0], pk[1])
        self.count -= 1
        self.bytes -= pk[3]

    def write_head(self, seg, off):
        self.head = [seg, off]
        fsutil.write_json(self.head_path(), {"seg": seg, "off": off, "dropped": self.dropped_total})
