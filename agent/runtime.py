# The agent's main loop: one asyncio task each for the connection, telemetry,
# the outbox (and reported documents) and updates.
import asyncio
import json

from agent import VERSION, backoff, fsutil
from agent.compat import forget, mem
from agent.log import log
from agent.mqtt import Client, ConnectRefused
from agent.outbox import PRIO_HIGH, PRIO_LOW, Outbox
from agent.twin import Twin

SECTIONS = ("parental", "channels", "options")


def _validate_lazily(section):
    def check(doc):
        from agent import sections
        try:
            sections.VALIDATORS[section](doc)
        finally:
            forget("agent.sections")
    return check


class Box:
    def __init__(self, cfg, hal, validators=None):
        self.cfg = cfg
        self.hal = hal
        self.id = cfg["box_id"]
        # Topic strings are built once here (the layout is agent/topics.py, which
        # the backend uses); the box does not keep that module in RAM.
        self.t_base = "homebox/v1/" + self.id
        self.t_status = self.t_base + "/status"
        self.t_desired = self.t_base + "/desired/"
        self.t_reported = self.t_base + "/reported/"
        sd = cfg["state_dir"]
        fsutil.makedirs(sd)
        self.outbox = Outbox(sd + "/outbox", cfg["outbox_max_bytes"], cfg["outbox_seg_bytes"])
        self.boot = self._next_boot(sd)
        self.seq = 0
        if validators is None:
            # Validators are imported when a document must be checked and
            # released after: updates are rare, RAM is the scarcest resource.
            validators = {}
            for s in cfg.get("sections") or SECTIONS:
                validators[s] = _validate_lazily(s)
        self.twin = Twin(sd + "/docs", validators, on_apply=hal.enforce, now=self._ts)
        self.client = None
        self.connected = asyncio.Event()
        self.wake = asyncio.Event()
        self.stop = asyncio.Event()
        self.cycles = 0
        self.cycle_ts = None         # end of the current telemetry interval (sim time)
        self.reconnects = 0
        self.producers = []          # fn(box) -> None, called each telemetry cycle
        self._boot_ts = hal.now()
        self.failed = None
        # Section rules: signatures, cross-section checks, and the effects task
        # that keeps parental enforcement and the lineup in force.
        from agent import sections
        self.sections = sections.attach(self)

    # ---- identity of messages -------------------------------------------------
    def _next_boot(self, sd):
        # The boot counter is persisted before anything of this boot is stored,
        # and is always above any boot still in the outbox: sequence numbers of
        # an earlier boot are never reused, even if the counter file was lost.
        path = sd + "/boot.json"
        saved = fsutil.read_json(path, {}) or {}
        last = saved.get("boot", 0) if isinstance(saved, dict) else 0
        boot = max(last, self.outbox.max_boot()) + 1
        fsutil.write_json(path, {"boot": boot})
        return boot

    def _ts(self):
        t = self.hal.now()
        return None if t is None else int(t)

    def emit(self, kind, data, prio=PRIO_LOW, suffix=None, ts=None):
        """Store one message in the outbox with the next sequence number.
        ts defaults to now; periodic reports pass the end of their interval."""
        self.seq += 1
        env = {"v": 1, "box": self.id, "boot": self.boot,
               "seq": self.seq, "ts": self._ts() if ts is None else ts, "kind": kind, "data": data}
        self.outbox.put(self.boot, self.seq, suffix or ("telemetry/" + kind),
                        json.dumps(env), prio)
        drop = self.outbox.take_drop_report()
        if drop:
            self.event("outbox_dropped", {"count": drop[0], "ranges": drop[1],
                                          "dropped_total": self.outbox.dropped_total})
        self.wake.set()

    def event(self, etype, detail):
        detail["type"] = etype
        self.emit("event", detail, PRIO_HIGH, "event")

    # ---- telemetry ------------------------------------------------------------
    def health(self):
        free, alloc, peak = mem()
        h = {"fw": VERSION, "uptime_s": self._uptime(), "heap_free": free, "heap_alloc": alloc,
             "outbox_backlog": self.outbox.count, "outbox_bytes": self.outbox.bytes,
             "outbox_dropped": self.outbox.dropped_total, "reconnects": self.reconnects}
        h.update(self.hal.health())
        return h

    def _uptime(self):
        t = self.hal.now()
        if t is None or self._boot_ts is None:
            return None
        return int(t - self._boot_ts)

    async def telemetry_task(self):
        interval = self.cfg["telemetry_interval"]
        phase = backoff.phase(self.id, interval)
        while not self.stop.is_set():
            now = self.hal.now()
            if now is None:
                wait, nxt = interval, None
            else:
                nxt = ((int(now) - phase) // interval + 1) * interval + phase
                if self.cycle_ts is not None and nxt <= self.cycle_ts:
                    nxt = self.cycle_ts + interval     # woke a hair early: next slot
                wait = nxt - now
            await self.hal.sleep(wait)
            self.cycle_ts = nxt
            self.emit("health", self.health(), ts=nxt)
            for p in self.producers:
                p(self)
            self.cycles += 1
            if self.cycles % 16 == 0 and hasattr(self.hal, "clock"):
                self.hal.clock.save()
            mc = self.cfg["max_cycles"]
            if mc and self.cycles >= mc:
                self.stop.set()

    # ---- connection -------------------------------------------------------------
    def _ssl(self):
        if not self.cfg.get("tls"):
            return None
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca = self.cfg.get("tls_ca")
        if ca:
            ctx.load_verify_locations(cafile=ca)
        return ctx

    async def connection_task(self):
        attempt = 0
        cfg = self.cfg
        while not self.stop.is_set():
            c = Client(self.id, cfg["broker_host"], cfg["broker_port"],
                       cfg.get("mqtt_user"), cfg.get("mqtt_password"),
                       cfg["keepalive"], self._ssl())
            c.on_message = self._on_message
            c.on_oversized = self._on_oversized
            offline = json.dumps({"state": "offline", "box": self.id, "boot": self.boot})
            try:
                await c.connect(self.t_status, offline)
                await c.publish(self.t_status, self._status("online"), retain=True)
                await c.subscribe(self.t_desired + "+")
                self.client = c
                self.connected.set()
                self.wake.set()
                log("connected", "broker", "%s:%s" % (cfg["broker_host"], cfg["broker_port"]),
                    "boot", self.boot, "attempt", attempt)
                attempt = 0
                await c.wait_closed()
                log("disconnected", "reason", c.error)
            except ConnectRefused as e:
                log("refused", "reason", e)
            except Exception as e:
                log("connect_failed", "reason", e)
            self.connected.clear()
            self.client = None
            await c.close()
            if self.stop.is_set():
                break
            self.reconnects += 1
            delay = backoff.full_jitter(attempt, cfg["backoff_base"], cfg["backoff_cap"])
            attempt += 1
            log("reconnect", "attempt", attempt, "delay", "%.3f" % delay)
            await asyncio.sleep(delay)

    def _status(self, state):
        return json.dumps({"state": state, "box": self.id, "boot": self.boot, "fw": VERSION,
                           "ts": self._ts()})

    def _section(self, topic):
        p = self.t_desired
        if topic.startswith(p) and len(topic) > len(p) and "/" not in topic[len(p):]:
            return topic[len(p):]
        return None

    def _on_message(self, topic, payload):
        s = self._section(topic)
        if s is None:
            return
        result = self.twin.handle(s, payload)
        log("desired", "section", s, "result", result, "version", self.twin.version(s))
        self.wake.set()

    def _on_oversized(self, topic, length):
        s = self._section(topic)
        if s is not None:
            self.twin.reject_oversized(s, length)
            log("desired", "section", s, "result", "rejected", "oversized", length)
            self.wake.set()

    # ---- outbox and reported documents ------------------------------------------
    async def outbox_task(self):
        gap = 1.0 / self.cfg["drain_rate"]
        while True:   # runs until cancelled, so the shutdown can still drain
            await self.connected.wait()
            c = self.client
            if c is None:
                continue
            try:
                while self.twin.dirty:
                    s = self.twin.dirty[0]
                    cur = self.twin.reported[s]
                    rep = dict(cur)
                    rep["box"] = self.id
                    await c.publish(self.t_reported + s, json.dumps(rep), retain=True)
                    # Replaced while we published? Then the newer one goes next.
                    if self.twin.dirty and self.twin.dirty[0] == s and self.twin.reported[s] is cur:
                        self.twin.dirty.pop(0)
                rec = self.outbox.peek()
                if rec is None:
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                await c.publish(self.t_base + "/" + rec[0], rec[1])
                self.outbox.ack()
                await asyncio.sleep(gap)
            except Exception as e:
                log("publish_failed", "reason", e)
                # The connection task notices and reconnects; the record stays.
                await asyncio.sleep(0.2)

    # ---- main -------------------------------------------------------------------
    async def run(self):
        log("boot", "box", self.id, "boot", self.boot, "fw", VERSION, "hal", self.hal.name,
            "backlog", self.outbox.count)
        tasks = [asyncio.create_task(self._guard("connection", self.connection_task)),
                 asyncio.create_task(self._guard("telemetry", self.telemetry_task)),
                 asyncio.create_task(self._guard("outbox", self.outbox_task)),
                 asyncio.create_task(self._guard("sections", self.sections.run))]
        dur = self.cfg["duration"]
        if dur:
            tasks.append(asyncio.create_task(self._timer(dur)))
        await self.stop.wait()
        await self._shutdown(tasks)

    async def _guard(self, name, fn):
        # A task that dies must not leave a half-working box: stop, so that the
        # board glue restarts it (machine.reset on the ESP32, exit code on a host).
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log("task_failed", "task", name, "error", repr(e))
            self.failed = name
            self.stop.set()

    async def _timer(self, seconds):
        await asyncio.sleep(seconds)
        self.stop.set()

    async def _shutdown(self, tasks):
        # Give the outbox a moment to drain, then leave cleanly (status offline).
        for _ in range(int(self.cfg.get("shutdown_drain", 2) * 10)):
            if self.outbox.count == 0 and not self.twin.dirty:
                break
            self.wake.set()
            await asyncio.sleep(0.1)
        c = self.client
        if c is not None and c.connected:
            try:
                await c.publish(self.t_status, self._status("offline"), retain=True, timeout=2)
            except Exception:
                pass
            await c.disconnect()
        for t in tasks:
            t.cancel()
        if hasattr(self.hal, "clock"):
            self.hal.clock.save()
        free, alloc, peak = mem()
        log("stopped", "cycles", self.cycles, "seq", self.seq, "backlog", self.outbox.count,
            "heap_alloc", alloc, "heap_free", free, "heap_peak", peak)
