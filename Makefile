# homebox: every target does its own set-up, so `make demo` and `make test`
# work on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
PYTHON ?= python3
# Regenerating the locks needs uv; installing from them needs only pip.
UV_VERSION := 0.13.8

.PHONY: setup system-deps test demo check bench chaos lock clean

setup: system-deps $(STAMP)

# Debian's mosquitto is the real broker of the tests. Installed only when
# missing and when we are root; otherwise say what is missing.
system-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's mosquitto"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	  else \
	    echo "note: mosquitto is not installed and we are not root: the demo uses the pure-Python broker; tests need mosquitto (apt-get install mosquitto)"; \
	  fi; \
	fi
	@# The home-network tests (tests/test_dns_netns.py) resolve through the box with dig.
	@if ! command -v dig >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's bind9-dnsutils (dig)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bind9-dnsutils >/dev/null; \
	  else \
	    echo "note: dig is not installed and we are not root: the DNS tests skip (apt-get install bind9-dnsutils)"; \
	  fi; \
	fi
	@# The operator console's browser tests drive Debian's chromium with Playwright.
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: chromium is not installed and we are not root: the console's browser tests skip (apt-get install chromium)"; \
	  fi; \
	fi
	@# The backend's PostgreSQL tests start a throwaway server from Debian's binaries.
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's postgresql"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "note: PostgreSQL is not installed and we are not root: the PostgreSQL tests skip (apt-get install postgresql)"; \
	  fi; \
	fi

$(STAMP): pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	@# --no-deps: the lock is the whole resolution (uv's); pip's own resolver once
	@# picked an unpinned newer release for an extra (pwdlib[argon2]) and stopped.
	$(VENV)/bin/pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/dev.lock
	$(VENV)/bin/pip check
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Two workers: most tests wait on real processes (brokers, boxes, esptool), so two
# share the machine's two cores well; TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: setup
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist worksteal

demo: setup
	$(VENV)/bin/homebox demo --console-for -1

check: setup
	$(VENV)/bin/ruff check .
	$(PY) -m tests.tools.imports
	@# mypy ignores bare .pyi files in site-packages: copy the board stubs aside.
	$(PY) -c "import importlib.metadata as m, shutil, pathlib; d = pathlib.Path('build/stubs'); [(d / f.parent).mkdir(parents=True, exist_ok=True) or shutil.copy(f.locate(), d / f) for dist in ('micropython-esp32-stubs', 'micropython-stdlib-stubs') for f in m.files(dist) if f.suffix == '.pyi']"
	MYPYPATH=build/stubs $(VENV)/bin/mypy --config-file mypy-onbox.ini agent/hal/esp32.py agent/hal/esp32_cold.py agent/hal/esp32_ntp.py agent/hal/esp32_meters.py

bench: setup
	$(PY) -m benchmarks.run --out benchmarks/results.json

# System-level fault runs (tests/chaos/): 200 power cuts across 8 boxes, a broker
# crash, network partitions (root), and every fuzz target at 1000 examples; prints
# the tallies. `make test` runs a reduced version (tests/test_chaos.py).
CHAOS_KILLS ?= 200
CHAOS_BOXES ?= 8
FUZZ_EXAMPLES ?= 1000
# Then the over-the-air update run: 50 power cuts of virtual boxes at random points
# of an agent release's install (tests/otafleet.py; 6 chosen ones are in make test).
OTA_CUTS ?= 50
OTA_BOXES ?= 4
chaos: setup
	$(PY) -m tests.chaos --kills $(CHAOS_KILLS) --boxes $(CHAOS_BOXES) --fuzz-examples $(FUZZ_EXAMPLES)
	$(PY) -m tests.otafleet --cuts $(OTA_CUTS) --boxes $(OTA_BOXES)

lock:
	$(PYTHON) -m pip install -q "uv==$(UV_VERSION)"
	$(PYTHON) -m uv pip compile pyproject.toml --universal --generate-hashes -q --extra sim --extra dev -o requirements/dev.lock
	$(PYTHON) -m uv pip compile pyproject.toml --universal --generate-hashes -q -o requirements/base.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
