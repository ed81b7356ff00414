# Two entry points for a newcomer, both idempotent and self-installing:
#   make demo   - set up .venv (first time) and run the demo on the built-in toy data
#   make test   - set up .venv and .venv-ns (first time) and run the test suite: the core suite in
#                 .venv (numpy 2), then the nerfstudio plugin tests in .venv-ns, where nerfstudio
#                 1.1.x and its pins (numpy<2, nerfacc 0.5.2, gsplat 1.4.0) are resolved in one call
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.neural3d-installed
NS_VENV ?= .venv-ns
NS_PY := $(NS_VENV)/bin/python
NS_STAMP := $(NS_VENV)/.neural3d-installed

.PHONY: demo test test-core test-nerfstudio setup lint cuda-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,lpips,fid]'
	touch $(STAMP)

$(NS_STAMP): pyproject.toml
	test -x $(NS_PY) || python3 -m venv $(NS_VENV)
	$(NS_PY) -m pip install -q --upgrade pip
	$(NS_PY) -m pip install -q -e '.[dev,nerfstudio]'
	touch $(NS_STAMP)

demo: $(STAMP)
	$(VENV)/bin/neural3d demo

test: test-core test-nerfstudio

test-core: $(STAMP)
	$(PY) -m pytest -q

test-nerfstudio: $(NS_STAMP)
	$(NS_PY) -m pytest -q tests/test_nerfstudio.py tests/test_one_renderer.py

# Proves the CUDA kernels compile and link (no GPU needed): CUDA 13 toolkit + the cu130 torch.
cuda-check: $(STAMP)
	CUDA_HOME="$${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-8.0;9.0}" \
		$(PY) -m neural3d.render.build --cuda-check

lint: $(STAMP)
	$(VENV)/bin/ruff check neural3d tests benchmarks

clean:
	rm -rf $(VENV) $(NS_VENV) build *.egg-info
