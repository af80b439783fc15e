#!/bin/sh
# Example runbook: replace with your own status check. Args: service environment
set -eu
service=$1 environment=$2
log="${CHATOPS_DATA_DIR:-.chatops}/runbook.log"
mkdir -p "$(dirname "$log")"
echo "service_status $service $environment" >> "$log"
version=$(grep "^deploy $service .* $environment\$" "$log" 2>/dev/null | tail -n 1 | cut -d' ' -f3)
echo "$service in $environment: healthy, version ${version:-1.0.0} (example runbook: nothing was checked; point [tools.service_status] command at yours)"
