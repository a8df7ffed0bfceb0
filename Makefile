# One command surface: the README and CI use exactly these targets.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install provision up test lint typecheck-view bench cluster cluster-down

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Docker engine (installed and started when missing) and the locally built images.
provision:
	bash scripts/provision

# Runs tether: Postgres in Docker, the API and the operator in one process.
up: install provision
	$(BIN)/tether up

test: install provision
	$(BIN)/pytest

# A Docker Swarm of NODES nodes on this machine (root), beside the main Docker engine, which it
# leaves alone: README.md, "A Swarm cluster on one machine".
NODES ?= 3
cluster: provision
	bash scripts/swarm-cluster up $(NODES)

cluster-down:
	bash scripts/swarm-cluster down

# mypy cannot follow setuptools' editable import hook: it checks a view of the folders under their
# package names (see [tool.mypy] in pyproject.toml).
typecheck-view:
	mkdir -p .typecheck/tether
	for d in api operator cli; do ln -sfn ../../$$d .typecheck/tether/$$d; done

lint: install typecheck-view
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONPATH=.typecheck $(BIN)/lint-imports

# Benchmarks against raw Docker, docker-compose and direct SQL (about 30 min): docs/benchmarks.md
bench: install provision
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	bash bench/provision
	$(BIN)/python bench/run.py
