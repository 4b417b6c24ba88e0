# The one task runner. CI (.ci/run) calls `make test`, exactly as the README says.
CARGO ?= cargo

.PHONY: setup build image demo fakes captures bench test lint leftovers

# What a fresh Debian machine lacks for a run (docker.io, iptables, mmdebstrap, …) and a
# running dockerd; the same script .ci/run uses.
setup:
	./scripts/host-setup.sh demo

build:
	$(CARGO) build --release

image: build
	./target/x86_64-unknown-linux-gnu/release/idagent image build

# The main job: the multi-language audit — Python, Node.js and Go victims in sealed guests,
# against local fake upstreams — and its PASS/FAIL verdict.
demo: setup build
	./target/x86_64-unknown-linux-gnu/release/idagent audit

# Hermetic fake www.google.com / api.openai.com for your own runs (prints the flags to pass).
fakes:
	$(CARGO) run --release -p idagent-fakes -- --dir captures/fakes

# Reference captures of the three victims (see captures/README.md).
captures: build
	./scripts/regen-captures.sh

bench:
	$(CARGO) bench --bench interceptor

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every test: lints, unit tests, and the end-to-end tests that start real containers.
# Needs root and a Docker Engine. Two test threads: each e2e test runs its own guest.
test: lint
	$(CARGO) test --workspace -- --test-threads=2
	$(MAKE) leftovers

# Fails if any run left a container, control folder or TUN device behind.
leftovers:
	@left=$$(docker ps -aq --filter label=idagent | wc -l); \
	 if [ "$$left" -ne 0 ]; then echo "leftovers: $$left idagent container(s)"; docker ps -a --filter label=idagent; exit 1; fi
	@if [ -d /run/idagent ] && [ -n "$$(ls -A /run/idagent)" ]; then echo "leftovers: /run/idagent not empty"; ls -la /run/idagent; exit 1; fi
	@nets=$$( (docker network ls -q --filter label=idagent; docker network ls -q --filter label=idagent-test) | wc -l); \
	 if [ "$$nets" -ne 0 ]; then echo "leftovers: $$nets idagent network(s)"; docker network ls; exit 1; fi
	@if ip -o link show type tun | grep -q .; then echo "leftovers: TUN device in the host namespace"; exit 1; fi
	@if [ -n "$$(ip netns list)" ]; then echo "leftovers: network namespaces: $$(ip netns list)"; exit 1; fi
	@if grep -q idagent-test /proc/self/mountinfo; then echo "leftovers: test mounts"; grep idagent-test /proc/self/mountinfo; exit 1; fi
	@echo "leftovers: none"
