# Two entry points for a fresh machine: `make demo` and `make test`. Each builds .venv and installs first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: demo test install install-test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/pixelwise demo

test: install-test
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) pixelwise-demo .pytest_cache
