"""A box back to an earlier desired document: the content of that document (from
backend.history) sent again under a new version, since a box refuses a lower
version (replay protection). Recorded in the history like any push, its author
marked "(rollback to vN)".

    from backend import rollback
    r = rollback.rollback(broker, store, "HB-1", "options", to_version=2, master=m, author="alice")
    r.status   # backend.push.PushResult: "applied" | "rejected" | "timeout"
"""
from __future__ import annotations

from backend import history, push


def rollback(broker, store, box: str, section: str, to_version: int, master: bytes | None, *,
             author: str | None = None, tls_ca: str | None = None, timeout: float = 30.0) -> push.PushResult:
    """Raises history.NoSuchDocument when `to_version` was never sent to `box`."""
    doc = history.document(store, box, section, to_version)
    return push.push(broker, box, section, doc, master, store=store, tls_ca=tls_ca, timeout=timeout,
                     validate=False, author=(author or history.default_author()) + f" (rollback to v{to_version})")
