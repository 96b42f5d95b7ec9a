# The two commands: `make demo` runs the main job, `make test` runs the whole test suite.
# Both create (and reuse) the virtual environment in .venv and install what they need.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test chaos fuzz validate lint bench system-deps clean stop

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The benchmark peers too: the test suite smoke-runs the benchmarks.
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

setup: $(STAMP)

system-deps:
	bash scripts/system-deps.sh

demo: setup
	$(BIN)/conveyor demo

# Independent checks of the demo's products (or of a small archive's, without a demo run).
validate: setup
	$(BIN)/python -m devtools.validate --outputs demo-output --archive .conveyor/archive

test: setup system-deps
	$(BIN)/python -m pytest

# The delivery guarantees under chaos, full form (2,000 jobs; the short form runs in `make test`).
chaos: setup
	PYTHONPATH=. $(BIN)/python scripts/chaos.py

lint: setup
	$(BIN)/ruff check shared services devtools tests benchmarks
	$(BIN)/ruff format --check shared services devtools tests benchmarks
	$(BIN)/mypy shared services

# 10,000 generated hostile events through a live dispatcher; prints the figures.
fuzz: setup
	$(BIN)/python scripts/fuzz.py --events 10000

bench: setup
	$(BIN)/python benchmarks/queue_throughput.py
	$(BIN)/python benchmarks/archive_index.py
	$(BIN)/python benchmarks/geomedian_job.py
	$(BIN)/python benchmarks/ard_scene.py
	$(BIN)/python benchmarks/water_scene.py
	$(BIN)/python benchmarks/autoscaler_traces.py

# requirements.lock: what the image installs (pyproject's runtime dependencies and the build
# backend), pinned to the versions this environment tests with, every file's hash included.
.PHONY: lock
lock: setup
	$(BIN)/python -m pip freeze --exclude-editable | grep -v ' @ ' > $(VENV)/lock-constraints.txt
	printf 'setuptools>=68\n' | $(BIN)/uv pip compile pyproject.toml - \
	    -c $(VENV)/lock-constraints.txt --generate-hashes --no-annotate --python-version 3.11 \
	    --python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock' \
	    -o requirements.lock

stop: setup
	$(BIN)/conveyor stop --state-dir .conveyor

clean: stop
	rm -rf .conveyor demo-output
