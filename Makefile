# pydock: `make run` and `make test` on a fresh Debian machine, as root.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOCK ?= /var/run/pydock.sock
PYDOCKD_FLAGS ?= -H unix://$(SOCK)
BUSYBOX_TAR := var/busybox.tar

# Everything pydock and its tests need from Debian. docker.io is only for `make bench COMPARE=dockerd`.
DEBIAN_PACKAGES := python3 python3-venv python3-dev gcc make ca-certificates curl openssl \
	runc crun tini iptables iproute2 kmod procps psmisc busybox-static \
	docker-registry skopeo apache2-utils docker-compose conntrack

.PHONY: help install run test lint typecheck unit integration openapi docs bench dist clean

help:
	@echo "make run      install everything, then run pydockd on $(SOCK)"
	@echo "make test     install everything, then lint, type check and run all tests"
	@echo "make install  install Debian and Python packages (idempotent)"
	@echo "make bench    side-by-side benchmarks (COMPARE=dockerd adds a real dockerd)"
	@echo "make docs     regenerate the README's table of commands and endpoints from the routers"
	@echo "make dist     single-file build: dist/pydockd (DIST=path to write it elsewhere)"

install: $(VENV)/.deps $(BUSYBOX_TAR)

# Debian packages: install what is missing (apt-get update first), nothing when all are there.
$(VENV)/.debian: Makefile
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update && apt-get install -y --no-install-recommends $$missing; \
	fi
	@if ! command -v docker >/dev/null; then \
	  echo "no docker CLI found: installing Debian's docker.io for its client (its daemon is not started)"; \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io; \
	  rm -f /usr/sbin/policy-rc.d; \
	fi
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@touch $@

$(VENV)/.deps: $(VENV)/.debian pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# busybox:latest built from Debian's busybox-static by pydock's own code: the first image, offline.
$(BUSYBOX_TAR): $(VENV)/.deps runtime/busybox_image.py
	@mkdir -p var
	$(BIN)/python -m runtime.busybox_image $@

run: install
	@set -m; $(BIN)/pydockd $(PYDOCKD_FLAGS) & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid' INT TERM; \
	until curl -sf --unix-socket $(SOCK) http://pydock/_ping >/dev/null; do \
	  kill -0 $$pid 2>/dev/null || exit 1; sleep 0.1; done; \
	if ! curl -sf --unix-socket $(SOCK) http://pydock/images/busybox:latest/json >/dev/null; then \
	  curl -sf --unix-socket $(SOCK) -X POST -H 'Content-Type: application/x-tar' \
	    --data-binary @$(BUSYBOX_TAR) 'http://pydock/images/load?quiet=1' >/dev/null \
	  && echo "loaded busybox:latest"; \
	fi; \
	echo "pydockd is running: export DOCKER_HOST=unix://$(SOCK)"; \
	wait $$pid

lint: $(VENV)/.deps
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(VENV)/.deps
	$(BIN)/mypy

unit: $(VENV)/.deps
	$(BIN)/pytest tests/unit -q

integration: install
	$(BIN)/pytest tests/integration -q

test: install lint typecheck
	$(BIN)/pytest tests -q

# Both are generated from the routers: a new route refreshes both (each has a drift test).
openapi: $(VENV)/.deps
	$(BIN)/python -m app.openapi
	$(BIN)/python -m app.endpoints --write

docs: $(VENV)/.deps
	$(BIN)/python -m app.endpoints --write

# Benchmarks (issue 9): bench/results/latest.{json,md,png}. COMPARE=dockerd adds a throwaway real
# dockerd; Debian's docker.io is installed for it only then (a policy-rc.d keeps its services from
# starting; one that was already there is put back).
bench: install $(VENV)/.bench-deps
ifeq ($(COMPARE),dockerd)
	@if ! command -v dockerd >/dev/null; then \
	  echo "installing Debian's docker.io for the comparison (its services are not started)"; \
	  saved=""; if [ -e /usr/sbin/policy-rc.d ]; then saved=/usr/sbin/policy-rc.d.pydock-bench; \
	    cp -p /usr/sbin/policy-rc.d $$saved; fi; \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y --no-install-recommends docker.io; rc=$$?; \
	  if [ -n "$$saved" ]; then mv $$saved /usr/sbin/policy-rc.d; else rm -f /usr/sbin/policy-rc.d; fi; \
	  exit $$rc; \
	fi
endif
	$(BIN)/python -m bench $(if $(COMPARE),--compare $(COMPARE))

# matplotlib (the chart) and py-spy (`python -m bench --profile DIR`): the `bench` extra.
$(VENV)/.bench-deps: $(VENV)/.deps pyproject.toml
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $@

# One executable zipapp (shiv): pydock + its Python dependencies, for the system's python3 (3.11+).
# Compiled modules are unpacked at first start to ~/.shiv (or $$SHIV_ROOT); see README.
DIST ?= dist/pydockd
# The sources are copied to a temp dir first: building in the checkout would leave build/ there.
dist: $(VENV)/.deps
	@mkdir -p $(dir $(DIST))
	@src=$$(mktemp -d); trap 'rm -rf "$$src"' EXIT; \
	cp -r pyproject.toml README.md app runtime netproxy "$$src"/ && \
	find "$$src" -name __pycache__ -prune -exec rm -rf {} + && \
	$(BIN)/shiv --reproducible --compressed --python '/usr/bin/env python3' --entry-point app.main:main \
	  --preamble contrib/dist-preamble.py --output-file $(DIST) -- -q --disable-pip-version-check "$$src"
	@echo "built $(DIST) for $$($(BIN)/python -c 'import sys; print("CPython %d.%d" % sys.version_info[:2])')"

clean:
	rm -rf dist build var *.egg-info .mypy_cache .ruff_cache .pytest_cache
