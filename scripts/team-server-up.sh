#!/usr/bin/env bash
# Start a team tracking server on this machine, for trying scenario 3 out:
# PostgreSQL backend store, artifacts served by the server (clients need no storage
# credentials), basic authentication. Stop it with scripts/team-server-down.sh.
#
# Settings (environment):
#   MLFLOW_AUTH_ADMIN_PASSWORD  required: the admin password (never written to the repo)
#   TEAM_SERVER_DIR             state folder (default: .team-server; git-ignored)
#   MLFLOW_PORT, PG_PORT        ports (default 5000 and 5433), both on 127.0.0.1
#   ARTIFACTS_DESTINATION       default: $TEAM_SERVER_DIR/artifacts; or s3://bucket/prefix
#                               (then AWS_* credentials and, for an S3-compatible server,
#                               MLFLOW_S3_ENDPOINT_URL, are the server's, not the clients')
#   MLFLOW_FLASK_SERVER_SECRET_KEY  the auth app's CSRF key (default: generated, kept in the folder)
#   MLFLOW                      the mlflow command (default: .venv/bin/mlflow, else mlflow)
set -euo pipefail

: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD to the admin password}"
DIR=$(mkdir -p "${TEAM_SERVER_DIR:-.team-server}" && cd "${TEAM_SERVER_DIR:-.team-server}" && pwd)
MLFLOW_PORT=${MLFLOW_PORT:-5000}
PG_PORT=${PG_PORT:-5433}
ARTIFACTS=${ARTIFACTS_DESTINATION:-$DIR/artifacts}
here=$(cd "$(dirname "$0")/.." && pwd)
MLFLOW=${MLFLOW:-$( [ -x "$here/.venv/bin/mlflow" ] && echo "$here/.venv/bin/mlflow" || echo mlflow)}
say() { printf 'team-server: %s\n' "$*" >&2; }

# 1. PostgreSQL binaries, from the system packages if missing.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  say "installing PostgreSQL from the system packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
id postgres >/dev/null 2>&1 || { say "no 'postgres' user: install the postgresql package"; exit 1; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# 2. A private cluster owned by postgres (PostgreSQL refuses to run as root).
mkdir -p "$DIR/pgsock" "$DIR/logs"
chmod 700 "$DIR"
if [ "$(id -u)" = 0 ]; then
  chown postgres "$DIR/pgsock" "$DIR/logs"; chmod 755 "$DIR"
  runuser -u postgres -- test -x "$DIR" || {
    say "the postgres user cannot reach $DIR: choose a TEAM_SERVER_DIR whose parent folders every user may enter"
    exit 1
  }
fi
if [ ! -s "$DIR/pgdata/PG_VERSION" ]; then
  mkdir -p "$DIR/pgdata"; [ "$(id -u)" = 0 ] && chown postgres "$DIR/pgdata"
  as_postgres "$pg_bin/initdb" -D "$DIR/pgdata" --auth-local=trust --auth-host=scram-sha-256 \
    -U postgres >/dev/null
fi
if ! as_postgres "$pg_bin/pg_ctl" -D "$DIR/pgdata" status >/dev/null 2>&1; then
  as_postgres "$pg_bin/pg_ctl" -D "$DIR/pgdata" -l "$DIR/logs/postgres.log" -w \
    -o "-p $PG_PORT -k $DIR/pgsock -c listen_addresses=127.0.0.1" start >/dev/null
fi
psql_() { as_postgres psql -q -v ON_ERROR_STOP=1 -h "$DIR/pgsock" -p "$PG_PORT" -U postgres "$@"; }

# 3. Database user and databases; the database password is generated once, kept mode 600.
if [ ! -s "$DIR/db_password" ]; then
  (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/db_password")
fi
db_password=$(cat "$DIR/db_password")
# The auth app's CSRF key: generated once unless given (several servers must share one).
if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
  [ -s "$DIR/flask_secret" ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/flask_secret")
  MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$DIR/flask_secret")
fi
export MLFLOW_FLASK_SERVER_SECRET_KEY
psql_ -d postgres <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow') THEN
    CREATE ROLE mlflow LOGIN PASSWORD '$db_password';
  END IF;
END \$\$;
SQL
for db in mlflow mlflow_auth; do
  psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || psql_ -d postgres -c "CREATE DATABASE $db OWNER mlflow"
done
backend="postgresql+psycopg2://mlflow:$db_password@127.0.0.1:$PG_PORT/mlflow"

# 4. The auth app's config (its own database; the admin password comes from the environment).
(umask 077; cat > "$DIR/basic_auth.ini" <<INI
[mlflow]
default_permission = READ
database_uri = postgresql+psycopg2://mlflow:$db_password@127.0.0.1:$PG_PORT/mlflow_auth
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
)

# 5. The tracking server, in its own session so that stopping it stops its workers.
if [ -s "$DIR/mlflow.pid" ] && kill -0 "$(cat "$DIR/mlflow.pid")" 2>/dev/null; then
  say "already running (pid $(cat "$DIR/mlflow.pid"))"
else
  [[ "$ARTIFACTS" == *://* ]] || mkdir -p "$ARTIFACTS"
  MLFLOW_AUTH_CONFIG_PATH="$DIR/basic_auth.ini" setsid "$MLFLOW" server \
    --backend-store-uri "$backend" \
    --artifacts-destination "$ARTIFACTS" --serve-artifacts \
    --app-name basic-auth \
    --host 127.0.0.1 --port "$MLFLOW_PORT" \
    --allowed-hosts "127.0.0.1:$MLFLOW_PORT,localhost:$MLFLOW_PORT" \
    >"$DIR/logs/mlflow.log" 2>&1 < /dev/null &
  echo $! > "$DIR/mlflow.pid"
fi

# 6. Wait until it answers its health check.
for _ in $(seq 1 240); do
  if curl -fsS "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null 2>&1; then
    cat <<EOF2
MLflow team server is up: http://127.0.0.1:$MLFLOW_PORT
  backend store: PostgreSQL on 127.0.0.1:$PG_PORT (database mlflow)
  artifacts:     $ARTIFACTS (served: clients need no storage credentials)
Log in (UI: user admin, the password you set) or point a client at it:
  export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
  export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=<your password>
Stop it with: TEAM_SERVER_DIR=$DIR scripts/team-server-down.sh
EOF2
    exit 0
  fi
  kill -0 "$(cat "$DIR/mlflow.pid")" 2>/dev/null || break
  sleep 0.5
done
say "the server did not answer; last lines of $DIR/logs/mlflow.log:"
tail -n 20 "$DIR/logs/mlflow.log" >&2
exit 1
