#!/bin/sh
# Example runbook: replace with your own rollback. Args: service environment
set -eu
service=$1 environment=$2
log="${CHATOPS_DATA_DIR:-.chatops}/runbook.log"
mkdir -p "$(dirname "$log")"
echo "rollback $service $environment" >> "$log"
echo "Rolled back $service in $environment to the previous release (example runbook: nothing was rolled back; point [tools.rollback] command at yours)"
