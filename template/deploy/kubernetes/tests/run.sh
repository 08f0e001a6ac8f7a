#!/bin/sh
# Checks the alert rules and runs their unit tests: ./deploy/kubernetes/tests/run.sh (needs promtool).
# promtool reads plain rule files, so the PrometheusRule's `spec` (its last key) is cut out and
# dedented into a temporary rules.yml next to a copy of the tests.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -e '1,/^spec:$/d' -e 's/^  //' "$here/../prometheusrule.yaml" > "$work/rules.yml"
cp "$here/alerts.test.yml" "$work/"
promtool check rules "$work/rules.yml"
promtool test rules "$work/alerts.test.yml"
