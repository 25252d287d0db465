# runvoy — the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
DATA_DIR ?= $(CURDIR)/.data
LISTEN ?= 127.0.0.1:8080
GCP_DATA_DIR ?= $(CURDIR)/.data-gcp
GCP_LISTEN ?= 127.0.0.1:8090
RELEASE_BIN := target/release
# Statically linked binaries for the container images (`make static-bins`).
STATIC_TARGET := x86_64-unknown-linux-gnu
STATIC_BIN := target/$(STATIC_TARGET)/release
# `make images`: the images are $(IMAGE_REPO)/runvoyd:$(IMAGE_TAG) and
# $(IMAGE_REPO)/runvoy-sidecar:$(IMAGE_TAG); with IMAGE_REPO empty, runvoyd:dev and
# runvoy-sidecar:dev. E.g. IMAGE_REPO=us-central1-docker.pkg.dev/PROJECT/runvoy IMAGE_TAG=latest.
IMAGE_REPO ?=
IMAGE_TAG ?= dev
DEBUG_BIN := target/debug

.PHONY: fuzz fuzz-smoke fuzz-tool test-api-schema run stop run-gcp-local stop-gcp-local deps build build-release runner-static static-bins images test-images test test-gcp-suites docker-test-images test-docker-suites test-rust test-web lint lint-terraform fmt bench emulators clean

## deps: install what runvoy needs on this machine (bubblewrap for isolation; best effort).
deps:
	@bash scripts/deps.sh runtime

build:
	$(CARGO) build --workspace --bins

build-release:
	$(CARGO) build --release --workspace --bins

## runner-static: the statically linked runner alone
## (target/x86_64-unknown-linux-gnu/release/runvoy-runner; `static-bins` builds it too).
runner-static:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build -p runvoy-runner --release --target $(STATIC_TARGET)

## static-bins: runvoyd, runvoy-sidecar and runvoy-runner statically linked (glibc, +crt-static)
## in $(STATIC_BIN), for the FROM scratch images.
static-bins:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target $(STATIC_TARGET) -p runvoyd -p runvoy-sidecar -p runvoy-runner --bins

## images: the runvoyd and runvoy-sidecar images (deploy/docker) from the static binaries.
images: static-bins
	@bash scripts/images.sh "$(STATIC_BIN)" "$(IMAGE_REPO)" "$(IMAGE_TAG)"

## test-images: builds the images under test tags and checks they start and work (needs a
## Docker engine; fails when none answers); removes what it created.
test-images:
	@bash scripts/test-images.sh --engine-only
	$(MAKE) --no-print-directory static-bins
	@bash scripts/test-images.sh "$(STATIC_BIN)"

## run: build, start runvoyd on the local backend, run a sample command end to end, leave it running.
run: deps build-release
	@bash scripts/run.sh "$(RELEASE_BIN)" "$(DATA_DIR)" "$(LISTEN)"

## run-gcp-local: `--backend gcp` on one machine (Firestore and Pub/Sub emulators, the Cloud Run,
## Cloud Logging and KMS fakes of runvoy-fake-gcp, records through a real push subscription), a
## sample run, everything left running.
run-gcp-local: deps build-release
	@bash scripts/run-gcp-local.sh "$(RELEASE_BIN)" "$(GCP_DATA_DIR)" "$(GCP_LISTEN)"

## stop-gcp-local: stop what `make run-gcp-local` started.
stop-gcp-local:
	@for p in runvoyd fake emulators; do if [ -f "$(GCP_DATA_DIR)/$$p.pid" ]; then kill "$$(cat $(GCP_DATA_DIR)/$$p.pid)" 2>/dev/null || true; rm -f "$(GCP_DATA_DIR)/$$p.pid"; echo "$$p stopped"; fi; done

## stop: stop the runvoyd started by `make run`.
stop:
	@if [ -f "$(DATA_DIR)/runvoyd.pid" ]; then kill "$$(cat $(DATA_DIR)/runvoyd.pid)" 2>/dev/null || true; rm -f "$(DATA_DIR)/runvoyd.pid"; echo "runvoyd stopped"; else echo "runvoyd is not running"; fi

## test: every test (unit, conformance, integration with the real binaries, web end to end, the
## container images).
# The integration and web tests start the real binaries: build them all first (`cargo test`
# alone only builds the binaries of packages that have integration tests of their own).
# The Docker compute's conformance test (in `cargo test`) and suites need the test images,
# which hold the static binaries: those are built first.
test:
	@bash scripts/deps.sh test
	@bash scripts/deps.sh web
	$(CARGO) build --workspace --bins
	$(MAKE) --no-print-directory docker-test-images
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) --no-print-directory test-gcp-suites
	$(MAKE) --no-print-directory test-docker-suites
	RUNVOYD_BIN=$(CURDIR)/$(DEBUG_BIN)/runvoyd bash internal/web/e2e/run.sh
	$(MAKE) --no-print-directory test-images

## test-gcp-suites: the integration suites again on the Google Cloud backends: `gcp-local`
## (Firestore and Pub/Sub emulators, local compute) and `gcp` (`--backend gcp` on the emulators
## and runvoy-fake-gcp). Needs the binaries built. The emulator pushes one message at a time,
## so large outputs arrive slowly on `gcp` (docs/GCP.md, "The whole stack on one machine").
## tests/secrets.rs runs on gcp-local only: Cloud Run compute does not deliver secrets yet.
## tests/crash.rs too: on `gcp` one of its 20 executions sometimes ends FAILED without its final
## record (docs/GCP.md).
GCP_SUITES := --test run --test faults --test access
test-gcp-suites:
	RUNVOY_TEST_BACKEND=gcp-local $(CARGO) test -p runvoy-testkit --test secrets --test crash $(GCP_SUITES) --no-fail-fast
	RUNVOY_TEST_BACKEND=gcp $(CARGO) test -p runvoy-testkit $(GCP_SUITES) --no-fail-fast

## docker-test-images: the images the Docker tests run (scripts/docker-test-images.sh; needs a
## Docker engine and busybox-static, and fails with the reason without them).
docker-test-images: static-bins
	@bash scripts/docker-test-images.sh "$(STATIC_BIN)"

## test-docker-suites: the integration suites again with `--compute docker`
## (RUNVOY_TEST_BACKEND=docker), and the Docker suite itself (tests/docker.rs). Needs the
## binaries and `make docker-test-images`. The suites about local compute's sandbox, its files
## and the local backend's image rules (hostile, faults, images, access, diskfull) stay on local.
DOCKER_SUITES := --test docker --test run --test crash --test features --test command \
	--test limits --test list_filters --test hardening
test-docker-suites:
	RUNVOY_TEST_BACKEND=docker $(CARGO) test -p runvoy-testkit $(DOCKER_SUITES) --no-fail-fast

test-rust:
	@bash scripts/deps.sh test
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

test-web: build
	@bash scripts/deps.sh web
	RUNVOYD_BIN=$(CURDIR)/$(DEBUG_BIN)/runvoyd bash internal/web/e2e/run.sh

lint: lint-terraform
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## lint-terraform: the Terraform's formatting, and its references and invariants checked without
## providers (scripts/check_terraform.py, python-hcl2), with the checker's own tests.
lint-terraform:
	@bash scripts/deps.sh lint
	terraform fmt -check -recursive deploy/terraform
	python3 scripts/check_terraform.py deploy/terraform/gcp
	python3 -m unittest discover -s scripts -p 'test_check_terraform.py'

fmt:
	$(CARGO) fmt --all

## emulators: start Google's Firestore and Pub/Sub emulators (from the Cloud SDK) by hand; prints the
## FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST to export, stops on Ctrl-C. Tests start their own.
emulators:
	$(CARGO) run -q -p runvoy-emulators --bin runvoy-emulators

## bench: speed figures side by side (runvoy vs sh -c, and --compute docker vs docker run --rm);
## see docs/BENCHMARKS.md.
bench: deps build-release docker-test-images
	$(RELEASE_BIN)/runvoy-bench --bin-dir $(RELEASE_BIN) --docker-image runvoy-test/busybox:test
	@echo "== Firestore writes per execution (Google's emulator counts no time, only writes)"
	@$(CARGO) test -q -p runvoy-store-firestore --test emulator writes_per_execution_meet_the_goal -- --nocapture 2>&1 | grep "firestore writes per execution"

## test-api-schema: schemathesis (PyPI, scripts/schemathesis/requirements.txt) against a real
## runvoyd with the admin key and a viewer key (scripts/schemathesis/run.sh; config and seed
## in scripts/schemathesis/schemathesis.toml). Needs the binaries built.
test-api-schema:
	bash scripts/schemathesis/run.sh $(DEBUG_BIN)

## fuzz: each libFuzzer target (fuzz/, see docs/FUZZING.md) for FUZZ_TIME seconds (default 600),
## starting from its committed corpus; new inputs go to target/fuzz/corpus, crashes to
## fuzz/artifacts. fuzz-smoke: the committed corpus replayed, then FUZZ_SMOKE_TIME seconds
## (default 20) of new inputs per target; a crash fails it. Built with cargo-fuzz on the stable
## toolchain, without a sanitizer (`-s none`: the code under test is safe Rust).
FUZZ_TARGETS := runner_records record_line pubsub_push cloudevent playbook env_file
FUZZ_TIME ?= 600
FUZZ_SMOKE_TIME ?= 20
FUZZ_RUN = $(CARGO) fuzz run -s none --target-dir target/fuzz
fuzz-tool:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

fuzz: fuzz-tool
	@for t in $(FUZZ_TARGETS); do mkdir -p target/fuzz/corpus/$$t; \
	  echo "== fuzz $$t ($(FUZZ_TIME) s)"; \
	  $(FUZZ_RUN) $$t target/fuzz/corpus/$$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_TIME) -max_len=8192 -print_final_stats=1 || exit 1; done

fuzz-smoke: fuzz-tool
	@for t in $(FUZZ_TARGETS); do rm -rf target/fuzz/smoke/$$t; mkdir -p target/fuzz/smoke/$$t; \
	  echo "== fuzz-smoke $$t"; \
	  $(FUZZ_RUN) $$t target/fuzz/smoke/$$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SMOKE_TIME) -max_len=8192 || exit 1; done

clean:
	$(CARGO) clean
	rm -rf $(DATA_DIR) artifacts
