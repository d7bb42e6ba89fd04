# Set-up and everyday commands. `make run` and `make test` build .venv/ from
# requirements.lock on first use, so a fresh clone needs only Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NOTF_VENV := .venv-notf
UV_VERSION := 0.13.8
SCREENSHOT_TOOLS ?= $(HOME)/.cache/keras-pipeline-screenshots
export MPLBACKEND := Agg

.PHONY: run test lock bench results docs clean ui postgresql screenshots mlproject

# Bytecode is compiled at install time: where PYTHONDONTWRITEBYTECODE is set, as on CI, every
# process would otherwise compile TensorFlow, Beam and MLflow from source on import.
$(VENV)/.installed: requirements.lock setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip sync --quiet --compile-bytecode --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps --no-build-isolation -e .
	touch $@

# .venv without TensorFlow: the lock minus the TensorFlow distributions, everything else at the
# same pins. tests/test_without_tensorflow.py trains on JAX in it, as on a GPU host without TF.
$(NOTF_VENV)/.installed: requirements.lock setup.cfg $(VENV)/.installed
	$(PYTHON) -m venv --without-pip $(NOTF_VENV)
	grep -Ev '^(tensorflow|tensorflow-cpu|tensorboard|tensorboard-data-server|tensorflow-datasets|tensorflow-metadata)==' \
		requirements.lock > $(NOTF_VENV)/requirements.lock
	$(VENV)/bin/uv pip sync --quiet --compile-bytecode --python $(NOTF_VENV)/bin/python $(NOTF_VENV)/requirements.lock
	$(VENV)/bin/uv pip install --quiet --python $(NOTF_VENV)/bin/python --no-deps --no-build-isolation -e .
	touch $@

run: $(VENV)/.installed
	$(PY) -m pipeline.cli run $(ARGS)

# PostgreSQL's server programs, for the tracking-server tests (each test module starts its own cluster):
# Debian's package, installed as root without the default cluster it would create and start. Nothing
# happens where initdb is installed already; the apt output is shown only when the install fails.
postgresql:
	@if command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's postgresql package"; \
		mkdir -p /etc/postgresql-common/createcluster.d; \
		echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main-cluster.conf; \
		log=$$(mktemp); \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			postgresql; } >$$log 2>&1 || { cat $$log; rm -f $$log; exit 1; }; rm -f $$log; \
	else \
		echo "error: the tests need PostgreSQL's server (initdb, postgres): install Debian's postgresql package as root, or put initdb on PATH" >&2; \
		exit 1; \
	fi

# The whole suite on the TensorFlow backend (tests/test_without_tensorflow.py runs Iris on JAX in
# .venv-notf), then the model zoo and the training callbacks again on JAX: every model built,
# stepped, saved and run in bfloat16, every layer against its reference, but the tests that train
# a model until it learns (marked `learns`) only once.
test: $(VENV)/.installed $(NOTF_VENV)/.installed postgresql
	$(PY) -m pytest -n 2 --dist loadscope --durations=25 $(ARGS)
	KERAS_BACKEND=jax $(PY) -m pytest -n 2 --dist loadscope --durations=10 -m "not learns" tests/models tests/test_callbacks.py $(ARGS)

# The CPU benchmarks of docs/benchmarks.md, each printing its table (about 20 minutes on 2 cores).
bench: $(VENV)/.installed
	$(PY) -m bench.preprocess_throughput
	$(PY) -m bench.preprocess_modalities
	$(PY) -m bench.memory
	$(PY) -m bench.input_pipeline
	$(PY) -m bench.validation_restart
	$(PY) -m bench.pipeline_overhead

# Every recipe trained to its quality bar (slow: tens of minutes on CPU); writes docs/results.md.
results: $(VENV)/.installed
	$(PY) -m bench.results $(ARGS)

# MLproject's entry points from the CLI's options (pipeline/cli.py MLPROJECT_OPTIONS); a test keeps them equal.
mlproject: $(VENV)/.installed
	$(PY) -m tools.mlproject

docs: $(VENV)/.installed
	$(PY) -m keras_models.registry
	$(PY) -m keras_models.catalogue > docs/models.md

# MLflow UI pages after a fresh Iris run, captured with headless Chromium into docs/images/ (not part of `make
# test`). Needs Debian's chromium and nodejs; playwright-core, which drives Chromium, is installed once into $(SCREENSHOT_TOOLS).
screenshots: $(VENV)/.installed
	@command -v chromium >/dev/null && command -v npm >/dev/null || { echo "error: install Debian's chromium and npm (apt-get install -y chromium npm, as root)" >&2; exit 1; }
	@test -d $(SCREENSHOT_TOOLS)/node_modules/playwright-core || npm install --silent --no-audit --no-fund --prefix $(SCREENSHOT_TOOLS) playwright-core
	NODE_PATH=$(SCREENSHOT_TOOLS)/node_modules $(PY) tools/screenshots.py

ui: $(VENV)/.installed
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db

# Regenerate the lock from the ranges in setup.cfg (needs network access to PyPI).
lock:
	uv pip compile setup.cfg --extra dev --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu -o requirements.lock

clean:
	rm -rf $(VENV) $(NOTF_VENV) artifacts mlruns mlflow.db .pytest_cache
