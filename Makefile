# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv and install what they need (torch's CPU wheel first, so pip never pulls a CUDA build).
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test test-slow install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/listopd demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) runs
