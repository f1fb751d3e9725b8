"""Typed failures of the bench station. Each per-box failure has a `kind` (a
stable word for the ledger and the JSON report), a plain `advice` for the
technician (what to do next), and a `verdict`: FAIL or QUARANTINE.

Setup errors (no master secret, a bad ledger, a missing base firmware) are
`SetupError`s: the run does not start, and the message says how to fix it.
"""
from __future__ import annotations

PASS = "PASS"
FAIL = "FAIL"
QUARANTINE = "QUARANTINE"


class BenchError(Exception):
    """Base class of everything the station raises on purpose."""


class SetupError(BenchError):
    """The run cannot start: the message says what to fix."""


class LedgerError(SetupError):
    """The ledger cannot be opened, or holds something inconsistent."""


class BoxFailure(BenchError):
    """One box failed a step. Subclasses set kind, verdict and advice."""

    kind = "error"
    verdict = FAIL
    advice = "run this slot again; if it fails again, put the box aside and call support"

    def __init__(self, detail: str, advice: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if advice:
            self.advice = advice

    def as_dict(self) -> dict:
        return {"kind": self.kind, "verdict": self.verdict, "detail": self.detail, "advice": self.advice}


class PortMissing(BoxFailure):
    kind = "no_port"
    advice = "no box answers on this slot: check that a box is plugged into this hub port, then run again"


class NoSync(BoxFailure):
    kind = "no_sync"
    advice = ("the box does not answer: check the USB cable, then hold the BOOT button while "
              "plugging the box in, and run this slot again")


class LinkLost(BoxFailure):
    kind = "link_lost"
    advice = ("the USB link dropped during flashing: reseat the cable (try another hub port "
              "if it happens again), then run this slot again")


class Md5Mismatch(BoxFailure):
    kind = "md5_mismatch"
    advice = ("the flash did not verify, even at a lower speed: try another cable or hub port; "
              "if it fails again, put the box in the quarantine bin")


class BadFlash(BoxFailure):
    kind = "bad_flash"
    verdict = QUARANTINE
    advice = "the flash chip does not answer: put the box in the QUARANTINE bin, do not install it"


class ImageError(BoxFailure):
    kind = "image"
    advice = "the box's image could not be built: call support with this message"


class TestFailed(BoxFailure):
    kind = "test_failed"
    advice = "a check failed (named above): run this slot again; if the same check fails, put the box aside"

    def __init__(self, detail: str, failed: list[str] | None = None, advice: str | None = None):
        super().__init__(detail, advice)
        self.failed = failed or []

    def as_dict(self) -> dict:
        d = super().as_dict()
        d["failed_checks"] = self.failed
        return d


class LabelError(BoxFailure):
    kind = "label"
    advice = "the label could not be made: check the output folder, then run this slot again"


# What each failed acceptance check means for the technician.
CHECK_ADVICE = {
    "boot_banner": "the box did not start its software after flashing: run this slot again",
    "info": "the box answers with another identity than the one flashed: run this slot again",
    "filesystem": "the box cannot write its flash: put it in the quarantine bin",
    "identity": "the image on the box is not this box's: run this slot again",
    "documents": "stored settings are damaged: run this slot again (it re-flashes them)",
    "wifi_scan": "the Wi-Fi radio does not scan: check the antenna; if it fails again, quarantine the box",
    "tic_uart": ("no signal from the electricity meter: check that the TIC test cable is plugged into "
                 "the box's TIC input, then run this slot again; if it fails again, put the box aside"),
    "pulse_input": ("the water-meter input does not read: check that the pulse test cable is plugged in, "
                    "then run this slot again"),
    "access_point": ("the box's Wi-Fi is not on with the name on its label: run this slot again (it "
                     "re-flashes the settings); if it fails again, check the antenna, then put the box aside"),
    "mqtt": ("the box cannot send to the bench broker with its own password: check the bench network, "
             "then run this slot again"),
    "bench_broker": "the bench cannot reach its broker (not the box's fault): check the bench network and the broker, then run again",
    "log": "the box console does not answer: run this slot again",
}
