#!/usr/bin/env bash
# The real Kubernetes control plane of the tests (etcd, kube-apiserver,
# kube-controller-manager), built from the Go module in testkit/control-plane.
#
#   scripts/control-plane.sh build    build the binary if its sources changed (prints the binary's path last)
#   scripts/control-plane.sh run      build, then run a cluster in the foreground (Ctrl-C stops it)
#   scripts/control-plane.sh start    build, then start a cluster in the background (pid file)
#   scripts/control-plane.sh stop     stop the background cluster
#
# The admin kubeconfig goes to $CLUSTER_KUBECONFIG (default
# target/control-plane/kubeconfig); extra arguments go to `control-plane cluster`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$ROOT/testkit/control-plane"
OUT="${CONTROL_PLANE_DIR:-$ROOT/target/control-plane}"
BIN="$OUT/bin/control-plane"
export CLUSTER_KUBECONFIG="${CLUSTER_KUBECONFIG:-$OUT/kubeconfig}"

say() { printf '[control-plane] %s\n' "$*" >&2; }

build() {
  command -v go >/dev/null || { say "Go is needed to build the control plane (go.dev/dl); none on PATH"; exit 1; }
  mkdir -p "$OUT/bin"
  # The binary is rebuilt when its sources, this script or the Go toolchain change.
  local stamp
  stamp="$( (go version; cat "$0" "$SRC"/go.mod "$SRC"/go.sum "$SRC"/*.go) | sha256sum | cut -c1-16)"
  if [[ -x "$BIN" && -f "$BIN.stamp" && "$(cat "$BIN.stamp")" == "$stamp" ]]; then
    echo "$BIN"
    return
  fi
  local t0 t1 n=0 pkg
  t0=$(date +%s)
  say "building kube-apiserver, kube-controller-manager and etcd from source ($(sed -n 's/^\tk8s.io\/kubernetes \(v[^ ]*\)$/k8s.io\/kubernetes \1/p; s/^\tgo.etcd.io\/etcd\/server\/v3 \(v[^ ]*\)$/etcd \1/p' "$SRC/go.mod" | paste -sd, -), $(go version | cut -d' ' -f3))"
  say "the first build on a machine downloads ~600 MB of Go modules and compiles ~2,400 packages (12 CPU-minutes: 6-16 minutes on 2 cores, depending on what else runs); later builds reuse Go's caches"
  say "phase 1/2: downloading modules into $(go env GOMODCACHE)"
  (cd "$SRC" && go mod download -x 2>&1) | { grep -E '^# get .*\.zip$' || true; } | while read -r _ _ url; do
    n=$((n + 1))
    if (( n % 25 == 0 )); then say "  downloaded $n module archives ($(( $(date +%s) - t0 ))s)"; fi
  done
  t1=$(date +%s)
  say "phase 1/2 done in $((t1 - t0))s"
  say "phase 2/2: compiling (each line: packages compiled so far)"
  local log="$OUT/build.log"
  n=0
  # The version the components report (/version, kubectl version), as
  # Kubernetes' own build stamps it; without it they say v0.0.0-master.
  local kv major minor ldflags="-s -w" pkg_path
  kv=$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$SRC/go.mod")
  major=${kv#v}; major=${major%%.*}
  minor=${kv#v"$major".}; minor=${minor%%.*}
  for pkg_path in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg_path.gitVersion=$kv -X $pkg_path.gitMajor=$major -X $pkg_path.gitMinor=$minor -X $pkg_path.gitTreeState=clean"
  done
  (cd "$SRC" && go build -v -ldflags="$ldflags" -o "$BIN.new" . 2>&1) | tee "$log" | while read -r pkg; do
    n=$((n + 1))
    if (( n % 100 == 0 )); then say "  $n packages compiled ($(( $(date +%s) - t1 ))s, now $pkg)"; fi
  done
  if [[ ! -x "$BIN.new" ]]; then
    say "build failed; see $log"
    tail -30 "$log" >&2
    exit 1
  fi
  mv "$BIN.new" "$BIN"
  for c in etcd kube-apiserver kube-controller-manager; do ln -sf control-plane "$OUT/bin/$c"; done
  echo "$stamp" > "$BIN.stamp"
  say "phase 2/2 done in $(( $(date +%s) - t1 ))s; built $BIN in $(( $(date +%s) - t0 ))s total"
  echo "$BIN"
}

# Test processes may ask for a build, or for the shared cluster, at the same
# time: one of them does it and the others wait, then find it done.
locked() { # lockfile, command...
  local lock=$1; shift
  mkdir -p "$(dirname "$lock")"
  exec 9>"$lock"
  flock 9
  "$@"
}

cmd="${1:-build}"
shift || true
case "$cmd" in
  build) locked "$OUT/build.lock" build ;;
  run) (locked "$OUT/build.lock" build >/dev/null); exec "$BIN" cluster run --kubeconfig "$CLUSTER_KUBECONFIG" "$@" ;;
  start)
    (locked "$OUT/build.lock" build >/dev/null)
    locked "$CLUSTER_KUBECONFIG.lock" "$BIN" cluster start --kubeconfig "$CLUSTER_KUBECONFIG" "$@" ;;
  stop)
    if [[ -x "$BIN" ]]; then exec "$BIN" cluster stop --kubeconfig "$CLUSTER_KUBECONFIG" "$@"; fi
    say "not built, so not running" ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
