#!/usr/bin/env bash
# Stop what scripts/team-server-up.sh started: the tracking server, then PostgreSQL.
# The data stays in $TEAM_SERVER_DIR (default .team-server); delete the folder to start over.
set -euo pipefail
DIR=${TEAM_SERVER_DIR:-.team-server}
say() { printf 'team-server: %s\n' "$*" >&2; }
# A killed server whose parent has not reaped it yet is a zombie: gone, whatever kill -0 says.
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
[ -d "$DIR" ] || { say "nothing to stop: no $DIR"; exit 0; }
DIR=$(cd "$DIR" && pwd)

if [ -s "$DIR/mlflow.pid" ]; then
  pid=$(cat "$DIR/mlflow.pid")
  if alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 60); do alive "$pid" || break; sleep 0.5; done
    alive "$pid" && { say "server did not stop on TERM: killing"; kill -KILL -- "-$pid"; }
    say "tracking server stopped"
  else
    # its workers may outlive a killed leader: stop what is left of its process group
    kill -KILL -- "-$pid" 2>/dev/null || true
    say "tracking server was not running"
  fi
  rm -f "$DIR/mlflow.pid"
fi

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$pg_bin" ] && [ -s "$DIR/pgdata/PG_VERSION" ]; then
  as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  if as_postgres "$pg_bin/pg_ctl" -D "$DIR/pgdata" status >/dev/null 2>&1; then
    as_postgres "$pg_bin/pg_ctl" -D "$DIR/pgdata" -m fast -w stop >/dev/null
    say "PostgreSQL stopped"
  fi
fi
