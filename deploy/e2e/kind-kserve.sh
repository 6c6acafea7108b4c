#!/usr/bin/env bash
# End-to-end run on a real cluster: kind + Istio + Knative + KServe, then mlcanary's e2e tests.
#
#   deploy/e2e/kind-kserve.sh            # create the cluster (if missing), install, test
#   deploy/e2e/kind-kserve.sh --delete   # remove the cluster
#
# Needs docker, kind, kubectl, helm and internet access (images, KServe's quick install). Not run by
# `make test`: tests/e2e skip themselves when no cluster is reachable. Versions below are the ones the
# backend was written against (shared/reference/kserve.md); change them together.
set -euo pipefail

CLUSTER=${CLUSTER:-mlcanary}
KSERVE_VERSION=${KSERVE_VERSION:-v0.20.0}
REPO=$(cd "$(dirname "$0")/../.." && pwd)

if [[ "${1:-}" == "--delete" ]]; then
  kind delete cluster --name "$CLUSTER"
  exit 0
fi

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER"

# Istio, Knative Serving and KServe (Knative mode is KServe's quick-install default), with KServe's
# own installer for the versions it pins.
if ! kubectl get crd inferenceservices.serving.kserve.io >/dev/null 2>&1; then
  curl -fsSL "https://raw.githubusercontent.com/kserve/kserve/${KSERVE_VERSION}/hack/quick_install.sh" | bash
fi
kubectl wait --for=condition=Available --timeout=600s -n kserve deployment --all

# mlcanary's own parts (collector, receiver, MLflow on PostgreSQL + MinIO), from this checkout.
docker build -t mlcanary:0.1.0 "$REPO"
kind load docker-image mlcanary:0.1.0 --name "$CLUSTER"
kubectl apply -k "$REPO/deploy/k8s/overlays/knative"
kubectl wait --for=condition=Available --timeout=600s -n mlcanary deployment/mlcanary-collector deployment/mlflow

# The backend against the real controller (public sklearn samples; see tests/e2e).
cd "$REPO"
MLCANARY_E2E_CONTEXT="kind-$CLUSTER" .venv/bin/pytest -m e2e tests/e2e -v
