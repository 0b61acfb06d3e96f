# Two commands are the whole set-up on a fresh machine with Python 3.11+: `make run`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# torch 2.13.0 (CPU) lies on the dev/CI machines' disk; pinning it first keeps pip from
# downloading a multi-GB CUDA build. Elsewhere the pyproject range picks what the platform has.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: install run test test-gpu lint bench-learner bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(FIND_LINKS) "torch==2.13.0" || $(BIN)/python -m pip install -q "torch>=2.13,<2.15"
	$(BIN)/python -m pip install -q $(FIND_LINKS) -e '.[dev]'
	touch $@

# The whole service on the embedded default: API on :8000, learner, private Valkey in ./data.
# The demo vocabulary and dimension apply only when you have not set your own (no dimension
# under a feature schema, MNEMO_FEATURES: it is derived).
run: $(STAMP)
	$(if $(MNEMO_FEATURES),,MNEMO_INPUT_DIM=$${MNEMO_INPUT_DIM:-4}) \
	MNEMO_LABELS=$${MNEMO_LABELS-setosa,versicolor,virginica} \
	$(BIN)/python -m service run

# The binaries the suite needs beyond the venv (prometheus, chromium, redis-server, kubectl) come from
# the bootstrap that .ci/run calls too. The tests' Redis is the one at MNEMO_TEST_REDIS_URL
# (default redis://127.0.0.1:6379/11) when it answers, else a Valkey the suite starts itself.
test: $(STAMP)
	scripts/bootstrap-test-deps
	$(BIN)/python -m pytest -q

# The CUDA tests of the learning core, on a machine with a GPU.
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m cuda tests/models

lint: $(STAMP)
	$(BIN)/ruff check .

bench-learner: $(STAMP)
	$(BIN)/python -m models.bench_learner --markdown bench_results/learner.md

# Continual-learning benchmark (5 seeds, every strategy and buffer; ~1 h on 2 cores, the subset in
# BENCHMARKS.md ~10 min), through the learner's own stream step: tables and plots
# in bench_results/, the tables spliced into BENCHMARKS.md.
bench: $(STAMP)
	$(BIN)/python -m service bench --out bench_results --benchmarks BENCHMARKS.md

# Tags as tasks (~40 min on 2 cores): per-tag heads and progressive columns, meta-learned starts
# (MNEMO_META_START) and soft sharing (MNEMO_HEADS=soft), 10 seeds paired by seed; the tables
# spliced into BENCHMARKS.md.
.PHONY: bench-tags
bench-tags: $(STAMP)
	$(BIN)/python -m service bench --scenarios heads meta soft --seeds 0 1 2 3 4 5 6 7 8 9 --out bench_results --benchmarks BENCHMARKS.md

clean:
	rm -rf $(VENV) .pytest_cache

# Serving benchmark (~4 min on 2 cores): the bare-FastAPI floor vs predict at 1 and 16 rows,
# feedback ingestion, learner throughput, freshness, p99 with and without a version a second.
.PHONY: bench-serve
bench-serve: $(STAMP)
	$(BIN)/python -m load_tests.bench_serve --markdown bench_results/serve.md --json bench_results/serve.json

# Learning through the running service (~8 min on 2 cores, ~5 without the three streams of
# records of `make bench-records`): each scenario streams labels at 200/s through predict and
# feedback of a fresh `python -m service run` (defaults, embedded server), River test-then-train
# on the same streams beside it; tables in bench_results/, spliced into BENCHMARKS.md.
.PHONY: bench-e2e
bench-e2e: $(STAMP)
	$(BIN)/python -m load_tests.bench_learning --markdown bench_results/learning.md --json bench_results/learning.json --benchmarks BENCHMARKS.md

# Only the streams of records (~4 min on 2 cores): Agrawal and STAGGER with concept changes,
# Telco churn in its given order, each declaring MNEMO_FEATURES; River beside it, per phase
# against the target (served >= best River - 0.02). Tables in bench_results/ only: `make
# bench-e2e` runs them too and splices the whole section.
.PHONY: bench-records
bench-records: $(STAMP)
	$(BIN)/python -m load_tests.bench_learning --scenarios agrawal stagger telco --markdown bench_results/records.md --json bench_results/records.json

# Models per process (~3.5 min on 2 cores): 1, 10 and 100 models (MNEMO_MODELS) served by one API
# process and trained by one learner, each N on a fresh private Valkey: memory of each process
# and of Redis per model, predict and learner throughput; the table spliced into BENCHMARKS.md.
.PHONY: bench-models
bench-models: $(STAMP)
	$(BIN)/python -m load_tests.bench_models --markdown bench_results/models.md --json bench_results/models.json --benchmarks BENCHMARKS.md
