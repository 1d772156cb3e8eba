# Development and test targets for the acmeops.housekeeping collection.
# Run "make help" for the list. Only "make install" contacts a package
# registry; the test targets run without network access after it.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Python 3.11 interpreter that creates the virtual environments.
PYTHON ?= python3
# Python version that ansible-test runs the sanity and unit tests with.
ANSIBLE_TEST_PYTHON ?= 3.11
# Number of pytest-xdist workers for "make pytest".
PYTEST_WORKERS ?= 2
# Extra arguments for "make pytest", for example PYTEST_ARGS='-k report -x'.
PYTEST_ARGS ?=
# Playbook that "make smoke-oldest" runs with ansible-core 2.16.
SMOKE_PLAYBOOK ?= tests/smoke/smoke.yml

VENV := $(CURDIR)/.venv
VENV_OLDEST := $(CURDIR)/.venv-2.16
COLLECTIONS_PATH := $(CURDIR)/build/collections
INSTALL_STAMP := build/.install-stamp
# tests/unit/requirements.txt, if present, lists extra packages that
# "ansible-test units" installs into its virtual environment.
INSTALL_INPUTS := tests/requirements.txt tests/requirements-oldest.txt $(wildcard tests/unit/requirements.txt) \
	scripts/install.sh scripts/ansible_test.sh scripts/get_pip_standin.py scripts/sync_tree.py
LINT_PATHS := $(wildcard playbooks roles)
PYTEST_PATHS := $(wildcard tests/unit tests/functional tests/django_lab tests/django_backends tests/differential tests/role tests/reliability tests/benchmarks)

# Makes the collection visible to Ansible and importable in Python as
# ansible_collections.acmeops.housekeeping. The targets that run modules also
# set ANSIBLE_PYTHON_INTERPRETER, because interpreter discovery can pick a
# python3.x command on the PATH that does not work (a pyenv shim).
COLLECTION_ENV := ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS_PATH) PYTHONPATH=$(COLLECTIONS_PATH)

.PHONY: help install sanity-tree sanity units pytest smoke-oldest lint target-python test demo clean

help: ## Show this list of targets
	@echo 'Targets:'
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' | \
		while IFS=$$'\t' read -r target text; do printf '  %-14s %s\n' "$$target" "$$text"; done
	@echo 'Variables: PYTHON=$(PYTHON) ANSIBLE_TEST_PYTHON=$(ANSIBLE_TEST_PYTHON)' \
		'PYTEST_WORKERS=$(PYTEST_WORKERS) PYTEST_ARGS=$(PYTEST_ARGS) SMOKE_PLAYBOOK=$(SMOKE_PLAYBOOK)'

install: ## Create .venv and .venv-2.16, link the collection, warm ansible-test (needs PyPI)
	PYTHON=$(PYTHON) ANSIBLE_TEST_PYTHON=$(ANSIBLE_TEST_PYTHON) scripts/install.sh
	@touch $(INSTALL_STAMP)

# Runs the install quietly, and only when an input changed since the last one.
$(INSTALL_STAMP): $(INSTALL_INPUTS)
	PYTHON=$(PYTHON) ANSIBLE_TEST_PYTHON=$(ANSIBLE_TEST_PYTHON) QUIET=1 scripts/install.sh
	@touch $@

sanity-tree: ## Copy the git-visible files into the ansible-test trees under build/
	scripts/ansible_test.sh 2.19 sync
	scripts/ansible_test.sh 2.16 sync

sanity: ## Run ansible-test sanity with ansible-core 2.19, then 2.16
	scripts/ansible_test.sh 2.19 sanity --venv --python $(ANSIBLE_TEST_PYTHON)
	scripts/ansible_test.sh 2.16 sanity --venv --python $(ANSIBLE_TEST_PYTHON)

units: ## Run ansible-test units (tests/unit) with ansible-core 2.19
	scripts/ansible_test.sh 2.19 units --venv --python $(ANSIBLE_TEST_PYTHON)

pytest: ## Run pytest on tests/unit and tests/functional (PYTEST_ARGS adds arguments)
	@test -n '$(PYTEST_PATHS)' || { echo 'error: neither tests/unit nor tests/functional exists' >&2; exit 1; }
	@xdist_args=''; \
	if $(VENV)/bin/python -c 'import xdist' 2>/dev/null; then xdist_args='-n $(PYTEST_WORKERS)'; fi; \
	set -x; \
	PATH=$(VENV)/bin:$$PATH $(COLLECTION_ENV) ANSIBLE_PYTHON_INTERPRETER=$(VENV)/bin/python \
		$(VENV)/bin/python -m pytest $$xdist_args $(PYTEST_ARGS) $(PYTEST_PATHS)

smoke-oldest: ## Run tests/smoke/smoke.yml (SMOKE_PLAYBOOK) on localhost with ansible-core 2.16
	@test -f $(SMOKE_PLAYBOOK) || { echo "error: $(SMOKE_PLAYBOOK) not found" >&2; exit 1; }
	$(COLLECTION_ENV) ANSIBLE_PYTHON_INTERPRETER=$(VENV_OLDEST)/bin/python \
		$(VENV_OLDEST)/bin/ansible-playbook -i localhost, -c local $(SMOKE_PLAYBOOK)

lint: ## Run ansible-lint (offline, production profile) and antsibull-changelog lint
ifeq ($(LINT_PATHS),)
	@echo 'lint: neither playbooks/ nor roles/ exists; skipping ansible-lint'
else
	PATH=$(VENV)/bin:$$PATH $(COLLECTION_ENV) ANSIBLE_PYTHON_INTERPRETER=$(VENV)/bin/python \
		$(VENV)/bin/ansible-lint --offline --profile production $(LINT_PATHS)
endif
	$(VENV)/bin/antsibull-changelog lint

target-python: ## Check statically that plugins/ needs no Python newer than 3.9 (vermin)
	$(VENV)/bin/vermin --no-tips --violations --target=3.9- plugins/

.PHONY: dbservers-start dbservers-stop

dbservers-start: ## Start the PostgreSQL and MariaDB test servers (scripts/dbservers.sh)
	scripts/dbservers.sh start

dbservers-stop: ## Stop the PostgreSQL and MariaDB test servers
	scripts/dbservers.sh stop

# The database servers run from before pytest to the end of the target, and
# their connection settings (ACMEOPS_PG_*, ACMEOPS_MYSQL_*) are exported to
# the sub-makes. The EXIT trap stops the servers also when a step fails or
# make is interrupted, and keeps the exit status of the failed step.
test: $(INSTALL_STAMP) ## Install if needed, then run all checks and tests
	$(MAKE) --no-print-directory target-python
	trap 'status=$$?; if ! scripts/dbservers.sh stop && [ $$status = 0 ]; then status=1; fi; exit $$status' EXIT; \
	trap 'exit 130' INT; trap 'exit 143' TERM; \
	scripts/dbservers.sh start; \
	eval "$$(scripts/dbservers.sh env)"; \
	$(MAKE) --no-print-directory pytest; \
	$(MAKE) --no-print-directory sanity; \
	$(MAKE) --no-print-directory units; \
	$(MAKE) --no-print-directory lint; \
	$(MAKE) --no-print-directory smoke-oldest

# N sets the number of orders of the one database size to measure (make bench N=100000).
# Without N the benchmark runs 10000, 100000 and 1000000 orders and the fleet run, which
# takes hours and, by an estimate from the 100,000-order run, about 22 GB of disk on a
# 2-core machine; docs/benchmarks.md has the details.
.PHONY: bench
bench: $(INSTALL_STAMP) ## Run the benchmarks (benchmarks/run.py); N=100000 measures one size
	$(COLLECTION_ENV) $(VENV)/bin/python benchmarks/run.py $(if $(N),--sizes $(N),--fleet)

demo: $(INSTALL_STAMP) ## Install if needed, then run scripts/demo.sh
	$(COLLECTION_ENV) ANSIBLE_PYTHON_INTERPRETER=$(VENV)/bin/python PATH=$(VENV)/bin:$$PATH bash scripts/demo.sh

clean: ## Delete build/, the virtual environments and test caches
	rm -rf build .venv .venv-2.16 tests/output .pytest_cache .hypothesis .ansible
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
