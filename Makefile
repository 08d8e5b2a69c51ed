# The two commands a newcomer needs (see README):
#   make run    set up .venv and run the embedded default experiment (harness run --all)
#   make test   set up .venv (and .venv-study for the unsloth adapters) and run every test
VENV ?= .venv

.PHONY: run test test-main test-study setup bench

setup:
	bash scripts/setup.sh $(VENV)

run: setup
	$(VENV)/bin/harness run --all

test: test-main test-study

test-main: setup
	$(VENV)/bin/python -m pytest -q --ignore=tests/study tests examples/harness-plugin-example/tests

test-study:
	bash scripts/study-env.sh
	.venv-study/bin/python -m pytest -q tests/study

bench: setup
	$(VENV)/bin/python bench/run_default.py
