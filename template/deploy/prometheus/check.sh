#!/bin/sh
# Checks the alerting and recording rules and runs their unit tests (needs promtool):
#   ./deploy/prometheus/check.sh   (or `make rules-test`)
# With Kubernetes manifests it also fails when the PrometheusRule's `spec` is not rules.yml.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
promtool check rules "$here/rules.yml"
(cd "$here" && promtool test rules rules.test.yml)
manifest="$here/../kubernetes/prometheusrule.yaml"
if [ -f "$manifest" ]; then
  # `spec` is the manifest's last key: everything after `spec:`, dedented, is the rule file.
  if ! sed -e '1,/^spec:$/d' -e 's/^  //' "$manifest" | cmp -s - "$here/rules.yml"; then
    echo "deploy/kubernetes/prometheusrule.yaml differs from deploy/prometheus/rules.yml: run make prometheusrule" >&2
    exit 1
  fi
  echo "deploy/kubernetes/prometheusrule.yaml: spec is deploy/prometheus/rules.yml"
fi
