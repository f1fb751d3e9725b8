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
from agent import fsutil

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
        self._peeked = None       # (seg, off_after, line)
        self._segs = []
        self._max_boot = 0
        self._load()

    # ---- paths ------------------------------------------------------------
    def _seg_path(self, n):
        return "%s/%08d.seg" % (self.path, n)

    def _head_path(self):
        return self.path + "/head"

    # ---- boot-time scan ---------------------------------------------------
    def _load(self):
        segs = []
        for name in fsutil.listdir(self.path):
            if name.endswith(".seg") and len(name) == 12:
                try:
                    segs.append(int(name[:8]))
                except ValueError:
                    pass
            elif name.endswith(".tmp"):
                fsutil.remove(self.path + "/" + name)
        segs.sort()
        head = fsutil.read_json(self._head_path(), None) or {}
        self.dropped_total = head.get("dropped", 0)
        hseg, hoff = head.get("seg", 0), head.get("off", 0)
        # Segments wholly before the head were fully acked: remove leftovers.
        while segs and segs[0] < hseg:
            fsutil.remove(self._seg_path(segs.pop(0)))
        if not segs or segs[0] > hseg:
            hseg, hoff = (segs[0] if segs else hseg), 0
        self.head = [hseg, hoff]
        self._segs = segs
        for n in segs:
            self._scan(n, hoff if n == hseg else 0)

    def _scan(self, n, start):
        # Count the records and repair a torn tail left by a power cut.
        p = self._seg_path(n)
        torn = False
        with open(p, "rb") as f:
            if start:
                f.seek(start)
            good = start
            while True:
                line = f.readline()
                if not line:
                    break
                if line[-1:] != b"\n" or line.count(b"|") < 4:
                    torn = True
                    break
                self.count += 1
                self.bytes += len(line)
                good += len(line)
                b = self._boot_of(line)
                if b > self._max_boot:
                    self._max_boot = b
        if torn:
            self._truncate(n, good)

    def _truncate(self, n, keep):
        p = self._seg_path(n)
        with open(p, "rb") as f:
            data = f.read(keep)
        fsutil.atomic_write(p, data)

    @staticmethod
    def _boot_of(line):
        try:
            return int(line.split(b"|", 2)[1])
        except (ValueError, IndexError):
            return 0

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
            self._make_room()

    def _make_room(self):
        while self.bytes > self.max_bytes and self.count > 0:
            if len(self._segs) == 1:
                self._segs.append(self._segs[0] + 1)   # never rewrite the live segment
            # Oldest low-priority records first, in any sealed segment; only
            # when none is left does the oldest high-priority record go.
            for i in range(len(self._segs) - 1):
                if self._drop_from(i, PRIO_LOW):
                    break
            else:
                self._drop_from(0, PRIO_HIGH)

    def _drop_from(self, i, prio):
        # Rewrite segment i without its records of priority <= prio.
        n = self._segs[i]
        p = self._seg_path(n)
        start = self.head[1] if i == 0 else 0
        kept = []
        dropped = 0
        freed = 0
        try:
            f = open(p, "rb")
        except OSError:
            return False
        with f:
            f.seek(start)
            while True:
                line = f.readline()
                if not line:
                    break
                if line[0] - 48 <= prio:
                    dropped += 1
                    freed += len(line)
                    self._note_drop(line)
                    if prio == PRIO_HIGH:
                        kept.append(f.read())   # one high-priority record at a time
                        break
                else:
                    kept.append(line)
        if not dropped:
            return False
        self._peeked = None
        if i == 0:
            # Head first, then the data: a cut in between re-sends acked records
            # (duplicates, removed by the backend) but never skips unacked ones.
            self._write_head(n, 0)
        data = b"".join(kept)
        if data or n == self._segs[-1]:
            fsutil.atomic_write(p, data)
        else:
            self._segs.pop(i)
            if i == 0:
                self._write_head(self._segs[0], 0)
            fsutil.remove(p)
        self.count -= dropped
        self.bytes -= freed
        self.dropped += dropped
        self.dropped_total += dropped
        self._write_head(self.head[0], self.head[1])
        return True

    def _note_drop(self, line):
        parts = line.split(b"|", 3)
        boot, seq = int(parts[1]), int(parts[2])
        if self.pending_drop is None:
            self.pending_drop = [0, []]
        pd = self.pending_drop
        pd[0] += 1
        ranges = pd[1]
        if ranges and ranges[-1][0] == boot and ranges[-1][2] + 1 == seq:
            ranges[-1][2] = seq
        elif len(ranges) < 16:
            ranges.append([boot, seq, seq])

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
