# One entry point for a fresh machine: `make demo` and `make test` do all set-up themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv kafka-jars demo test test-unit bench schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

kafka-jars: venv
	$(BIN)/python -c "from streams.devkafka.jars import ensure_jars; print('Kafka jars in', ensure_jars())"

# KEEP=1: afterwards the broker, worker and gateway stay up for the web console (URL and keys printed) until Ctrl-C
demo: kafka-jars
	$(BIN)/ratewarden demo $(if $(filter 1,$(KEEP)),--keep)

test: kafka-jars
	$(BIN)/python -m pytest

test-unit: venv
	$(BIN)/python -m pytest tests/unit

bench: kafka-jars
	$(BIN)/python bench/limiter_bench.py

schemas: venv
	$(BIN)/python -m ratewarden.schema_files

clean:
	rm -rf var $(VENV) .pytest_cache
