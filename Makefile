# The two commands in the README: `make demo` and `make test`. Both build a local virtual
# environment on first use (re-installed only when pyproject.toml changes), with the extras the
# test suite exercises for real: onnx + onnxruntime (export checks) and tensorboard (event files).
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

.PHONY: demo test test-slow test-torchvision bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,onnx,tensorboard]'
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

# The proof of equivalence against torchvision itself, in a second environment: torchvision
# 0.29.1 needs torch 2.14.1 (~5.5 GB with its CUDA libraries), which must never replace .venv's
# CPU torch. Same dependencies as .venv otherwise, read from pyproject.toml. Not part of `make test`.
TV_VENV  := .venv-torchvision
TV_PY    := $(TV_VENV)/bin/python
TV_STAMP := $(TV_VENV)/.installed

$(TV_STAMP): pyproject.toml
	test -x $(TV_PY) || $(PYTHON) -m venv $(TV_VENV)
	$(TV_PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  print("\n".join(d for d in p["dependencies"] + p["optional-dependencies"]["dev"] \
	                  if not d.startswith("torch")))' > $(TV_VENV)/requirements.txt
	$(TV_PY) -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 \
	  -r $(TV_VENV)/requirements.txt
	touch $(TV_STAMP)

test-torchvision: $(TV_STAMP)
	PYTHONPATH=$(CURDIR) $(TV_PY) -m pytest -q -p no:xdist -p no:cacheprovider \
	  tests/interop/test_torchvision.py tests/models/test_zoo.py -k torchvision

lint: $(STAMP)
	$(PY) -m ruff check cnnlab tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
