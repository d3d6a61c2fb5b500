# typeahead: every command a new machine needs. Python 3.11+, redis-server for the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
AOL := $(SHARED)/data/typeahead/aol2006_q1m_counts.tsv.gz
DOCS := $(SHARED)/data/docs/squad2_dev_wikipedia_paragraphs.jsonl.gz
INDEX ?= indexes/aol
HOST ?= 127.0.0.1
PORT ?= 8080
WORKERS ?= 2
export HF_HUB_OFFLINE := 1

.PHONY: setup setup-dev setup-bench index run test lint typecheck unit bench slo chaos chaos-cluster \
	fuzz clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Serving needs no torch: the student model runs on numpy + tokenizers.
setup: $(BIN)/python
	$(BIN)/pip install -q -e '.[loadtest]'

# Tests also exercise distillation, so they need the training extra (torch 2.13.0 CPU build),
# and drive the demo page in Debian's chromium (installed here when missing and we are root).
setup-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[loadtest,train,parquet,dev]'
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium not installed: the browser test will be skipped"

# The served index: AOL queries with count >= 3 (the privacy floor) plus the SQuAD documents.
$(INDEX)/manifest.json: | setup
	$(BIN)/typeahead build-index --corpus $(AOL) --text-col query --weight-col count_total \
		--min-count 3 --docs $(DOCS) --out $(INDEX)

index: $(INDEX)/manifest.json

run: setup index
	$(BIN)/typeahead serve --index $(INDEX) --host $(HOST) --port $(PORT) --workers $(WORKERS)

lint:
	$(BIN)/ruff check typeahead loadtest chaos tests bench
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy

unit:
	$(BIN)/pytest -q

test: setup-dev
	$(MAKE) lint typecheck unit

# Benchmarks also compare the suggestion policy with profanity libraries (the bench extra).
setup-bench: $(BIN)/python
	$(BIN)/pip install -q -e '.[loadtest,bench]'

bench: setup-bench index
	$(BIN)/python bench/bench_lexical.py
	$(BIN)/python bench/bench_qac.py
	$(BIN)/python bench/bench_answers.py --index $(INDEX)
	$(BIN)/python bench/bench_http.py --index $(INDEX)
	$(BIN)/python bench/bench_safety.py --index $(INDEX)

slo: setup index
	$(BIN)/python -m loadtest suite --index $(INDEX)

# Differential fuzzing of the keystroke fast path against aiohttp's parsers (100,000 requests).
fuzz: setup-dev
	$(BIN)/python -m tests.http_fuzz --count 100000

# Fault injection against real processes (API workers, workers, redis-server, vLLM stand-in).
chaos: setup-dev
	$(BIN)/python -m chaos --markdown chaos.md --json chaos.json

# The same against a Redis Cluster (3 primaries, 3 replicas; needs redis-cli): a primary killed
# under load instead of one Redis stopped and stalled.
chaos-cluster: setup-dev
	$(BIN)/python -m chaos --redis-cluster --markdown chaos-cluster.md --json chaos-cluster.json

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
