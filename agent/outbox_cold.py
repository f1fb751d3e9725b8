# The outbox's cold code (agent/outbox.py): the boot-time scan, which counts the
# records and repairs a torn tail, and the dropping of records when the outbox
# is over its byte bound. Loaded when it runs, then released.
from agent import fsutil
from agent.outbox import PRIO_HIGH, PRIO_LOW


def load(ob):
    segs = []
    for name in fsutil.listdir(ob.path):
        if name.endswith(".seg") and len(name) == 12:
            try:
                segs.append(int(name[:8]))
            except ValueError:
                pass
        elif name.endswith(".tmp"):
            fsutil.remove(ob.path + "/" + name)
    segs.sort()
    head = fsutil.read_json(ob.head_path(), None) or {}
    ob.dropped_total = head.get("dropped", 0)
    hseg, hoff = head.get("seg", 0), head.get("off", 0)
    # Segments wholly before the head were fully acked: remove leftovers.
    while segs and segs[0] < hseg:
        fsutil.remove(ob.seg_path(segs.pop(0)))
    if not segs or segs[0] > hseg:
        hseg, hoff = (segs[0] if segs else hseg), 0
    ob.head = [hseg, hoff]
    ob.segs = segs
    for n in segs:
        scan(ob, n, hoff if n == hseg else 0)


def scan(ob, n, start):
    # Count the records and repair a torn tail left by a power cut.
    p = ob.seg_path(n)
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
            ob.count += 1
            ob.bytes += len(line)
            good += len(line)
            b = boot_of(line)
            if b > ob.top_boot:
                ob.top_boot = b
    if torn:
        truncate(ob, n, good)


def truncate(ob, n, keep):
    p = ob.seg_path(n)
    with open(p, "rb") as f:
        data = f.read(keep)
    fsutil.atomic_write(p, data)


def boot_of(line):
    try:
        return int(line.split(b"|", 2)[1])
    except (ValueError, IndexError):
        return 0


def make_room(ob):
    while ob.bytes > ob.max_bytes and ob.count > 0:
        if len(ob.segs) == 1:
            ob.segs.append(ob.segs[0] + 1)   # never rewrite the live segment
        # Oldest low-priority records first, in any sealed segment; only
        # when none is left does the oldest high-priority record go.
        for i in range(len(ob.segs) - 1):
            if drop_from(ob, i, PRIO_LOW):
                break
        else:
            drop_from(ob, 0, PRIO_HIGH)


def drop_from(ob, i, prio):
    # Rewrite segment i without its records of priority <= prio.
    n = ob.segs[i]
    p = ob.seg_path(n)
    start = ob.head[1] if i == 0 else 0
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
                note_drop(ob, line)
                if prio == PRIO_HIGH:
                    kept.append(f.read())   # one high-priority record at a time
                    break
            else:
                kept.append(line)
    if not dropped:
        return False
    ob.peeked = None
    if i == 0:
        # Head first, then the data: a cut in between re-sends acked records
        # (duplicates, removed by the backend) but never skips unacked ones.
        ob.write_head(n, 0)
    data = b"".join(kept)
    if data or n == ob.segs[-1]:
        fsutil.atomic_write(p, data)
    else:
        ob.segs.pop(i)
        if i == 0:
            ob.write_head(ob.segs[0], 0)
        fsutil.remove(p)
    ob.count -= dropped
    ob.bytes -= freed
    ob.dropped += dropped
    ob.dropped_total += dropped
    ob.write_head(ob.head[0], ob.head[1])
    return True


def note_drop(ob, line):
    parts = line.split(b"|", 3)
    boot, seq = int(parts[1]), int(parts[2])
    if ob.pending_drop is None:
        ob.pending_drop = [0, []]
    pd = ob.pending_drop
    pd[0] += 1
    ranges = pd[1]
    if ranges and ranges[-1][0] == boot and ranges[-1][2] + 1 == seq:
        ranges[-1][2] = seq
    elif len(ranges) < 16:
        ranges.append([boot, seq, seq])

