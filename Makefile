# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install demo test-deps browser test lint bench

install:
	$(PIP) -e .

demo: install
	$(PY) -m mediscan demo

browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { echo "chromium is missing and could not be installed"; exit 1; }

test-deps: browser
	$(PIP) -e '.[test]'

test: test-deps
	$(PY) -m pytest -q -n auto --dist loadfile

lint:
	$(PY) -m ruff check mediscan tests bench
