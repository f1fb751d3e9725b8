# The meters on the ESP32: the Linky TIC on a UART (7E1, 1200 or 9600 baud) and a
# water pulse input on a GPIO interrupt. Type-checked against
# micropython-esp32-stubs; it cannot run on a host.
#
# Config keys: tic_uart (1), tic_rx_pin (16), tic_tx_pin (17), tic_mode ("auto",
# "historic", "standard"), water_pin (27), water_debounce_ms (80).
import machine

from agent.compat import ticks_add, ticks_diff, ticks_ms

RXBUF = 2048          # a three-phase standard frame is over 1,300 bytes; 256 is the default
_M = (1 << 30) - 1
RING = 32             # pulse times the ISR can hold between two polls
STALE_MS = 60000      # older than any debounce: the ISR's reference is kept this recent


# GPIO6-11 are the SPI flash on a WROOM-32: UART1's default TX (GPIO10) is one of
# them, so the TX pin is always given, even though the TIC is receive-only.
FLASH_PINS = (6, 7, 8, 9, 10, 11)


class TicUart:
    """hal.tic_read(buf) -> n: what the UART has received, without blocking."""

    def __init__(self, uart_id: int, rx_pin: int, mode: str, tx_pin: int = 17) -> None:
        if rx_pin in FLASH_PINS or tx_pin in FLASH_PINS:
            raise ValueError("tic pins: GPIO6-11 are the flash chip")
        self.uart_id = uart_id
        self.rx_pin = rx_pin
        self.tx_pin = tx_pin
        self.baud = 1200 if mode == "historic" else 9600
        self.uart = self._open(self.baud)

    def _open(self, baud: int) -> machine.UART:
        # bits=7, parity=0 (even), stop=1: the TIC's 7E1. The UART hands us 7-bit data.
        return machine.UART(self.uart_id, baudrate=baud, bits=7, parity=0, stop=1,
                            tx=self.tx_pin, rx=self.rx_pin, rxbuf=RXBUF, timeout=0)

    def set_mode(self, mode: str) -> None:
        # Auto-detection: the consumption layer switches the baud rate while no
        # frame decodes at the current one.
        baud = 1200 if mode == "historic" else 9600
        if baud != self.baud:
            self.uart.deinit()
            self.baud = baud
            self.uart = self._open(baud)

    def read(self, buf: bytearray) -> int:
        n = self.uart.readinto(buf)
        return n or 0


class WaterPulses:
    """hal.water_edges() -> (now_ms, [edge ms, ...]). The ISR allocates nothing:
    it stores ticks in a preallocated ring and drops edges within the debounce."""

    def __init__(self, pin: int, debounce_ms: int) -> None:
        self.ring: list = [0] * RING     # ticks_ms() values (typed _TicksMs in the stubs)
        self.head = 0
        self.tail = 0
        self.lost = 0
        self.last = 0
        self.debounce = debounce_ms
        self.pin = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
        self.pin.irq(trigger=machine.Pin.IRQ_FALLING, handler=self._isr)

    # Plain bytecode (no @micropython.native): Pin.irq on the esp32 is soft by
    # default (scheduled), and a bytecode .mpy also loads on a virtual box.
    def _isr(self, pin) -> None:
        t = ticks_ms()
        if ticks_diff(t, self.last) < self.debounce:
            return
        self.last = t  # type: ignore[assignment]  # the stubs type ticks as _TicksMs, an int at run time
        nxt = (self.head + 1) % RING
        if nxt == self.tail:
            self.lost += 1
            return
        self.ring[self.head] = t
        self.head = nxt

    def read(self):
        out = []
        irq = machine.disable_irq()
        try:
            # Keep the debounce reference recent: after 6.2 days without water the
            # wrapped difference to it would go negative and read as a bounce.
            now = ticks_ms()
            if not 0 <= ticks_diff(now, self.last) <= STALE_MS:
                self.last = ticks_add(now, -STALE_MS)  # type: ignore[assignment]
            while self.tail != self.head:
                out.append(self.ring[self.tail])
                self.tail = (self.tail + 1) % RING
        finally:
            machine.enable_irq(irq)
        return now, out
