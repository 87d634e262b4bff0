# integration-operator — developer targets. `make help` lists them.
SHELL := bash
CARGO ?= cargo
CLUSTER_KUBECONFIG ?= $(CURDIR)/target/control-plane/kubeconfig
export CLUSTER_KUBECONFIG

.PHONY: help nextest demo test cluster control-plane lint fmt fmt-check crds chart-check e2e run bench heap-profile oidc-deps kombo-sdk-deps fuzz

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

demo: ## run the operator end to end against a real control plane started on 127.0.0.1 (built on first use) and every provider's simulator, applying examples/ (no cluster or account needed)
	$(CARGO) build --quiet --bins --workspace
	$(CARGO) run --quiet -p testkit --bin testkit -- demo --operator target/debug/integration-operator

test: nextest fmt-check lint oidc-deps kombo-sdk-deps chart-check control-plane ## the whole suite: format, lints, chart checks, unit, integration (real control plane with the chart's RBAC, API faults through testkit's proxy, simulators, oidc-provider, Kombo's SDK), kubectl, CRD drift
	bash scripts/control-plane.sh start
	trap 'bash scripts/control-plane.sh stop' EXIT; KUBECONFIG="$$CLUSTER_KUBECONFIG" kubectl version && \
	  $(CARGO) nextest run --workspace --no-fail-fast && \
	  KUBECONFIG="$$CLUSTER_KUBECONFIG" $(CARGO) nextest run --test e2e --run-ignored only --no-fail-fast

nextest: ## install cargo-nextest if this machine has none (the test runner of `make test`)
	@command -v cargo-nextest >/dev/null || $(CARGO) install cargo-nextest --locked

control-plane: ## build kube-apiserver, etcd and kube-controller-manager from the Kubernetes Go modules (first time: minutes, with progress)
	bash scripts/control-plane.sh build

cluster: control-plane ## run a real Kubernetes control plane on 127.0.0.1 in the foreground (Ctrl-C stops it); admin kubeconfig at $CLUSTER_KUBECONFIG
	bash scripts/control-plane.sh run

oidc-deps: ## install the pinned oidc-provider used by the tests
	@if [ ! -d tests/oidc/node_modules ] && [ -f tests/oidc/package-lock.json ]; then npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error; fi

KOMBO_SDK_VENV := tests/kombo_sdk/.venv
kombo-sdk-deps: ## install Kombo's official Python SDK (pinned in tests/kombo_sdk/requirements.txt) into tests/kombo_sdk/.venv, the oracle of tests/integration/providers/kombo_sdk.rs
	@if ! $(KOMBO_SDK_VENV)/bin/python -c 'import kombo' 2>/dev/null; then \
		python3 -m venv $(KOMBO_SDK_VENV) && \
		$(KOMBO_SDK_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: -r tests/kombo_sdk/requirements.txt; \
	fi

lint: ## clippy, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

fmt-check: ## check formatting
	$(CARGO) fmt --all -- --check

crds: ## regenerate crds/ (and the chart's copy) from the Rust types
	$(CARGO) run --quiet --bin integration-operator -- crds > crds/crds.yaml
	cp crds/crds.yaml charts/integration-operator/files/crds.yaml

chart-check: ## helm lint --strict, helm template for several value sets, kubernetes-validate --strict (installs helm and kubernetes-validate into .tools/)
	bash scripts/chart-check.sh

run: ## run the operator against the current kubeconfig with debug logs
	$(CARGO) run --bin integration-operator -- run --log-level debug,kube=info --metrics-addr 127.0.0.1:8080

bench: control-plane ## scale figures at 100, 1,000 and 10,000 Integrations on a fresh real control plane per scale (the shipped `dist` build; prints a table, never fails on timing)
	$(CARGO) build --profile dist --quiet --bin integration-operator -p integration-operator
	$(CARGO) run --release --quiet -p testkit --bin testkit -- bench --operator target/dist/integration-operator $(BENCH_ARGS)

HEAP_N ?= 10000
HEAP_PROFILE ?= $(CURDIR)/target/heap-profile/dhat-heap-$(HEAP_N).json
heap-profile: control-plane ## a dhat heap profile of the operator after a cold start of HEAP_N (default 10,000) Integrations, summed by component (heap bytes only: RSS comes from `make bench`)
	RUSTFLAGS='-C symbol-mangling-version=v0' $(CARGO) build --profile heap-profile --features heap-profile --quiet --bin integration-operator -p integration-operator
	HEAP_PROFILE=$(HEAP_PROFILE) $(CARGO) run --release --quiet -p testkit --bin testkit -- bench --operator target/heap-profile/integration-operator --integrations $(HEAP_N) --cold-only --unrelated-secrets 0
	python3 scripts/heap-profile.py $(HEAP_PROFILE)

e2e: nextest ## the end-to-end scenarios against the cluster $KUBECONFIG points at (says so and does nothing without it)
	@if [ -z "$$KUBECONFIG" ]; then echo "e2e: KUBECONFIG is not set; no cluster to test against (nothing run)"; exit 0; fi
	$(CARGO) nextest run --test e2e --run-ignored only --no-fail-fast

FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= oauth2_token oauth2_error scrub retry_after check_endpoint provider_answers integration_spec cluster_provider secret_credentials
fuzz: ## run every fuzz target for FUZZ_SECONDS (default 60) each; needs nightly and cargo-fuzz; not part of `make test`
	@if ! rustup run nightly rustc --version >/dev/null 2>&1; then echo "fuzz: the nightly toolchain is missing; install it with: rustup toolchain install nightly"; exit 1; fi
	@if ! $(CARGO) +nightly fuzz --version >/dev/null 2>&1; then echo "fuzz: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked"; exit 1; fi
	@cd fuzz && failed=""; for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
		mkdir -p corpus/$$t; \
		$(CARGO) +nightly fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: crashes in:$$failed (inputs in fuzz/artifacts/; reproduce with: cd fuzz && cargo +nightly fuzz run <target> <file>)"; exit 1; fi; \
	echo "fuzz: no crash in $(FUZZ_SECONDS)s per target"
