# The two commands in the README: `make demo` and `make test`. Both build a local virtual
# environment on first use (re-installed only when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Offline datasets: use ../shared/data when it exists and the user has not chosen a folder.
ifeq ($(origin CNNLAB_DATA), undefined)
  ifneq ($(wildcard ../shared/data),)
    export CNNLAB_DATA := $(abspath ../shared/data)
  endif
endif

.PHONY: demo test test-slow bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# A fresh run each time (a run folder refuses to be overwritten; --resume continues one).
demo: $(STAMP)
	rm -rf runs/demo-lenet5-mnist
	$(PY) -m cnnlab train lenet5 --dataset mnist --out runs/demo-lenet5-mnist

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(PY) -m ruff check cnnlab tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
