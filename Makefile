# modelship: every entry point a user or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
CLUSTER     := $(VENV)/bin/modelship-cluster
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@scripts/bootstrap-venv.sh "$(VENV)"
	@touch "$@"

.PHONY: venv
venv: $(STAMP) ## Create .venv and install modelship with its dev tools

.PHONY: system-deps
system-deps: ## Install the Debian packages the local cluster needs (iptables, prometheus, ...)
	@scripts/system-deps.sh

.PHONY: binaries
binaries: venv ## Build (or reuse cached) Kubernetes, etcd and helm binaries
	@$(CLUSTER) build

.PHONY: lint
lint: venv ## ruff (lint + format check) and mypy on the pure core
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: test
test: venv system-deps binaries lint ## Lint, then every test (unit, integration, end to end on the local cluster)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: generate
generate: venv ## Regenerate the CRD, RBAC files, chart files, docs/reference.md and manifests/modelship.yaml
	$(PY) -m modelship_operator.generate

.PHONY: demo
demo: venv system-deps binaries ## The live demo: local cluster, operator via Helm, a canary promoted and one rolled back
	$(VENV)/bin/modelship-demo $(DEMO_ARGS)

.PHONY: cluster-up
cluster-up: venv system-deps binaries ## Start the local cluster; prints the KUBECONFIG export last
	@$(CLUSTER) up

.PHONY: cluster-down
cluster-down: venv ## Stop the local cluster and remove its data
	@$(CLUSTER) down

.PHONY: bench
bench: venv ## Run the benchmarks under bench/ (side by side, ratios)
	@for b in bench/run_*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(PY) "$$b" || exit 1; done

.PHONY: images
images: ## Build the operator, serving and router images (needs docker or podman)
	@scripts/build-images.sh

.PHONY: clean
clean: ## Remove the virtual environment and caches inside the tree
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
