# Two commands on a fresh machine: `make run` (install, build, route) and `make test`.
# Everything installs into .venv; torch is pinned first so nothing pulls a CUDA build.
VENV   ?= .venv
PY     := $(VENV)/bin/python
CF     := $(VENV)/bin/contextforge
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install setup run test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[export,dev]'
	touch $@

install: $(VENV)/.installed

# Exports the encoder to ONNX (models/encoders/, git-ignored) and trains the default router
# only if models/routers/default is missing (it ships in the repo).
setup: install
	$(CF) setup

# The main job: the gateway on the default config (simulated providers: no API keys needed),
# on 127.0.0.1:8000, after printing the routing decisions for a few sample prompts.
run: setup
	$(CF) route \
	  "What is the capital of Australia? A) Sydney B) Canberra C) Melbourne D) Perth" \
	  "Write a Python function that returns the n-th Fibonacci number using memoization." \
	  "Prove that there are infinitely many primes, then explain the proof to a 10-year-old."
	$(CF) serve

test: setup
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

# gateway_overhead's load tool is wrk (Debian's package; without it the script falls back to
# its Python client); --peer litellm installs LiteLLM into .cache/peer-litellm on first use.
bench: setup
	$(PY) benchmarks/routing_quality.py --json benchmarks/out/routing_quality.json
	$(PY) benchmarks/routing_latency.py --json benchmarks/out/routing_latency.json
	command -v wrk >/dev/null || (apt-get install -y wrk || echo 'no wrk: Python load client')
	$(PY) benchmarks/gateway_overhead.py --peer litellm --json benchmarks/out/gateway_overhead.json
	$(PY) benchmarks/hostile_load.py --json benchmarks/out/hostile_load.json

clean:
	rm -rf $(VENV) models/encoders/*/ .cache
