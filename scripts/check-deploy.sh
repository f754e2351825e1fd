#!/usr/bin/env bash
# Checks the deployment files against their schemas: the GitHub Actions workflow against the
# workflow schema that check-jsonschema carries, the Kubernetes manifests against the Kubernetes
# API schemas that kubernetes-validate carries (strict: an unknown field is an error). Both tools
# work offline once installed (pip install check-jsonschema kubernetes-validate; .ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."
for module in check_jsonschema kubernetes_validate; do
  if ! python3 -c "import $module" 2>/dev/null; then
    echo "check-deploy: the Python module $module is missing (pip install check-jsonschema kubernetes-validate)" >&2
    exit 1
  fi
done
python3 -m check_jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
python3 -m kubernetes_validate --strict deploy/*.yaml
