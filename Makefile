# Two commands matter (README): `make demo` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ALLURE_VERSION := 3.18.0
ALLURE := .allure/node_modules/.bin/allure
STAMP := $(VENV)/.installed

.PHONY: setup system-packages demo stack-demo test test-fast bench nightly nightly-beyond matrix schedule allure clean-stack \
        kind-images test-kind

setup: system-packages $(STAMP)

# apt only when a tool is missing (apt-get update first, as on a fresh machine)
system-packages:
	@missing=""; \
	for tool in redis-server:redis-server ip:iproute2 iptables:iptables unshare:util-linux nsenter:util-linux ps:procps \
	            setpriv:util-linux chromium:chromium; do \
	  command -v $${tool%%:*} >/dev/null 2>&1 || missing="$$missing $${tool##*:}"; \
	done; \
	$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e ".[kube,allure,dev]"
	@touch $(STAMP)

# The main job: the seed scenarios on the local backend; the HTML report lands in reports/latest/index.html.
demo: setup
	$(PY) -m pytest scenarios/test_guide.py -p no:cacheprovider --junitxml=reports/junit-demo.xml $(PYTEST_ARGS)
	@echo "report: reports/latest/index.html"

# Bring the local stack up, show what runs, query every proxy, tear down (even on failure or Ctrl-C).
stack-demo: setup
	@trap '$(PY) -m harness down' EXIT; \
	$(PY) -m harness up && \
	$(PY) -m harness status && \
	for url in $$($(PY) -m harness status --json | $(PY) -c 'import json,sys; print(" ".join(p["url"] for p in json.load(sys.stdin)["proxies"]))'); do \
	  printf '%s -> pid ' "$$url"; curl -s -m 5 "$$url"; echo; \
	done

# `make test` runs everything: the harness's tests, the seed scenarios and their controls, and the random
# schedule with its control on the shared stack, with a fixed seed (change it with SCHEDULE_SEED=...); then,
# in a session of its own once the shared stack is down, the composed example's scenarios (two Serve stacks
# with this app at once saturate a 2-core machine: its requests cross two deployments); last, in a session of its
# own, a two-cell matrix (GCS FT on Redis and on RocksDB, replica_failure each). All three always run; the
# target fails if any fails. `make schedule` runs the random schedule alone, on a stack of its own.
SCHEDULE_SEED ?= 1  # its short profile: KillReplica(head); KillWorkerPod(worker2) then FailHealthCheck(worker1)
OWN_APP := scenarios/test_own_app.py
MATRIX_LIVE := scenarios/test_matrix_live.py
# The main run includes tests/test_kube_apiserver.py (the kubernetes client against a real kube-apiserver and etcd,
# built from the Go module proxy first: cached in $(KIND_CACHE)/bin); kind itself is make test-kind's.
test: setup
	$(PY) cluster/kind/build_images.py --only apiserver etcd
	SERVE_CHAOS_SCHEDULE_SEED=$(SCHEDULE_SEED) $(PY) -m pytest -m "not nightly and not kind" --junitxml=reports/junit.xml --ignore=$(OWN_APP) --ignore=$(MATRIX_LIVE); \
	main=$$?; \
	$(PY) -m pytest --junitxml=reports/junit-own-app.xml $(OWN_APP); \
	own=$$?; \
	$(PY) -m pytest --junitxml=reports/junit-matrix.xml $(MATRIX_LIVE) -s; \
	matrix=$$?; \
	exit $$(( main != 0 ? main : own != 0 ? own : matrix ))

schedule: setup
	SERVE_CHAOS_SCHEDULE_SEED=$(SCHEDULE_SEED) $(PY) -m pytest scenarios/test_random_schedule.py $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not stack and not kind and not apiserver"

bench: setup
	$(PY) benchmarks/stack_bench.py
	$(PY) benchmarks/traffic_bench.py
	$(PY) benchmarks/agent_bench.py
	$(PY) benchmarks/locust_compare.py
	$(PY) benchmarks/observer_bench.py
	$(PY) benchmarks/suite_bench.py

# Repetition with statistics: the seed suite N times, pass rates and the spread of outage and recovery.
N ?= 5
nightly: setup
	$(PY) -m harness nightly --repeat $(N)
	SERVE_CHAOS_SCHEDULE_PROFILE=nightly $(PY) -m pytest scenarios/ -k random_schedule $(PYTEST_ARGS)
	$(PY) -m pytest $(OWN_APP) $(PYTEST_ARGS)

# Beyond the guide, repeated: every scenario of scenarios/test_beyond.py N times (the long holds too, which make
# test leaves out), the controls of the scenarios only this target runs (Redis without its data), then random
# schedules that draw the held faults as well (the `beyond` profile).
nightly-beyond: setup
	$(PY) -m harness nightly --repeat $(N) --scenarios scenarios/test_beyond.py
	$(PY) -m pytest scenarios/test_controls.py -m nightly $(PYTEST_ARGS)
	SERVE_CHAOS_SCHEDULE_PROFILE=beyond $(PY) -m pytest scenarios/test_random_schedule.py -k "not control" $(PYTEST_ARGS)

# The seed suite across a matrix (docs/matrix.md): Ray 2.60.0 and 2.59.0 (a venv each, built once and cached),
# GCS fault tolerance on Redis and on embedded RocksDB, Serve's proxy and HAProxy. 8 cells, each on a stack of its
# own, about 8 min a cell here; one grid in reports/matrix-<date>-<time>/index.html.
MATRIX_AXES ?= --axis ray=2.60.0,2.59.0 --axis gcs=redis,rocksdb --axis ingress=proxy,haproxy
matrix: setup
	$(PY) -m harness matrix $(MATRIX_AXES) -- --serve-chaos-replays=0

# kind with no image registry (docs/kubernetes.md): Docker's engine from Debian, then kind, Kubernetes, etcd, CoreDNS
# and KubeRay built from the Go module proxy, a kind node image on a debootstrap root, Ray's image from PyPI's
# wheels. Cached in ~/.cache/serve-chaos/kind (SERVE_CHAOS_KIND_CACHE); a time per part. Cold: 1101.9 s in all on
# 2026-12-02 (one run; Kubernetes' binaries 481 s); cached: 51 s.
KIND_CACHE ?= $(HOME)/.cache/serve-chaos/kind
KIND_SETTINGS := cluster/kube/kind-offline.toml
kind-images: setup
	$(PY) cluster/kind/build_images.py $(KIND_IMAGES_ARGS)

# On a kind cluster built from those images (the kind CLI from the cache first on PATH), with KubeRay's RayService:
# the backend's live tests (exec, relays to the pods, a pod kill, down), then the seed scenarios with the kind
# budgets. Each brings up its own cluster. A missing prerequisite fails, it never skips.
test-kind: kind-images
	PATH=$(KIND_CACHE)/bin:$$PATH $(PY) -m pytest tests/test_kube_live.py -m kind --kube-config $(KIND_SETTINGS) \
	  --junitxml=reports/junit-kind-live.xml -p no:cacheprovider -s $(PYTEST_ARGS); live=$$?; \
	PATH=$(KIND_CACHE)/bin:$$PATH $(PY) -m pytest scenarios/test_guide.py --backend kind --kube-config $(KIND_SETTINGS) \
	  --budgets cluster/kube/budgets-kind.toml --junitxml=reports/junit-kind.xml -p no:cacheprovider $(PYTEST_ARGS); \
	guide=$$?; exit $$(( live != 0 ? live : guide ))

$(ALLURE):
	npm install --prefix .allure --no-save --no-audit --no-fund allure@$(ALLURE_VERSION)

# Run the tests with Allure results, then render them into one file that opens from disk, offline.
allure: setup $(ALLURE)
	rm -rf reports/allure-results reports/allure-report
	$(PY) -m pytest --alluredir=reports/allure-results $(PYTEST_ARGS); status=$$?; \
	ALLURE_NO_ANALYTICS=true $(ALLURE) allure2 --single-file --output reports/allure-report reports/allure-results && \
	echo "Allure report: reports/allure-report/index.html"; exit $$status

# Remove a stack left up (e.g. after `--keep-stack`) and anything a crashed run left behind.
clean-stack: setup
	$(PY) -m harness down
