#!/bin/sh
# Run a long job inside an ebb replica without being chosen for scale-in.
#
# ebb gives every replica EBB_ADMIN_URL, EBB_REPLICA_ID and EBB_REPLICA_TOKEN;
# the token lets this replica protect itself and nothing else.
#
#   ./protect.sh long-job --with args
set -eu

protect() {
  curl -fsS -X POST "$EBB_ADMIN_URL/api/v1/replicas/$EBB_REPLICA_ID/protect" \
    -H "Authorization: Bearer $EBB_REPLICA_TOKEN" \
    -H "Content-Type: application/json" \
    -d "{\"protected\": $1}" >/dev/null
}

protect true
# Release protection however the job ends, so scale-in can proceed.
trap 'protect false' EXIT
"$@"
