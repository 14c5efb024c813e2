#!/usr/bin/env bash
# Stop what scripts/spark-cluster-up.sh started: the worker (and its executors), then the master.
# Only the process groups whose pids it recorded; logs stay in the state folder.
#
# Usage: scripts/spark-cluster-down.sh [STATE_DIR]   (default: $SPARK_CLUSTER_DIR, else
# /tmp/nyc-taxi-spark-cluster)
set -euo pipefail
DIR=${1:-${SPARK_CLUSTER_DIR:-/tmp/nyc-taxi-spark-cluster}}
say() { printf 'spark-cluster: %s\n' "$*" >&2; }
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
[ -d "$DIR" ] || { say "nothing to stop: no $DIR"; exit 0; }

for name in worker master; do
  [ -s "$DIR/$name.pid" ] || continue
  pid=$(cat "$DIR/$name.pid")
  if alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 60); do alive "$pid" || break; sleep 0.5; done
    alive "$pid" && { say "$name did not stop on TERM: killing"; kill -KILL -- "-$pid"; }
    say "$name stopped"
  else
    say "$name was not running"
  fi
  # executors the worker launched live in its process group: stop what is left of it
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$DIR/$name.pid"
done
