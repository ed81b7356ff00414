# Two entry points for a newcomer, both idempotent and self-installing:
#   make demo   - set up .venv (first time) and run the demo on the built-in toy data
#   make test   - set up .venv (first time) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.neural3d-installed

.PHONY: demo test setup lint cuda-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,lpips,fid]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/neural3d demo

test: $(STAMP)
	$(PY) -m pytest -q

# Proves the CUDA kernels compile and link (no GPU needed): CUDA 13 toolkit + the cu130 torch.
cuda-check: $(STAMP)
	CUDA_HOME="$${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-8.0;9.0}" \
		$(PY) -m neural3d.render.build --cuda-check

lint: $(STAMP)
	$(VENV)/bin/ruff check neural3d tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
