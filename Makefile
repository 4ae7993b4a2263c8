# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format openapi bench mutate fuzz clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, so the dependency below is already satisfied. On this project's machines
	# the pin resolves to the CPU build on disk; elsewhere pass TORCH_INDEX_URL.
	$(BIN)/python -m pip install --quiet -c constraints.txt $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m service serve

# The API suite a second time, against the Ray backend on a local Ray cluster.
RAY_API_TESTS := tests/service/test_images.py tests/service/test_image_errors.py \
	tests/service/test_trainings.py tests/service/test_models.py \
	tests/service/test_open_inference.py tests/service/test_registry.py

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --executor=ray -m 'not local_backend' $(RAY_API_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

openapi: $(STAMP)
	$(BIN)/python -m service openapi > openapi.json

bench: $(STAMP)
	$(BIN)/python bench/images.py

# The schemathesis test of `make test` (tests/service/test_schema_fuzz.py), longer: 100
# random requests an operation after the examples and edge cases (over 5,000 in all).
FUZZ_EXAMPLES ?= 100
FUZZ_SEED ?= 20261203
fuzz: $(STAMP)
	TENSORLENS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) TENSORLENS_FUZZ_SEED=$(FUZZ_SEED) \
		$(BIN)/python -m pytest tests/service/test_schema_fuzz.py

# Mutation testing (tests/mutate.py), not part of `make test`: hours on 2 cores. Each module
# runs against its own tests in .mutmut/<module>/, resumes where it stopped, and the report
# of the mutants no test kills lands in .mutmut/report.md. One module: MUTATE=workers/pool.py;
# its survivors again, after adding tests: MUTATE="--recheck workers/pool.py".
mutate: $(STAMP)
	$(BIN)/python -m tests.mutate $(MUTATE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mutmut
