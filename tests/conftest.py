import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import Mosquitto  # noqa: E402

# tests/onbox/ holds on-box tests that run under both interpreters through
# tests/test_onbox.py, not as pytest modules.
collect_ignore = ["onbox"]


@pytest.fixture
def broker(tmp_path):
    m = Mosquitto(tmp_path / "broker").start()
    yield m
    m.stop()
