# integration-operator — developer targets. `make help` lists them.
SHELL := bash
CARGO ?= cargo
EMULATOR_KUBECONFIG ?= $(CURDIR)/target/emulator/kubeconfig
export EMULATOR_KUBECONFIG

.PHONY: help demo test lint fmt fmt-check crds chart-check emulator e2e run bench oidc-deps

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

demo: ## run the operator end to end against the API emulator and a token-server simulator (no cluster needed)
	$(CARGO) build --quiet --bins --workspace
	$(CARGO) run --quiet -p testkit --bin testkit -- demo --operator target/debug/integration-operator

test: fmt-check lint oidc-deps chart-check ## the whole suite: format, lints, chart checks, unit, integration (emulator + simulators + oidc-provider), kubectl, CRD drift
	$(CARGO) nextest run --workspace --no-fail-fast

oidc-deps: ## install the pinned oidc-provider used by the tests
	@if [ ! -d tests/oidc/node_modules ] && [ -f tests/oidc/package-lock.json ]; then npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error; fi

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

emulator: ## run the Kubernetes API emulator in the foreground (kubeconfig at $EMULATOR_KUBECONFIG)
	$(CARGO) run --quiet -p testkit --bin testkit -- emulator --kubeconfig "$(EMULATOR_KUBECONFIG)"

run: ## run the operator against the current kubeconfig with debug logs
	$(CARGO) run --bin integration-operator -- run --log-level debug,kube=info --metrics-addr 127.0.0.1:8080

bench: ## scale figures at 100, 1,000 and 10,000 Integrations (release build; prints a table, never fails on timing)
	$(CARGO) build --release --quiet --bin integration-operator -p integration-operator
	$(CARGO) run --release --quiet -p testkit --bin testkit -- bench --operator target/release/integration-operator $(BENCH_ARGS)

e2e: ## the end-to-end scenarios against the cluster $KUBECONFIG points at (says so and does nothing without it)
	@if [ -z "$$KUBECONFIG" ]; then echo "e2e: KUBECONFIG is not set; no cluster to test against (nothing run)"; exit 0; fi
	$(CARGO) nextest run --test e2e --run-ignored only --no-fail-fast
