# The two commands that set everything up on a fresh machine:
#   make demo   runs the whole flow on the embedded emulator and broker
#   make test   runs lint, types and the tests (real broker and emulator)
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml lab/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -e ./lab
	touch $@

demo: $(VENV)/.installed
	$(PY) -m bridgelab.demo $(ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check bridge lab tests bench
	$(PY) -m ruff format --check bridge lab tests bench
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache

test: lint
	$(PY) -m pytest $(ARGS)

bench: $(VENV)/.installed
	$(PY) -m bench.stream_throughput $(ARGS)
	$(PY) -m bench.sink_paths
	$(PY) -m bench.journal_kafka
	$(PY) -m bench.journal_stream --also-flush-ms 10 --also-rates 200,2000
	$(PY) -m bench.mapping_codec
	$(PY) -m bench.standby

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
