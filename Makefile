# AIFA Workbench. Run as root on Debian 12: the roles install packages and start daemons.
SHELL := /bin/bash
VENV := /opt/aifa-workbench/venv
PLAYBOOK := cd ansible && ansible-playbook
PYTEST := $(VENV)/bin/python -m pytest
DEV := .venv

.PHONY: demo demo-sites demo-start demo-stop demo-status install cluster cluster-status cluster-down sites sites-status sites-down test test-unit dev lint format bench labextension bench-dask bench-ssh bench-remote bench-runtime bench-tunnels bench-polling bench-sites bench-login bench-courses bench-floods screenshots

demo: install            ## set everything up and run the hub in the foreground (Ctrl-C stops it)
	aifa-hubctl run

demo-sites: sites        ## the demo with the three simulated sites too: all four sites in the form
	ansible/sitesctl.sh authorize-demo
	AIFA_WORKBENCH_SETTINGS=/var/lib/aifa-sites/workbench-sites.yaml aifa-hubctl run

demo-start: install      ## same, in the background; returns once the hub answers
	aifa-hubctl start

demo-stop:               ## stop a background hub
	aifa-hubctl stop

demo-status:
	aifa-hubctl status

install:                 ## the local Slurm cluster, the venv and the hub (idempotent)
	ansible/bootstrap.sh
	$(PLAYBOOK) site.yml

cluster:                 ## only the local Slurm cluster (idempotent)
	ansible/bootstrap.sh
	$(PLAYBOOK) cluster.yml

cluster-status:
	ansible/clusterctl.sh status

cluster-down:
	ansible/clusterctl.sh down

sites:                   ## install, plus the three simulated sites (LUMI, JUPITER, Lucia), each in its own network namespace, with the job runtime (idempotent)
	ansible/bootstrap.sh
	$(PLAYBOOK) -i inventory/sites.yml sites.yml

sites-status:
	ansible/sitesctl.sh status

sites-down:
	ansible/sitesctl.sh down

test:                    ## everything the tests need, then the whole suite
	ansible/bootstrap.sh --test
	$(PLAYBOOK) -i inventory/sites.yml sites.yml
	$(PYTEST) tests --durations=25

screenshots: install     ## the README's screenshots (docs/screenshots/*.png), taken by the browser tests of the pages
	AIFA_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PYTEST) tests/integration/test_browser_pages.py

test-unit: dev           ## the fast tests alone, against this checkout as it is: no install, no Slurm, no hub (about 30 s)
	$(DEV)/bin/python -m pytest -q -m unit tests $(PYTEST_ARGS)

dev: $(DEV)/.installed    ## a developer's venv in .venv: this checkout installed editable, with the test tools and ruff (a minute or two, once)
$(DEV)/.installed: pyproject.toml
	python3 -c 'import ensurepip' 2>/dev/null || ansible/bootstrap.sh     # Debian's python3-venv, as root, once
	python3 -m venv $(DEV)
	$(DEV)/bin/pip install -q -e '.[test,dev]'
	touch $@

lint: dev                ## ruff: the rules and the format in pyproject.toml (seconds)
	$(DEV)/bin/ruff check .
	$(DEV)/bin/ruff format --check .

format: dev              ## ruff rewrites what `make lint` would refuse and can fix itself
	$(DEV)/bin/ruff check --fix .
	$(DEV)/bin/ruff format .

bench:                   ## benchmarks against plain batchspawner (about 15 minutes; BENCH_ARGS=--quick), then the remote sites' ones when they are up (about 18 more)
	$(VENV)/bin/python -m benchmarks.bench_spawner $(BENCH_ARGS)
	@if ansible/sitesctl.sh status >/dev/null 2>&1; then $(MAKE) --no-print-directory bench-sites BENCH_ARGS=; \
	else echo "bench: the simulated sites are not up (make sites starts them): their benchmarks were not run"; fi

bench-sites: bench-polling bench-ssh bench-remote bench-tunnels   ## the remote sites' benchmarks (needs make sites)

labextension:            ## rebuild the walltime guard (JupyterLab extension) into extensions/labextension/prebuilt
	cd extensions/labextension && npm install --no-audit --no-fund --loglevel=error && rm -rf prebuilt && \
	  node node_modules/@jupyterlab/builder/lib/build-labextension.js \
	    --core-path $(VENV)/lib/python3.11/site-packages/jupyterlab/staging . && \
	  sha256sum lib/index.js | cut -d' ' -f1 > prebuilt/SOURCE_SHA256

bench-login:             ## login -> spawn form through the demo's OIDC provider vs the per-user password login, N=20 each (about 1 minute)
	$(VENV)/bin/python -m benchmarks.bench_login $(BENCH_ARGS)

bench-courses:           ## 20 and 40 participants joining a course and starting at once vs the same burst without courses (about 10 minutes)
	$(VENV)/bin/python -m benchmarks.bench_courses $(BENCH_ARGS)

bench-floods:            ## another user's API p50/p99 and the hub's descriptors while one account holds 2,000 half-sent requests, as shipped vs unguarded (about 2 minutes)
	$(VENV)/bin/python -m benchmarks.bench_floods $(BENCH_ARGS)

bench-dask:              ## Dask presets vs hand-written SLURMCluster, sweep throughput (about 3 minutes)
	$(VENV)/bin/python -m benchmarks.bench_dask $(BENCH_ARGS)

bench-ssh:               ## commands on a simulated site's login node: one persistent connection vs a new ssh each (needs make sites)
	$(VENV)/bin/python -m benchmarks.bench_ssh $(BENCH_ARGS)

bench-polling:           ## watching 10/20/40 servers on the simulated sites: controller RPCs and SSH logins per minute vs plain batchspawner over ssh (about 7 minutes; needs make sites)
	$(VENV)/bin/python -m benchmarks.bench_polling $(BENCH_ARGS)

bench-tunnels:           ## per reach mode against direct: 100 MB download through the proxy, partition healed -> answer, gateway and tunnel-daemon memory at 40 tunnels (about 6 minutes; needs make sites)
	$(VENV)/bin/python -m benchmarks.bench_tunnels $(BENCH_ARGS)

bench-runtime:           ## install-runtime on each simulated site and environment: first install against a new release's layer alone (needs make sites; remakes the runtimes)
	$(VENV)/bin/python -m benchmarks.bench_runtime $(BENCH_ARGS)

bench-remote:            ## a spawn on each simulated site and environment against the local cluster, same hub, alternating, N=3 (needs make sites)
	$(VENV)/bin/python -m benchmarks.bench_remote --site lumi --environment lumi-stack $(BENCH_ARGS)
	$(VENV)/bin/python -m benchmarks.bench_remote --site lumi --environment pytorch-container $(BENCH_ARGS)
	$(VENV)/bin/python -m benchmarks.bench_remote --site lucia --environment easybuild-2023a $(BENCH_ARGS)
	$(VENV)/bin/python -m benchmarks.bench_remote --site jupiter --environment stages-2026 $(BENCH_ARGS)
