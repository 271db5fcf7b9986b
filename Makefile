# queueops.rollback — developer entry points. `make test` sets up whatever is missing first.
SHELL := /bin/bash
export CONTAINERS_CONF := $(CURDIR)/.config/containers.conf
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.cache/collections
export MOLECULE_GLOB := molecule/*/molecule.yml
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: help demo demo-clean test setup lint sanity pytest unit integration molecule faults build ee bench clean

help:
	@echo "make demo         a deploy that fails and rolls back by itself, on a local sandbox fleet, with its report"
	@echo "make demo-clean   remove everything make demo made (containers, network, files)"
	@echo "make test         set up what is missing, then every check, with a summary"
	@echo "make setup        apt packages, .venv, collections, local container image"
	@echo "make lint         ruff and ansible-lint (production profile)"
	@echo "make sanity       ansible-test sanity"
	@echo "make pytest       unit and integration tests (real redis-server and workers)"
	@echo "make molecule     every Molecule scenario (podman, systemd in the containers)"
	@echo "make faults       the fault scenarios (faults/): killed workers and controllers, a second controller, stale pauses"
	@echo "make build        build the collection tarball and install it in a scratch path"
	@echo "make ee           the execution environment's build context (ansible-builder create)"
	@echo "make bench        the benchmarks (ratios against a baseline measured in the same run)"

demo:
	@hack/demo.sh

demo-clean:
	@hack/demo-clean.sh

test:
	@hack/test.sh

setup:
	@hack/bootstrap.sh

lint: setup
	ruff check . && ruff format --check .
	ansible-lint

sanity: setup
	hack/sanity.sh

pytest: setup
	python -m pytest -n 2 --dist loadfile

unit: setup
	python -m pytest tests/unit

integration: setup
	python -m pytest tests/integration

molecule: setup
	molecule test --all

faults: setup
	@mkdir -p .cache/test-logs; rm -f .cache/test-logs/fleet-faults-*; start=$$SECONDS; \
	MOLECULE_GLOB='faults/molecule/*/molecule.yml' NO_COLOR=1 molecule test --all 2>&1 | tee .cache/test-logs/faults.log; \
	rc=$${PIPESTATUS[0]}; cat .cache/test-logs/fleet-faults-*-cases.txt .cache/test-logs/fleet-faults-*-transfers.txt 2>/dev/null; \
	[ $$rc = 0 ] || python -m tests.support.failed_tasks .cache/test-logs/faults.log; \
	echo "make faults: $$([ $$rc = 0 ] && echo ok || echo FAILED) in $$((SECONDS - start)) s"; exit $$rc

build: setup
	hack/build-and-install.sh

ee: setup
	hack/ee-context.sh

bench: setup
	@for b in benchmarks/bench_*.py; do echo "==> $$b"; python "$$b" || exit 1; done

clean:
	rm -rf .cache/test-logs .cache/ansible-tmp tests/output .pytest_cache .ruff_cache
