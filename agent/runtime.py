# The agent's main loop: one asyncio task for the connection (which drains the
# outbox and publishes the reported documents while connected), one for
# telemetry, one per enabled feature, and one for the effects of the applied
# documents while they need a tick every minute. Updates arrive through the
# connection. What runs once or rarely is in agent/runtime_cold.py.
import asyncio
import json

from agent import VERSION
from agent import twin as _twin  # noqa: F401  (long-lived: loaded before the cold code)
from agent.compat import cold, mem
from agent.log import log
from agent.outbox import PRIO_HIGH, PRIO_LOW


class Box:
    # The box's state, all of it set by agent/runtime_cold.py (init, start, the
    # effects) or by the features it starts. Class-level defaults: no RAM in an
    # instance until a value is set there. Set once by init:
    cfg = hal = id = None
    t_base = t_status = t_desired = t_reported = None    # topic strings
    outbox = twin = None
    boot = None                  # this boot's number (the boot counter)
    boot_ts = None               # box time at boot, None if the clock was unknown
    connected = wake = stop = None                       # asyncio.Event
    producers = None             # [fn(box)], called each telemetry cycle
    # Constants until they change:
    seq = 0                      # the last sequence number of this boot
    client = None                # the MQTT Client, while connected
    cycles = 0                   # telemetry cycles so far
    cycle_ts = None              # end of the current telemetry interval (sim time)
    phase = 0                    # this box's offset in each telemetry interval (set by start)
    reconnects = 0
    running = False              # the tasks are started (runtime_cold.start)
    sections = None              # the effects, while a parental schedule keeps them in RAM
    fx_task = None               # their task, while they need a tick every minute
    fx_state = None              # (parental state, lineup) handed to the HAL so far
    consumption = None           # agent/consumption.py, when a meter is enabled
    dns = None                   # agent/dns.py Forwarder, when "dns_port" is set
    playlist = None              # agent/playlist.py Server, when "playlist_port" is set
    failed = None                # the name of a task that died
    # Over-the-air releases (agent/ota_cold.py): the boot pointer while this boot
    # runs a release on trial; the release to restart into once one is staged;
    # the install under way.
    trial = reboot = ota_task = ota_version = ota_doc = None
    _reporting_drop = False

    def __init__(self, cfg, hal, validators=None):
        # Boot-time set-up is cold code (agent/runtime_cold.py): identity, the
        # outbox, the boot counter, the twin; then a first pass of the effects,
        # once runtime_cold has left RAM (together they were the boot's peak).
        cold("agent.runtime_cold", "init", self, cfg, hal, validators)
        self.effects_pass(True)

    # ---- the section rules and their effects (cold code) ------------------------
    # Called from the twin's cold code while it handles a document, itself called
    # from runtime_cold.on_desired: cold() uses the copy of agent/runtime_cold.py
    # loaded for that, and forgets it when on_desired returns.
    def validator(self, section):
        return lambda doc: cold("agent.runtime_cold", "check", self, section, doc)

    def verify(self, section, doc):
        cold("agent.runtime_cold", "verify", self, section, doc)

    def on_apply(self, section, doc):
        self.hal.enforce(section, doc)
        if self.twin is not None:    # not during the boot load: __init__ runs a pass after
            self.effects_pass(True)

    def effects_pass(self, changed):
        # One pass of the effects (agent/rules/effects.py), then the rules package
        # leaves RAM as a whole.
        try:
            cold("agent.rules.effects", "run", self, changed)
        finally:
            from agent.rules import release
            release()

    def start_fx_task(self):
        # The effects' minute tick runs only while it is needed (effects_task),
        # and only in a running box: start() begins it after the boot pass.
        if self.running and self.fx_task is None and (self.sections is not None or self.hal.now() is None):
            self.fx_task = asyncio.create_task(self.guard("effects", self.effects_task))

    async def effects_task(self):
        # Each minute of box time while it is needed: the tick of a parental
        # schedule, or, while the clock is unknown, a pass when it becomes known
        # (the enforcement state reports it). Otherwise there is no such task:
        # an apply runs its pass at once, and starts the task if a schedule needs it.
        while not self.stop.is_set() and (self.sections is not None or self.hal.now() is None):
            now = self.hal.now()
            await self.hal.sleep(60 if now is None else 60 - now % 60)
            try:
                if self.sections is not None:
                    self.sections.tick()
                elif self.hal.now() is not None:
                    self.effects_pass(False)
            except Exception as e:
                log("effects_failed", "reason", e)
        self.fx_task = None

    # ---- identity of messages -------------------------------------------------
    def now_ts(self):
        t = self.hal.now()
        return None if t is None else int(t)

    def emit(self, kind, data, prio=PRIO_LOW, suffix=None, ts=None):
        """Store one message in the outbox with the next sequence number.
        ts defaults to now; periodic reports pass the end of their interval."""
        self.seq += 1
        env = {"v": 1, "box": self.id, "boot": self.boot,
               "seq": self.seq, "ts": self.now_ts() if ts is None else ts, "kind": kind, "data": data}
        self.outbox.put(self.boot, self.seq, suffix or ("telemetry/" + kind),
                        json.dumps(env), prio)
        # Not while reporting a drop: that report may itself displace a record, and
        # reporting that at once would recurse; it waits for the next emit.
        if not self._reporting_drop:
            drop = self.outbox.take_drop_report()
            if drop:
                self._reporting_drop = True
                try:
                    self.event("outbox_dropped", {"count": drop[0], "ranges": drop[1],
                                                  "dropped_total": self.outbox.dropped_total})
                finally:
                    self._reporting_drop = False
        self.wake.set()

    def event(self, etype, detail):
        detail["type"] = etype
        self.emit("event", detail, PRIO_HIGH, "event")

    # ---- telemetry ------------------------------------------------------------
    def health(self):
        free, alloc, peak = mem()
        h = {"fw": VERSION, "uptime_s": self.uptime(), "heap_free": free, "heap_alloc": alloc,
             "outbox_backlog": self.outbox.count, "outbox_bytes": self.outbox.bytes,
             "outbox_dropped": self.outbox.dropped_total, "reconnects": self.reconnects}
        h.update(self.hal.health())
        if self.dns is not None:
            h.update(self.dns.health())
        return h

    def uptime(self):
        t = self.hal.now()
        if t is None or self.boot_ts is None:
            return None
        return int(t - self.boot_ts)

    async def telemetry_task(self):
        interval = self.cfg["telemetry_interval"]
        phase = self.phase
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
    async def connection_task(self):
        # The session's set-up (CONNECT, the online status, SUBSCRIBE) and the
        # backoff between attempts are cold code: they run once per connection.
        attempt = 0
        while not self.stop.is_set():
            c = await cold("agent.session_cold", "open_session", self, attempt)
            if c is not None:
                attempt = 0
                await self._drain(c)
                log("disconnected", "reason", c.error)
                self.connected.clear()
                self.client = None
                await c.close()
            if self.stop.is_set():
                break
            self.reconnects += 1
            attempt += 1
            await cold("agent.session_cold", "backoff_wait", self, attempt)

    def on_message(self, topic, payload):
        cold("agent.runtime_cold", "on_desired", self, topic, payload)

    def on_oversized(self, topic, length):
        cold("agent.runtime_cold", "on_desired", self, topic, None, length)

    # ---- outbox and reported documents ------------------------------------------
    async def _drain(self, c):
        # Publish the reported documents, then the outbox oldest first at
        # drain_rate, for as long as the session lasts: also after stop, so that
        # the shutdown drains. A record leaves the outbox only after its PUBACK.
        gap = 1.0 / self.cfg["drain_rate"]
        tw = self.twin
        try:
            while c.connected:
                while tw.dirty:
                    s = tw.dirty[0]
                    cur = tw.reported[s]
                    rep = dict(cur)
                    rep["box"] = self.id
                    await c.publish(self.t_reported + s, json.dumps(rep), retain=True)
                    # Replaced while we published? Then the newer one goes next.
                    if tw.dirty and tw.dirty[0] == s and tw.reported[s] is cur:
                        tw.dirty.pop(0)
                rec = self.outbox.peek()
                if rec is None:
                    self.wake.clear()
                    if c.connected:
                        await self.wake.wait()
                    continue
                await c.publish(self.t_base + "/" + rec[0], rec[1])
                self.outbox.ack()
                await asyncio.sleep(gap)
        except Exception as e:
            # The session broke while publishing: the record stays, we reconnect.
            c.error = c.error or "publish failed: %s" % e

    # ---- main -------------------------------------------------------------------
    async def run(self):
        tasks = cold("agent.runtime_cold", "start", self)
        await self.stop.wait()
        await cold("agent.runtime_stop", "shutdown", self, tasks)

    async def guard(self, name, fn):
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

    async def timer(self, seconds):
        await asyncio.sleep(seconds)
        self.stop.set()
