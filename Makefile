# The two entry points: `make demo` and `make test`. Each does all set-up on a
# fresh Debian machine (system packages, virtualenv, Python packages) first.
SHELL := /bin/bash
# Debian's own python3 (the one python3-venv is for) where it exists: an
# optimized build (-O3, libpython linked into the binary) that ran the
# dispatch benchmark ~25 % faster than a default source build (pyenv's -O2,
# shared libpython) on the same machine, and forks a smaller process per lease. `make PYTHON=/path/to/python3 ...` picks another.
PYTHON ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages the market runs on; installed only if missing
DEBIAN_PACKAGES := rabbitmq-server postgresql libxml2-utils python3-venv bubblewrap
# what only the tests need: the browser the portal's end-to-end test drives
TEST_PACKAGES := chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench system-packages venv clean down

system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES) $(EXTRA_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	  `# the package starts a system-wide node we do not use: stop it so its ports are free`; \
	  ($(SUDO) service rabbitmq-server stop || true) >/dev/null 2>&1; \
	fi

$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

# the benchmarks' extra packages (the Celery peer), installed once
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,bench]'
	@touch $@

demo: system-packages venv
	$(VENV)/bin/python scripts/demo.py

# three pytest-xdist workers, each with its own broker node and PostgreSQL
# (tests/conftest.py): most tests wait on brokers and processes, not the CPU
TEST_WORKERS ?= 3
test: EXTRA_PACKAGES = $(TEST_PACKAGES)
test: system-packages venv
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --durations=15 tests

bench: system-packages $(VENV)/.bench-installed
	$(PY) bench/ledger_ingest.py
	$(PY) bench/dispatch.py

down: venv
	$(VENV)/bin/marketctl down

clean: down
	rm -rf .market
