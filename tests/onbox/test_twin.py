# Desired/reported engine tests; run under CPython and MicroPython.
import json

from agent import fsutil
from agent.twin import MAX_DOC_BYTES, Invalid, Twin


def _rules(doc):
    if "lineup" in doc and not isinstance(doc["lineup"], list):
        raise Invalid("lineup", "must be a list")


def _twin(tmp, applied=None):
    return Twin(tmp + "/docs", {"channels": _rules}, on_apply=(lambda s, d: applied.append((s, d["version"]))) if applied is not None else None)


def test_apply_persists_and_reports(tmp):
    seen = []
    tw = _twin(tmp, seen)
    assert tw.handle("channels", json.dumps({"version": 2, "lineup": []})) == "applied"
    assert tw.version("channels") == 2
    assert tw.reported["channels"]["status"] == "applied"
    assert seen == [("channels", 2)]
    tw2 = _twin(tmp)
    assert tw2.version("channels") == 2


def test_replay_is_ignored_and_state_kept(tmp):
    tw = _twin(tmp)
    tw.handle("channels", json.dumps({"version": 5, "lineup": [1]}))
    assert tw.handle("channels", json.dumps({"version": 4, "lineup": [9]})) == "replay"
    assert tw.handle("channels", json.dumps({"version": 5, "lineup": [9]})) == "replay"
    assert tw.applied["channels"]["lineup"] == [1]
    assert tw.reported["channels"]["ignored"]["version"] == 5
    assert tw.reported["channels"]["version"] == 5


def test_same_document_again_is_quiet(tmp):
    tw = _twin(tmp)
    doc = json.dumps({"version": 3, "lineup": []})
    tw.handle("channels", doc)
    tw.dirty = []
    assert tw.handle("channels", doc) == "replay"
    assert tw.dirty == []          # a retained re-delivery after reconnect is normal


def test_rejections_name_the_field_and_keep_previous(tmp):
    tw = _twin(tmp)
    tw.handle("channels", json.dumps({"version": 1, "lineup": [1]}))
    cases = [
        (b"{not json", "$"),
        (json.dumps([1, 2]), "$"),
        (json.dumps({"lineup": []}), "version"),
        (json.dumps({"version": "7"}), "version"),
        (json.dumps({"version": 2, "lineup": "x"}), "lineup"),
        (json.dumps({"version": 2, "pad": "p" * MAX_DOC_BYTES}), "$"),
    ]
    for payload, field in cases:
        assert tw.handle("channels", payload) == "rejected"
        rep = tw.reported["channels"]
        assert rep["status"] == "rejected"
        assert rep["rejected"]["field"] == field, rep
        assert rep["version"] == 1
        assert tw.applied["channels"]["lineup"] == [1]
    assert _twin(tmp).applied["channels"]["lineup"] == [1]


def test_corrupt_current_falls_back_to_last_known_good(tmp):
    tw = _twin(tmp)
    tw.handle("channels", json.dumps({"version": 1, "lineup": [1]}))
    tw.handle("channels", json.dumps({"version": 2, "lineup": [2]}))
    with open(tmp + "/docs/channels.json", "w") as f:
        f.write('{"version": 2, "lin')
    tw2 = _twin(tmp)
    assert tw2.version("channels") == 1
    assert tw2.reported["channels"]["source"] == "last-known-good"


def test_unknown_section_is_ignored(tmp):
    tw = _twin(tmp)
    assert tw.handle("firmware", b'{"version": 9}') == "ignored"
    assert "firmware" not in tw.reported


def test_oversized_rejection(tmp):
    tw = _twin(tmp)
    tw.reject_oversized("channels", 100000)
    assert tw.reported["channels"]["status"] == "rejected"
    assert "100000" in tw.reported["channels"]["rejected"]["reason"]
    assert fsutil.read_json(tmp + "/docs/channels.reported.json")["status"] == "rejected"
