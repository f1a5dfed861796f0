# memworld: `make demo` and `make test` each set everything up on a fresh machine.
# Override TORCH_SPEC for a GPU build, e.g. `make test TORCH_SPEC="torch==2.13.0 --index-url ..."`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,recurrent,pmll,secure,sweep,docs
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.memworld-installed

.PHONY: install demo test test-slow docs bench bench-learning sweep-smoke lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Torch first, from the exact spec, so that nothing later pulls a multi-GB CUDA build.
$(VENV)/.torch-spec: $(PY) FORCE
	@grep -qxF '$(TORCH_SPEC)' $@ 2>/dev/null || { $(PIP) install $(TORCH_SPEC) && echo '$(TORCH_SPEC)' > $@; }

# Re-run only when pyproject.toml changes: a second `make test` installs nothing.
# memworld's C++ kernels (memory/native.py) are built here (about a minute) rather than at first use.
$(STAMP): pyproject.toml setup.py Makefile $(VENV)/.torch-spec
	$(PIP) install -e ".[$(EXTRAS)]"
	$(PY) -c "from memworld.memory import native; print('C++ kernels:', native.prebuild())"
	touch $@

install: $(STAMP)

demo: install
	$(PY) -m memworld.demo

# The docs build is strict, so a broken link or API reference fails `make test` (and CI).
test: install
	$(PY) -m pytest -m "not slow" -q
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q

test-slow: install
	$(PY) -m pytest -m slow -q

# The documentation site (guide pages and the API reference) into site/.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: install
	$(PY) bench/env_throughput.py
	$(PY) bench/memory_ops.py

bench-learning: install
	$(PY) bench/learning.py

sweep-smoke: install
	$(PY) -m memworld.cli sweep memory_table --smoke

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache

FORCE:
