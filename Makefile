# The two commands a fresh machine needs:
#   make demo   set everything up, then run the end-to-end demo on embedded defaults
#   make test   set everything up, then run the test suite
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast lint lock bench clean

setup:
	@bash infra/bootstrap.sh

demo: setup
	$(VENV)/bin/ffs demo

# Two test processes: most slow tests wait on a JVM, a broker or a restart, so two keep
# both cores busy (26 min -> 12 min here). A worker takes whole modules (--dist loadfile),
# so a module's Pinot or Redis Cluster starts once; the slowest tests are listed at the end.
TEST_WORKERS ?= 2

test: setup lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

test-fast: setup
	$(PY) -m pytest -m "not spark and not handbook"

bench: setup
	@bash infra/install_bench_tools.sh
	$(PY) -m benchmarks.batch
	$(PY) -m benchmarks.online
	$(PY) -m benchmarks.stream
	$(PY) -m benchmarks.analytics
	$(PY) -m benchmarks.pinot
	$(PY) -m benchmarks.realtime_mode
	$(PY) -m benchmarks.evaluate --handbook
	$(PY) -m benchmarks.cluster
	$(PY) -m benchmarks.scale
	$(PY) -m benchmarks.memory

# requirements.lock from a fresh resolution of pyproject.toml (in a scratch venv)
lock:
	rm -rf .venv-lock && python3 -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q -e '.[test]'
	{ sed -n '1,4p' requirements.lock; .venv-lock/bin/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .venv-lock

clean:
	rm -rf data/demo data/offline data/validation data/stream data/analytics spark-warehouse .pytest_cache
