"""The serial link of a virtual box: an RFC 2217 (telnet COM-port control)
server on a loopback TCP port. pyserial's PortManager does the server side of
the telnet/RFC 2217 negotiation; it drives a VirtualPort whose DTR/RTS go to the
device's auto-reset circuit and whose baud rate sets the link speed.

With baud_limit, bytes cross the link no faster than a real UART at the
negotiated rate (10 bits a byte, 8N1), in both directions.
"""
from __future__ import annotations

import collections
import json
import socket
import threading
import time

import serial.rfc2217 as rfc2217

from vbox.device import Device


class Throttle:
    def __init__(self, baud_fn):
        self.baud_fn = baud_fn
        self.t = 0.0

    def wait(self, nbytes: int) -> None:
        now = time.monotonic()
        self.t = max(self.t, now) + nbytes * 10.0 / max(self.baud_fn(), 300)
        if self.t > now:
            time.sleep(self.t - now)


class VirtualPort:
    """The device end of the USB-UART, as PortManager sees a serial.Serial."""

    def __init__(self, link: Link):
        self._link = link
        self._baud = 115200
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.xonxoff = False
        self.rtscts = False
        self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False
        self._dtr = False
        self._rts = False

    @property
    def baudrate(self) -> int:
        return self._baud

    @baudrate.setter
    def baudrate(self, value: int) -> None:
        self._baud = int(value)

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._link.flush_rx()
        self._dtr = bool(value)
        self._link.device.set_pins(dtr=self._dtr)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self._link.flush_rx()
        self._rts = bool(value)
        self._link.device.set_pins(rts=self._rts)

    def reset_input_buffer(self) -> None:
        self._link.purge_tx()

    def reset_output_buffer(self) -> None:
        pass


class _Conn:
    def __init__(self, sock: socket.socket, lock: threading.Lock):
        self.sock = sock
        self.lock = lock

    def write(self, data: bytes) -> None:
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass


class Link:
    """Serves one device on 127.0.0.1:port, one client at a time (like a tty)."""

    def __init__(self, device: Device, port: int = 0, baud_limit: bool = False, host: str = "127.0.0.1"):
        self.device = device
        self.baud_limit = baud_limit
        self.port_obj = VirtualPort(self)
        self.host = host
        self.srv: socket.socket | None = self._listen(port)
        self.port = self.srv.getsockname()[1]
        self.url = f"rfc2217://{host}:{self.port}"
        self.txq: collections.deque[bytes] = collections.deque()
        self.tx_cv = threading.Condition()
        self.conn: _Conn | None = None
        self.pm: rfc2217.PortManager | None = None
        self.rx_throttle = Throttle(lambda: self.port_obj.baudrate)
        self.tx_throttle = Throttle(lambda: self.port_obj.baudrate)
        self.closed = False
        self.rxbuf = bytearray()
        device.tx = self.enqueue

    # --- device -> host ------------------------------------------------------
    def enqueue(self, data: bytes) -> None:
        if self.conn is None:
            return                       # nothing attached: the bytes are lost, as on a real UART
        with self.tx_cv:
            self.txq.append(data)
            self.tx_cv.notify()

    def purge_tx(self) -> None:
        with self.tx_cv:
            self.txq.clear()

    def _writer(self) -> None:
        while not self.closed:
            with self.tx_cv:
                while not self.txq and not self.closed:
                    self.tx_cv.wait(0.5)
                if self.closed:
                    return
                data = b"".join(self.txq)
                self.txq.clear()
            conn, pm = self.conn, self.pm
            if conn is None or pm is None:
                continue
            if self.baud_limit:
                # send in UART-sized slices so the host sees a steady stream
                for i in range(0, len(data), 256):
                    part = data[i:i + 256]
                    self.tx_throttle.wait(len(part))
                    conn.write(_escape(pm, part))
            else:
                conn.write(_escape(pm, data))

    # --- host -> device ---
    def flush_rx(self) -> None:
        """Deliver the data received so far, before a modem-line change takes effect."""
        raw, self.rxbuf = bytes(self.rxbuf), bytearray()
        if raw:
            if self.baud_limit:
                self.rx_throttle.wait(len(raw))
            self.device.rx(raw)

    def _listen(self, port: int) -> socket.socket:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self.host, port))
        srv.listen(1)
        srv.settimeout(0.2)
        return srv

    def serve_forever(self) -> None:
        threading.Thread(target=self._writer, daemon=True).start()
        while not self.closed:
            if self.device.unplugged():
                # The box is off the USB hub (a fault): its port refuses
                # connections until it is plugged back (faults.json removed).
                if self.srv is not None:
                    self.srv.close()
                    self.srv = None
                time.sleep(0.1)
                continue
            if self.srv is None:
                try:
                    self.srv = self._listen(self.port)
                except OSError:
                    time.sleep(0.1)
                    continue
                self.device.link_down = False
            try:
                sock, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.closed:
                    return
                continue
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._serve_client(sock)

    def _serve_client(self, sock: socket.socket) -> None:
        conn = _Conn(sock, threading.Lock())
        self.purge_tx()
        self.conn = conn
        self.pm = rfc2217.PortManager(self.port_obj, conn)
        try:
            while True:
                try:
                    data = sock.recv(8192)
                except OSError:
                    break
                if not data:
                    break
                if self.pm.mode == rfc2217.M_NORMAL and self.pm.suboption is None and b"\xff" not in data:
                    self.rxbuf += data          # plain data: no telnet commands inside
                else:
                    for b in self.pm.filter(data):
                        self.rxbuf += b
                self.flush_rx()
                if self.device.link_down:
                    break                       # a fault: the cable is pulled mid-transfer
        finally:
            self.conn = None
            self.pm = None
            try:
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        with self.tx_cv:
            self.tx_cv.notify_all()
        try:
            if self.srv is not None:
                self.srv.close()
        except OSError:
            pass


def _escape(pm: rfc2217.PortManager, data: bytes) -> bytes:
    return data if b"\xff" not in data else b"".join(pm.escape(data))


def announce(name: str, link: Link, device: Device, as_json: bool) -> str:
    info = {"name": name, "url": link.url, "port": link.port, "dir": str(device.dir),
            "mac": ":".join(f"{b:02x}" for b in device.mac), "flash_size": device.flash_size}
    return json.dumps(info) if as_json else f"{name} {link.url}"
