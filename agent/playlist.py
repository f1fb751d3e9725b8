# The TV lineup as a playlist on the home network (issue 15): a small HTTP server
# (config "playlist_port") that serves the effective lineup, the free TNT
# channels plus the subscribed bouquets only (agent/rules/lineup.py), as
#   GET /playlist.m3u   #EXTM3U, one #EXTINF per channel with tvg-chno (LCN) and tvg-name
#   GET /lineup.json    {"channels_version", "options_version", "channels": [{lcn, name, url, bouquet}]}
# for a TV app or VLC. Built from the applied documents at each request (the
# rules leave RAM after), so it always serves what is in force; the channels
# reported document says which versions ("served").
import asyncio

from agent.log import log

MAX_LINE = 512


def versions(applied):
    c = applied.get("channels") or {}
    o = applied.get("options") or {}
    return c.get("version", 0), o.get("version", 0)


def _clean(s):
    # a name or URL inside one M3U line: no line breaks, no quote in an attribute
    return str(s).replace("\r", " ").replace("\n", " ").replace('"', "'")


async def _lines(w, chans, applied):
    cv, ov = versions(applied)
    w.write(("#EXTM3U x-homebox-channels=\"%d\" x-homebox-options=\"%d\"\n" % (cv, ov)).encode())
    for c in chans:
        name = _clean(c.get("name", ""))
        w.write(('#EXTINF:-1 tvg-chno="%d" tvg-name="%s" group-title="%s",%s\n%s\n' % (
            c.get("lcn", 0), name, _clean(c.get("bouquet", "")), name, _clean(c.get("url", "")))).encode())
        await w.drain()


async def _json(w, chans, applied):
    import json
    cv, ov = versions(applied)
    w.write(('{"channels_version": %d, "options_version": %d, "channels": [' % (cv, ov)).encode())
    first = True
    for c in chans:
        w.write((("" if first else ", ") + json.dumps({"lcn": c.get("lcn"), "name": c.get("name"),
                                                        "url": c.get("url"), "bouquet": c.get("bouquet")})).encode())
        first = False
        await w.drain()
    w.write(b"]}\n")


class Server:
    requests = errors = 0

    def __init__(self, box, cfg):
        self.box = box
        self.port = cfg["playlist_port"]
        self.host = cfg.get("playlist_host") or "0.0.0.0"
        self.srv = None

    async def run(self):
        self.srv = await asyncio.start_server(self.handle, self.host, self.port)
        log("playlist_listening", "port", self.port)
        while True:
            await asyncio.sleep(3600)

    async def handle(self, r, w):
        try:
            line = await asyncio.wait_for(r.readline(), 10)
            for _ in range(32):           # the headers: read and ignored
                h = await asyncio.wait_for(r.readline(), 10)
                if not h or h in (b"\r\n", b"\n"):
                    break
            parts = line.split()
            path = parts[1].decode() if len(parts) >= 2 and len(line) <= MAX_LINE else ""
            if parts and parts[0] != b"GET":
                await self._head(w, "405 Method Not Allowed", "text/plain")
                w.write(b"GET only\n")
            elif path.split("?")[0] in ("/playlist.m3u", "/playlist.m3u8", "/lineup.json"):
                self.requests += 1
                m3u = not path.startswith("/lineup")
                applied = self.box.twin.applied
                from agent.rules import release
                from agent.rules.lineup import effective
                try:
                    chans = effective(applied)
                finally:
                    release()
                await self._head(w, "200 OK", "audio/x-mpegurl" if m3u else "application/json")
                await (_lines(w, chans, applied) if m3u else _json(w, chans, applied))
                chans = None
            else:
                await self._head(w, "404 Not Found", "text/plain")
                w.write(b"try /playlist.m3u or /lineup.json\n")
            await w.drain()
        except Exception as e:
            self.errors += 1
            log("playlist_error", "error", repr(e))
        finally:
            try:
                w.close()
                await w.wait_closed()
            except Exception:
                pass

    async def _head(self, w, status, ctype):
        w.write(("HTTP/1.0 %s\r\nContent-Type: %s; charset=utf-8\r\nConnection: close\r\n\r\n"
                 % (status, ctype)).encode())


def start(box):
    s = Server(box, box.cfg)
    box.playlist = s
    return [asyncio.create_task(box.guard("playlist", s.run))]
