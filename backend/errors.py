"""Typed failures of the operator backend's library calls (`backend.push`, ...).
The CLI (homebox/) maps each to a message and an exit code."""
from __future__ import annotations


class OpsError(Exception):
    """Base class of everything the backend raises on purpose."""


class DocumentError(OpsError):
    """A desired document cannot be read or is not JSON."""


class DocumentInvalid(OpsError):
    """A desired document breaks the box's rules; `violations`: [(field, rule)]."""

    def __init__(self, section: str, violations: list[tuple[str, str]]):
        super().__init__(f"{len(violations)} violation(s) of the {section} rules")
        self.section = section
        self.violations = violations


class BrokerError(OpsError):
    """The broker could not be used."""


class BrokerUnreachable(BrokerError):
    """No connection to the broker (refused socket, DNS, TLS)."""


class BrokerRefused(BrokerError):
    """The broker answered the CONNECT with a failure (bad account, ...)."""


class BrokerTimeout(BrokerError):
    """The broker did not answer in time."""
