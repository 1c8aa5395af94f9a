# The two commands of the README: `make demo` (main job) and `make test` (tests).
# Both create the virtual environment on first use; nothing else needs installing by hand.

PYTHON ?= python3
VENV ?= .venv
# On a CUDA machine this pulls PyPI's CUDA build; machines with a local CPU wheel get that one.
# torchvision (timm needs it for PE-AV) is installed with it, at the release built for that
# torch: left to the resolver, the newest torchvision would replace torch with a newer one.
TORCH_SPEC ?= torch==2.13.0 torchvision==0.28.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: demo test lint install servers test-tools browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/omnibind demo $(ARGS)

# The real MinIO and Weaviate servers the live tests run, built once from their Go modules
# into ~/.cache/omnibind/servers (tools/servers.py). Without Go it says so and the live tests skip.
servers:
	$(PYTHON) tools/servers.py build

# Debian's libfaketime for the clock-skew test (tests/robustness/test_clock_skew.py), which
# skips and says why where it cannot be installed (no apt-get, not root).
test-tools:
	@ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || \
	  (command -v apt-get >/dev/null && (apt-get install -y -q faketime >/dev/null 2>&1 || \
	    (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q faketime >/dev/null 2>&1))) || \
	  echo "libfaketime not installed: the clock-skew test will skip"

# Debian's chromium for the review console's browser tests (tests/http/test_console.py; the
# Playwright browser download does not work here). Where it cannot be installed the browser
# tests skip and say why; under CI=true they fail instead.
browser:
	@sh tools/install_browser.sh

# `make test` runs the suite on TEST_WORKERS pytest-xdist processes (default 4; 0 = serially in
# one process), each test module whole in one worker, the whole-stack tests first (--dist
# loadscope; tests/support/scheduling.py); then the whole-stack chaos modules (marker `chaos`)
# one at a time in one process, as their waits assume a machine doing only them
# (docs/development.md). Exit status 5 (no test selected, e.g. ARGS names one file) is not a failure.
TEST_WORKERS ?= 4

test: $(STAMP) servers test-tools browser
ifeq ($(TEST_WORKERS),0)
	$(PY) -m pytest $(ARGS)
else
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder -m "not chaos" $(ARGS) || [ $$? -eq 5 ]
	$(PY) -m pytest -m chaos $(ARGS) || [ $$? -eq 5 ]
endif

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache
