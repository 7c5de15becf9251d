# modelship: every entry point a user or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed-$(shell cat pyproject.toml client/pyproject.toml requirements/lock.txt | sha256sum | cut -c1-12)
CLUSTER     := $(VENV)/bin/modelship-cluster
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml client/pyproject.toml requirements/lock.txt
	@scripts/bootstrap-venv.sh "$(VENV)"
	@touch "$@"

.PHONY: venv
venv: $(STAMP) ## Create .venv and install modelship with its dev tools

.PHONY: system-deps
system-deps: ## Install the Debian packages the local cluster and the images need (iptables, buildah, ...)
	@scripts/system-deps.sh

.PHONY: binaries
binaries: venv ## Build (or reuse cached) Kubernetes, etcd, helm, crictl, Prometheus, Prometheus Operator, SeaweedFS, metrics-server and kube-router binaries
	@$(CLUSTER) build

.PHONY: lint
lint: venv ## ruff (lint + format check) and mypy on the pure core
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: test
test: venv system-deps binaries images lint ## Lint, then every test (unit, integration, end to end on the local cluster)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: generate
generate: venv ## Regenerate the CRD, RBAC files, chart files, docs/reference.md and manifests/modelship.yaml
	$(PY) -m modelship_operator.generate

.PHONY: grpc-stubs
grpc-stubs: venv ## Regenerate the gRPC messages (oip/) from serving/proto/grpc_predict_v2.proto
	@PYTHON=$(PY) scripts/grpc-stubs.sh

.PHONY: demo
demo: venv system-deps binaries images ## The live demo: local cluster, operator via Helm, a canary promoted and one rolled back
	$(VENV)/bin/modelship-demo $(DEMO_ARGS)

.PHONY: cluster-up
cluster-up: venv system-deps binaries images ## Start the local cluster; prints the KUBECONFIG export last
	@$(CLUSTER) up

.PHONY: cluster-down
cluster-down: venv ## Stop the local cluster and remove its data
	@$(CLUSTER) down

.PHONY: bench
bench: venv ## Run the benchmarks under bench/ (side by side, ratios)
	@for b in bench/run_*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(PY) "$$b" || exit 1; done

.PHONY: lock
lock: ## Re-resolve requirements/lock.txt (UPGRADE=1 to take new versions) and the images' subsets
	@# Only uv is needed: a dependency just added to pyproject.toml is not in the old lock yet,
	@# so a full `make venv` would fail its pip check before the lock could be re-resolved.
	@[ -x "$(VENV)/bin/uv" ] || $(MAKE) --no-print-directory venv
	@scripts/lock.sh

# Daemonless by default (buildah on a Debian base made here, cached by inputs: docs/images.md).
# CONTAINER_ENGINE=docker builds the three component images and the test image with docker.
CONTAINER_ENGINE ?=
IMAGE_VERSION := $(shell sed -nE 's/^version = "([^"]+)"/\1/p' pyproject.toml | head -1)
.PHONY: images
images: ## Build (or reuse cached) container images: modelship's and the test bed's (IMAGES="serving router")
ifeq ($(CONTAINER_ENGINE),)
	@$(MAKE) --no-print-directory venv system-deps
	@$(CLUSTER) images build $(IMAGES)
else
	@for c in operator serving router; do \
	  echo "==> $(CONTAINER_ENGINE) build modelship/$$c:$(IMAGE_VERSION)"; \
	  $(CONTAINER_ENGINE) build -f $$c/Dockerfile -t docker.io/modelship/$$c:$(IMAGE_VERSION) . || exit 1; \
	done
	$(CONTAINER_ENGINE) build -f images/testbed/Containerfile -t localhost/modelship-testbed/testbed:$(IMAGE_VERSION) .
endif

.PHONY: clean
clean: ## Remove the virtual environment and caches inside the tree
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
