# Two commands for a newcomer (see README):  make demo   and   make test
# Each creates/updates the local virtual environment .venv first.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test test-slow venv weights chromium clean-venv

venv: $(STAMP)

# torch is pinned to the CPU wheel of this platform; installed first so that the project's looser
# "torch>=2.1" requirement is already satisfied and pip never pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

weights: $(STAMP)
	$(VENV)/bin/inverseg weights fetch

demo: $(STAMP)
	$(VENV)/bin/inverseg demo $(DEMO_ARGS)

# The browser tests (pytest -m browser) drive Debian's chromium through Playwright; never 'playwright install'.
chromium:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

test: weights chromium
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: weights
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
