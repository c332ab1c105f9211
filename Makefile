# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint typecheck bench clean sdk-table arm-check

$(BIN)/lensbox: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[dev,grpc,clients]"
	touch $@

## Set up, build the bundled sample catalog, and search it with a camera-like photo.
demo: $(BIN)/lensbox
	$(BIN)/lensbox build examples/sample-catalog -o sample.lbx
	$(BIN)/lensbox search sample.lbx examples/sample-queries/coffee-photo.jpg examples/sample-queries/card-04-photo.jpg

## Set up and run the test suite (what CI runs).
test: $(BIN)/lensbox
	LENSBOX_REQUIRE_BOTH_RUNTIMES=1 $(BIN)/python -m pytest

## Lint and format check (CI runs this before the tests).
lint: $(BIN)/lensbox
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## mypy (with the pydantic plugin) on the installed packages. The folders map onto lensbox.*
## only through package-dir, so they are linked under build/typecheck/lensbox/ for mypy.
typecheck: $(BIN)/lensbox
	mkdir -p build/typecheck/lensbox
	for d in device index_builder models; do ln -sfn ../../../$$d build/typecheck/lensbox/$$d; done
	$(BIN)/mypy -p lensbox.device -p lensbox.index_builder -p lensbox.models

## The suite without the slow tests, for the inner loop.
test-fast: $(BIN)/lensbox
	$(BIN)/python -m pytest -m "not slow" -q

clean:
	rm -rf sample.lbx .pytest_cache

## Run the official-SDK tests and write docs/sdk-compatibility.md from that run.
sdk-table: $(BIN)/lensbox
	rm -f .sdk-results.jsonl
	LENSBOX_SDK_RESULTS=$(CURDIR)/.sdk-results.jsonl $(BIN)/python -m pytest -q tests/test_sdk_alibaba.py tests/test_sdk_huawei.py tests/test_sdk_clarifai.py tests/test_sdk_grpc.py
	$(BIN)/python -m tests.sdk_support .sdk-results.jsonl > docs/sdk-compatibility.md
	rm -f .sdk-results.jsonl

## Install and run on an emulated Raspberry Pi OS 64-bit (arm64, root needed; ~30-60 min, not
## part of `make test`): see docs/arm-check.md. Run before each release and weekly.
arm-check:
	systemd/arm64/arm_check.sh
