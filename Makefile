# Tasks for developers and CI. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .state/tools
UV := $(TOOLS)/uv-$(UV_VERSION)/bin/uv
PY := .venv/bin/python
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
# Which local stack up/run/down/status act on (healthcare/profiles.py); test and bench pick their own.
export HC_PROFILE ?= dev
PROFILES := dev test bench chaos

.PHONY: help install setup run up down status test test-unit test-deploy mutation histories lint fmt bench soak chaos lambda-package portal-client portal-dev clean distclean

help: ## List the tasks
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	@$(PYTHON) -m venv $(TOOLS)/uv-$(UV_VERSION)
	@$(TOOLS)/uv-$(UV_VERSION)/bin/pip install --quiet "uv==$(UV_VERSION)"

.venv/.synced: $(UV) pyproject.toml uv.lock
	@echo "python environment: syncing .venv from uv.lock"
	@$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: .venv/.synced ## Create or update the Python environment (.venv) from uv.lock

setup: install ## Install every local-stack component that is missing (PostgreSQL, Temporal, Kafka, S3, Lambda emulator)
	@$(PY) -m devstack setup

run: setup ## Start the whole stack in the foreground; Ctrl-C stops it
	@$(PY) -m devstack run

up: setup ## Start the whole stack in the background and wait until it is ready
	@$(PY) -m devstack up

down: ## Stop a background stack (HC_PROFILE=test make down stops the test stack)
	@$(PY) -m devstack down

status: ## Show each component of the stack and whether it answers
	@$(PY) -m devstack status

test: setup ## Run the whole suite against a test stack of its own (started if down, kept up; stopped on CI)
	@HC_PROFILE=test $(PY) -m devstack test

test-unit: install ## Run only the unit tests (no services, seconds)
	@$(PY) -m pytest tests/unit -q

test-deploy: setup ## Run only the deployment tests: chart, images, CloudFormation, a real kube-apiserver (no stack)
	@$(PY) -m pytest tests/deploy -q

mutation: install ## Mutation testing of the core modules against their fast tests (access rules and outbox rounds on the test stack, when up in this netns; niced; ARGS=--fresh, or ARGS="--only MODULE" for one module)
	@nice -n 10 $(PY) -m tests.mutation $(ARGS)

histories: install ## Run the workflow tests and store the histories of paths not stored yet (never replaces one)
	@$(PY) -m tests.workflows.capture $(ARGS)

lint: install ## ruff (lint + format check), mypy, and the import rules between folders (import-linter)
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@$(PY) -m mypy .
	@.venv/bin/lint-imports --no-logo

fmt: install ## Format the code
	@$(PY) -m ruff check --fix .
	@$(PY) -m ruff format .

bench: setup ## Run every benchmark on a bench stack of its own, removed afterwards (QUICK=1: short runs)
	@HC_PROFILE=bench $(PY) -m devstack bench $(if $(QUICK),--quick)

MINUTES ?= 30
soak: setup ## Booking → invoice load at 80% of the measured saturation for MINUTES (30); fails on memory growth or a backlog that never drains
	@HC_PROFILE=bench $(PY) -m devstack soak $(MINUTES)

portal-client: install ## Regenerate portal/openapi.json from the app and the portal's typed client from it
	@$(PY) -m api.schema --out portal/openapi.json
	@$(PY) -m devstack.portal
	@cd portal && npm run --silent generate-client

portal-dev: setup ## The portal on Vite's dev server (http://127.0.0.1:5173), the API (make up) proxied
	@$(PY) -m devstack.portal
	@cd portal && npm run dev

chaos: setup ## Kill and restart each component under a booking load on a chaos stack of its own, removed afterwards; prints the invariants table (ONLY="s3-down ...", S3_OUTAGE=seconds)
	@HC_PROFILE=chaos $(PY) -m devstack chaos $(if $(ONLY),--only $(ONLY)) $(if $(S3_OUTAGE),--s3-outage $(S3_OUTAGE))

lambda-package: install ## Build the deployable invoice-PDF Lambda zip (dist/invoice-pdf-lambda.zip)
	@$(PY) lambda/package.py

clean: ## Stop every profile's stack and delete their data (keeps installed tools)
	-@[ -x $(PY) ] && for p in $(PROFILES); do HC_PROFILE=$$p $(PY) -m devstack down; done
	rm -rf .state/data .state/logs .state/run $(foreach p,$(filter-out dev,$(PROFILES)),.state/$(p))

distclean: clean ## Delete data, tools and the Python environment
	rm -rf .state .venv
