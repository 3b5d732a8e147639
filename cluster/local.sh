#!/usr/bin/env bash
# Start a one-machine Ray cluster on loopback that `rlhf ppo --run.ray_address auto` can attach to,
# so several runs can share it. Stop it with `ray stop` (only the cluster this script started).
set -euo pipefail
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
ray start --head --node-ip-address 127.0.0.1 --num-cpus "${NUM_CPUS:-$(nproc)}" --include-dashboard false "$@"
