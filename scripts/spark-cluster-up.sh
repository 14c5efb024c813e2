#!/usr/bin/env bash
# Start a Spark standalone cluster on loopback, for trying `hpo` and `score` on Spark with
# spark_master=spark://...: one master and one worker, both from the environment's own pyspark
# (its bundled Spark: no separate Spark install). Stop it with scripts/spark-cluster-down.sh.
#
# The master and the worker run with a bare environment (env -i: JAVA_HOME, PATH=/usr/bin:/bin
# and Spark's own settings only), so no project package or virtualenv reaches them through
# their environment: what executors run is what the driver ships (PYSPARK_PYTHON, see the
# README), as on a real cluster.
#
# Usage: scripts/spark-cluster-up.sh [STATE_DIR]
# Prints the master URL (spark://127.0.0.1:PORT) on stdout, and nothing else there.
#
# Settings (environment):
#   SPARK_CLUSTER_DIR        state folder: pid files, logs, the worker's work dir (default
#                            /tmp/nyc-taxi-spark-cluster; the first argument wins)
#   SPARK_MASTER_PORT        master port (default 7077), on 127.0.0.1
#   SPARK_MASTER_WEBUI_PORT  master web UI and JSON status (default 8080)
#   SPARK_WORKER_WEBUI_PORT  worker web UI (default 8081)
#   SPARK_WORKER_CORES       cores the worker offers (default 2)
#   SPARK_WORKER_MEMORY      memory the worker offers (default 2g)
#   PYTHON                   the interpreter whose pyspark to use (default .venv/bin/python)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-${SPARK_CLUSTER_DIR:-/tmp/nyc-taxi-spark-cluster}}
MASTER_PORT=${SPARK_MASTER_PORT:-7077}
MASTER_WEBUI_PORT=${SPARK_MASTER_WEBUI_PORT:-8080}
WORKER_WEBUI_PORT=${SPARK_WORKER_WEBUI_PORT:-8081}
CORES=${SPARK_WORKER_CORES:-2}
MEMORY=${SPARK_WORKER_MEMORY:-2g}
PYTHON=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}
say() { printf 'spark-cluster: %s\n' "$*" >&2; }
# A killed process whose parent has not reaped it yet is a zombie: gone, whatever kill -0 says.
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

# 1. Java (17, from the system packages if missing) and the pyspark installation.
if ! command -v java >/dev/null 2>&1 && [ -z "${JAVA_HOME:-}" ]; then
  say "installing Java 17 from the system packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
JAVA_HOME=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}
SPARK_HOME=$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')

mkdir -p "$DIR/logs" "$DIR/work" "$DIR/conf"
DIR=$(cd "$DIR" && pwd)
MASTER_URL="spark://127.0.0.1:$MASTER_PORT"

# 2. Master and worker, each in its own session (process group) so that down stops it whole.
# (env is run directly, not from a function, so that $! is the pid of the JVM itself.)
bare=(env -i JAVA_HOME="$JAVA_HOME" PATH=/usr/bin:/bin SPARK_HOME="$SPARK_HOME"
  SPARK_CONF_DIR="$DIR/conf" SPARK_LOCAL_IP=127.0.0.1)
start() {  # name, then the spark-class arguments
  local name=$1; shift
  if [ -s "$DIR/$name.pid" ] && alive "$(cat "$DIR/$name.pid")"; then
    say "$name already running (pid $(cat "$DIR/$name.pid"))"
    return
  fi
  "${bare[@]}" setsid "$SPARK_HOME/bin/spark-class" "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! > "$DIR/$name.pid"
}
start master org.apache.spark.deploy.master.Master \
  --host 127.0.0.1 --port "$MASTER_PORT" --webui-port "$MASTER_WEBUI_PORT"
start worker org.apache.spark.deploy.worker.Worker "$MASTER_URL" \
  --host 127.0.0.1 --cores "$CORES" --memory "$MEMORY" \
  --webui-port "$WORKER_WEBUI_PORT" --work-dir "$DIR/work"
echo "$MASTER_URL" > "$DIR/master_url"

# 3. Wait until the master reports the worker alive.
for _ in $(seq 1 240); do
  workers=$(curl -fsS "http://127.0.0.1:$MASTER_WEBUI_PORT/json/" 2>/dev/null \
    | grep -Eo '"aliveworkers"[[:space:]]*:[[:space:]]*[0-9]+' | grep -Eo '[0-9]+$' || true)
  if [ "${workers:-0}" -ge 1 ]; then
    say "master $MASTER_URL (UI http://127.0.0.1:$MASTER_WEBUI_PORT), worker: $CORES cores, $MEMORY"
    say "stop it with: scripts/spark-cluster-down.sh $DIR"
    echo "$MASTER_URL"
    exit 0
  fi
  for name in master worker; do
    alive "$(cat "$DIR/$name.pid")" || { say "the $name exited; last lines of $DIR/logs/$name.log:"; tail -n 20 "$DIR/logs/$name.log" >&2; exit 1; }
  done
  sleep 0.5
done
say "no worker registered within 120 s; logs in $DIR/logs"
exit 1
