#!/bin/sh
# Example runbook: replace with your own deploy. Args: service version environment
set -eu
service=$1 version=$2 environment=$3
log="${CHATOPS_DATA_DIR:-.chatops}/runbook.log"
mkdir -p "$(dirname "$log")"
echo "deploy $service $version $environment" >> "$log"
echo "Deployed $service $version to $environment (example runbook: nothing was deployed; point [tools.deploy] command at yours)"
