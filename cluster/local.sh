#!/usr/bin/env bash
# A one-machine Ray cluster on loopback that several runs can share:
#   cluster/local.sh                              # NUM_CPUS (default: all), PORT (6379), DASHBOARD_PORT (8265)
#   rlhf ppo --run.ray_address auto               # attach a run to it (or --run.ray_address 127.0.0.1:6379)
#   rlhf submit -- rlhf ppo --config my.yaml      # or send a command as a Ray job (job API on the dashboard port)
#   ray stop                                      # stop it (and every other Ray on this machine)
# Every port (GCS, dashboard and job API, object and node managers) listens on 127.0.0.1 only. Extra arguments go to
# `ray start` (e.g. --block to keep it in the foreground).
set -euo pipefail
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
ray start --head --node-ip-address 127.0.0.1 --port "${PORT:-6379}" --num-cpus "${NUM_CPUS:-$(nproc)}" \
    --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "${DASHBOARD_PORT:-8265}" "$@"
