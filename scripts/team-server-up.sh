#!/usr/bin/env bash
# Start a team tracking server on this machine, for trying scenario 3 out:
# PostgreSQL backend store, artifacts served by the server (clients need no storage
# credentials), basic authentication. Stop it with scripts/team-server-down.sh.
#
# Who gets in (run as root, PostgreSQL runs as the `postgres` OS user):
#   - PostgreSQL's socket is in $TEAM_SERVER_DIR/pgsock (mode 700, owner postgres) and only the
#     `postgres` OS user may use it (peer authentication, as role postgres). Over TCP it listens
#     on 127.0.0.1 only and admits one role, `mlflow`, to its two databases, with a password
#     (scram-sha-256); every other role, database, address or method is refused.
#   - The database password is generated once into $TEAM_SERVER_DIR/db_password and reaches
#     libpq through a pgpass file ($TEAM_SERVER_DIR/pgpass): it is on no command line.
#   - Everything the script creates is its owner's alone (umask 077: folders 700, files 600);
#     the state folder and logs/ are 710 with group postgres, so that PostgreSQL can reach its
#     own folders without any other user entering or listing them.
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
MLFLOW_PORT=${MLFLOW_PORT:-5000}
PG_PORT=${PG_PORT:-5433}
here=$(cd "$(dirname "$0")/.." && pwd)
MLFLOW=${MLFLOW:-$( [ -x "$here/.venv/bin/mlflow" ] && echo "$here/.venv/bin/mlflow" || echo mlflow)}
say() { printf 'team-server: %s\n' "$*" >&2; }
root() { [ "$(id -u)" = 0 ]; }

# 1. PostgreSQL binaries, from the system packages if missing (installed files keep the
#    system's modes, hence the umask only afterwards).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
  say "installing PostgreSQL from the system packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
id postgres >/dev/null 2>&1 || { say "no 'postgres' user: install the postgresql package"; exit 1; }
as_postgres() { if root; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_user=$(root && echo postgres || id -un)   # the OS user PostgreSQL runs as

# From here on everything created is its owner's alone.
umask 077
DIR=$(mkdir -p "${TEAM_SERVER_DIR:-.team-server}" && cd "${TEAM_SERVER_DIR:-.team-server}" && pwd)
ARTIFACTS=${ARTIFACTS_DESTINATION:-$DIR/artifacts}

# 2. The state folder. As root: PostgreSQL's folders belong to postgres; the state folder and
#    logs/ are root:postgres 710 (postgres may pass through, nobody else may enter). Modes are
#    set on every start, so a folder made by an older, looser version of this script is fixed.
mkdir -p "$DIR/pgsock" "$DIR/pgdata" "$DIR/logs"
[ -e "$DIR/logs/postgres.log" ] || : > "$DIR/logs/postgres.log"
find "$DIR" -mindepth 1 ! -path "$DIR/logs" -perm /077 -exec chmod go-rwx {} +
if ! root; then
  chmod 700 "$DIR" "$DIR/logs"
else
  chown postgres "$DIR/pgsock" "$DIR/pgdata" "$DIR/logs/postgres.log"
  chown "root:$(id -gn postgres)" "$DIR" "$DIR/logs"
  chmod 710 "$DIR" "$DIR/logs"
  runuser -u postgres -- test -x "$DIR" || {
    say "the postgres user cannot reach $DIR: choose a TEAM_SERVER_DIR whose parent folders every user may enter"
    exit 1
  }
fi

# 3. A private cluster owned by postgres (PostgreSQL refuses to run as root), whose access
#    rules are rewritten on every start: local socket for its own OS user only (peer), TCP on
#    loopback for the mlflow role with its password, nothing else.
if [ ! -s "$DIR/pgdata/PG_VERSION" ]; then
  as_postgres "$pg_bin/initdb" -D "$DIR/pgdata" -U postgres \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
fi
as_postgres tee "$DIR/pgdata/pg_hba.conf" >/dev/null <<HBA
# Written by scripts/team-server-up.sh on every start; a connection no line matches is refused.
# TYPE  DATABASE            USER      ADDRESS        METHOD
local   all                 postgres                 peer map=owner
host    mlflow,mlflow_auth  mlflow    127.0.0.1/32   scram-sha-256
HBA
as_postgres tee "$DIR/pgdata/pg_ident.conf" >/dev/null <<IDENT
# Written by scripts/team-server-up.sh: the OS user the cluster runs as is its superuser.
# MAPNAME  SYSTEM-USERNAME  PG-USERNAME
owner      $pg_user         postgres
IDENT
if as_postgres "$pg_bin/pg_ctl" -D "$DIR/pgdata" status >/dev/null 2>&1; then
  as_postgres "$pg_bin/pg_ctl" -D "$DIR/pgdata" reload >/dev/null
else
  as_postgres "$pg_bin/pg_ctl" -D "$DIR/pgdata" -l "$DIR/logs/postgres.log" -w \
    -o "-p $PG_PORT -k $DIR/pgsock -c listen_addresses=127.0.0.1 -c unix_socket_permissions=0700" \
    start >/dev/null
fi
psql_() { as_postgres "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR/pgsock" -p "$PG_PORT" -U postgres "$@"; }

# 4. Database role and databases. The password is generated once (mode 600) and goes to psql
#    on its standard input and to libpq through the pgpass file: never on a command line.
if [ ! -s "$DIR/db_password" ]; then
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/db_password"
fi
db_password=$(cat "$DIR/db_password")
{
  printf '\\set db_password %s\n' "$db_password"   # printf is a builtin: no process sees it
  cat <<'SQL'
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow') AS missing \gset
\if :missing
CREATE ROLE mlflow;
\endif
ALTER ROLE mlflow WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'db_password';
SQL
} | psql_ -d postgres
for db in mlflow mlflow_auth; do
  psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || psql_ -d postgres -c "CREATE DATABASE $db OWNER mlflow"
done
printf '127.0.0.1:%s:*:mlflow:%s\n' "$PG_PORT" "$db_password" > "$DIR/pgpass"
# The auth app's CSRF key: generated once unless given (several servers must share one).
if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
  [ -s "$DIR/flask_secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/flask_secret"
  MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$DIR/flask_secret")
fi
export MLFLOW_FLASK_SERVER_SECRET_KEY

# 5. The auth app's config (its own database; the admin password comes from the environment).
cat > "$DIR/basic_auth.ini" <<INI
[mlflow]
default_permission = READ
database_uri = postgresql+psycopg2://mlflow@127.0.0.1:$PG_PORT/mlflow_auth
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI

# 6. The tracking server, in its own session so that stopping it stops its workers. Its
#    database URIs hold no password: libpq reads it from PGPASSFILE.
# A killed server whose parent has not reaped it yet is a zombie: gone, whatever kill -0 says.
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
if [ -s "$DIR/mlflow.pid" ] && alive "$(cat "$DIR/mlflow.pid")"; then
  say "already running (pid $(cat "$DIR/mlflow.pid"))"
else
  [[ "$ARTIFACTS" == *://* ]] || mkdir -p "$ARTIFACTS"
  PGPASSFILE="$DIR/pgpass" MLFLOW_AUTH_CONFIG_PATH="$DIR/basic_auth.ini" \
  MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://mlflow@127.0.0.1:$PG_PORT/mlflow" \
  setsid "$MLFLOW" server \
    --artifacts-destination "$ARTIFACTS" --serve-artifacts \
    --app-name basic-auth \
    --host 127.0.0.1 --port "$MLFLOW_PORT" \
    --allowed-hosts "127.0.0.1:$MLFLOW_PORT,localhost:$MLFLOW_PORT" \
    >>"$DIR/logs/mlflow.log" 2>&1 < /dev/null &
  echo $! > "$DIR/mlflow.pid"
fi

# 7. Wait until it answers its health check.
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
  alive "$(cat "$DIR/mlflow.pid")" || break
  sleep 0.5
done
say "the server did not answer; last lines of $DIR/logs/mlflow.log:"
tail -n 20 "$DIR/logs/mlflow.log" >&2
exit 1
