#!/usr/bin/env bash
# Offline checks of the deployment files, beyond tests/tests/deploy_files.rs (which checks
# that they agree with `fjord serve`): the YAML parses, kustomize builds the Kubernetes
# manifests, and, where kubectl reaches an API server, the server validates them
# (`kubectl apply --dry-run=server`); the shell scripts pass `bash -n` (and shellcheck,
# where installed). Needs python3 with yaml, and kubectl for the Kubernetes part.
set -euo pipefail
cd "$(dirname "$0")"

for f in compose/compose.yaml k8s/*.yaml; do
  python3 -c 'import sys, yaml; list(yaml.safe_load_all(open(sys.argv[1])))' "$f"
  echo "yaml ok: $f"
done

for f in container/build.sh run-podman.sh check.sh; do
  bash -n "$f"
  if command -v shellcheck >/dev/null; then shellcheck "$f"; fi
  echo "shell ok: $f"
done

if command -v kubectl >/dev/null; then
  kubectl kustomize k8s > /dev/null
  echo "kustomize ok: k8s ($(kubectl kustomize k8s | grep -c '^kind:') objects)"
  if kubectl version --request-timeout=5s > /dev/null 2>&1; then
    kubectl apply --dry-run=server -k k8s
  else
    echo "no API server reachable: skipped kubectl apply --dry-run (client dry runs need one too)"
  fi
else
  echo "kubectl not installed: skipped the Kubernetes checks"
fi
