# weave-fdp: every target installs what it needs first (scripts/install.sh is idempotent).
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: install install-vm demo test test-unit test-bpf test-netns test-podman test-ipam bench bench-mesh bench-sleeve-bound profile-sleeve fuzz chaos soak clean vm-box vm-up vm-check vm-test vm-down

install:
	@bash scripts/install.sh

demo: install
	@$(VENV)/bin/weave-fdp lab demo

# every pytest tier but Podman and IPAM's extra labs; of the chaos tier only its short scenarios
# (chaos_short). The multi-VM lab is no pytest tier: make vm-test (vagrant/check.sh).
test: install
	@$(PYTEST) tests -m "not podman and not ipam_modes and (not chaos or chaos_short)" $(PYTEST_ARGS)

test-unit: install
	@$(PYTEST) tests -m unit $(PYTEST_ARGS)

test-bpf: install
	@$(PYTEST) tests -m bpf $(PYTEST_ARGS)

test-netns: install
	@$(PYTEST) tests -m netns $(PYTEST_ARGS)

# all of IPAM's netns tests: also the observer, seed and cloned-name labs make test leaves out
test-ipam: install
	@$(PYTEST) tests/netns/test_ipam.py $(PYTEST_ARGS)

# coverage-guided fuzzing of every decoder of network and disk input: FUZZ_SECONDS per target
# (default 30), crashes saved under tests/fuzz_regressions/ (make test replays them)
fuzz:
	@WEAVE_FDP_EXTRAS=reliability bash scripts/install.sh
	@$(PY) -m tests.fuzz.run $(FUZZ_ARGS)

# fault injection over labs of routers (about 45 min; CHAOS_CYCLES, CHAOS_FLAP_SECONDS shorten it);
# prints what each scenario did and saw, then the summary table (docs/RELIABILITY.md)
chaos: install
	@$(PYTEST) tests/chaos -m chaos -s $(PYTEST_ARGS)

# Podman end to end with the CNI plugin and the Docker API path (installs podman, runc,
# busybox-static first; about 2 min)
test-podman:
	@WEAVE_FDP_PODMAN=1 bash scripts/install.sh
	@$(PYTEST) tests -m podman $(PYTEST_ARGS)

# 30 minutes of traffic and churn on a 4-host lab, sampled every minute (SOAK_MINUTES shortens it);
# writes docs/soak.csv and docs/soak.png, fails when something grows beyond noise
SOAK_MINUTES ?= 30
soak:
	@WEAVE_FDP_EXTRAS=reliability bash scripts/install.sh
	@$(PY) -m tests.chaos.soak --minutes $(SOAK_MINUTES) --out docs

bench: install
	@$(VENV)/bin/weave-fdp bench datapath
	@$(VENV)/bin/weave-fdp bench dns
	@$(VENV)/bin/weave-fdp bench ipam

# where one TCP stream's time goes in the sleeve: per-thread CPU and wake-ups of both forwarders,
# a perf profile of each forwarder thread (installs linux-perf first; about 20 s per run);
# PROFILE_ARGS="--password" for the encrypted sleeve (docs/SLEEVE.md)
PROFILE_ARGS ?=
profile-sleeve:
	@WEAVE_FDP_PROFILE=1 bash scripts/install.sh
	@$(PY) -m weave_fdp.bench.sleeve_profile --perf $(PROFILE_ARGS)

# one TCP stream through the sleeve against null forwarders in Python and C (installs gcc first;
# about 4 minutes): the ceiling of any forwarder of the sleeve's shape here (docs/SLEEVE.md)
BOUND_ARGS ?=
bench-sleeve-bound:
	@WEAVE_FDP_BOUND=1 bash scripts/install.sh
	@$(VENV)/bin/weave-fdp bench sleeve-bound $(BOUND_ARGS)

# the simulated mesh from 100 to 4,096 peers (about 40 min of CPU, one core;
# 9.3 GB of memory at 4,096): docs/mesh-scale.json and docs/mesh-scale.png (docs/SCALING.md)
MESH_SIZES ?= 100,500,1000,2000,4096
bench-mesh: install
	@$(VENV)/bin/weave-fdp bench mesh --sim $(MESH_SIZES) --real 0 --save docs/mesh-scale.json --plot docs/mesh-scale.png

# The multi-VM lab (Vagrant + libvirt; software emulation where KVM does not work):
# not part of `make test` (it takes far longer; see README "Multi-VM lab").
install-vm:
	@bash scripts/install-vm.sh

vm-box: install-vm
	@bash vagrant/box/build.sh

vm-up: install
	@bash vagrant/lab.sh up

vm-check:
	@bash vagrant/lab.sh check

vm-test: install
	@bash vagrant/lab.sh test

vm-down:
	@bash vagrant/lab.sh down

clean:
	-@$(VENV)/bin/weave-fdp lab down --all 2>/dev/null
	rm -rf $(VENV) .pytest_cache
