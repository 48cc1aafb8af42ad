#!/usr/bin/env bash
# One MLflow tracking server that every hqcbench worker (process or machine) logs to: runs and metrics
# in PostgreSQL, artifacts uploaded through the server (workers need no shared disk or bucket access).
# Loopback only unless authentication is in front of it: an open MLflow server lets anyone on the
# network read, overwrite and delete every run. See docs/scale_out.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/tracking_server.sh [options] [-- extra `mlflow server` options]

Start `mlflow server` with a PostgreSQL backend store and proxied artifacts, after printing the
MLFLOW_TRACKING_URI that workers export.

Options (each also read from the environment variable named in brackets):
  --db-url URL       backend store, postgresql://USER:PASSWORD@HOST:PORT/DB   [HQCBENCH_MLFLOW_DB_URL]
                     Required. Give MLflow its own database: its migration tables clash with Optuna's.
  --artifacts DEST   where the server stores uploaded artifacts: a local folder (created if missing)
                     or a URI such as s3://bucket/prefix (default: ./mlartifacts)  [HQCBENCH_MLFLOW_ARTIFACTS]
  --host HOST        interface to listen on (default: 127.0.0.1)                 [HQCBENCH_MLFLOW_HOST]
  --port PORT        port to listen on (default: 5000)                            [HQCBENCH_MLFLOW_PORT]
  --workers N        server worker processes (default: 4, MLflow's)               [HQCBENCH_MLFLOW_WORKERS]
  --auth MODE        none (default): loopback only;                               [HQCBENCH_MLFLOW_AUTH]
                     basic: MLflow's basic-auth app (--app-name basic-auth; needs
                       MLFLOW_FLASK_SERVER_SECRET_KEY, and MLFLOW_AUTH_ADMIN_PASSWORD or an
                       admin_password in the ini named by MLFLOW_AUTH_CONFIG_PATH);
                     proxy: a reverse proxy with TLS and authentication is the only way in.
                     basic and proxy allow a host other than loopback.
  -h, --help         print this help and exit

Anything after `--` is passed to `mlflow server` unchanged, e.g. `-- --allowed-hosts mlflow.example.org`
(needed when clients reach the server by a public name: MLflow's default allows only localhost and
private addresses).

Example:
  HQCBENCH_MLFLOW_DB_URL=postgresql://mlflow:secret@127.0.0.1:5432/mlflow scripts/tracking_server.sh --port 5000
EOF
}

die() {  # one line naming what is wrong, exit code 2 like hqcbench's own bad-input errors
  echo "tracking_server.sh: $*" >&2
  exit 2
}

db_url=${HQCBENCH_MLFLOW_DB_URL:-}
artifacts=${HQCBENCH_MLFLOW_ARTIFACTS:-./mlartifacts}
host=${HQCBENCH_MLFLOW_HOST:-127.0.0.1}
port=${HQCBENCH_MLFLOW_PORT:-5000}
workers=${HQCBENCH_MLFLOW_WORKERS:-4}
auth=${HQCBENCH_MLFLOW_AUTH:-none}
extra=()

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --db-url|--artifacts|--host|--port|--workers|--auth)
      [ $# -ge 2 ] || die "$1 needs a value (see --help)"
      case "$1" in
        --db-url) db_url=$2 ;;
        --artifacts) artifacts=$2 ;;
        --host) host=$2 ;;
        --port) port=$2 ;;
        --workers) workers=$2 ;;
        --auth) auth=$2 ;;
      esac
      shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ -n "$db_url" ] || die "no backend store: set HQCBENCH_MLFLOW_DB_URL or pass --db-url postgresql://USER:PASSWORD@HOST:PORT/DB"
case "$db_url" in
  # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; hqcbench ships psycopg2 (requirements.txt)
  postgresql://*) db_url="postgresql+psycopg2://${db_url#postgresql://}" ;;
  postgresql+*://*) ;;
  *) die "--db-url must be a postgresql:// URL (a shared server needs a shared database), got ${db_url%%://*}://..." ;;
esac
shown_db=$(printf '%s' "$db_url" | sed -E 's#^([^:/]+://[^:/@]+):[^@]*@#\1:***@#')  # password masked

[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "--port must be 1..65535, got $port"
[[ "$workers" =~ ^[0-9]+$ ]] && [ "$workers" -ge 1 ] || die "--workers must be an integer >= 1, got $workers"

case "$host" in
  127.*|localhost|::1) loopback=1 ;;
  *) loopback=0 ;;
esac
case "$auth" in
  none)
    [ "$loopback" = 1 ] || die "refusing to listen on $host without authentication: anyone who reaches the \
port could read, change and delete every run. Put MLflow's basic auth (--auth basic) or an authenticating \
TLS reverse proxy (--auth proxy) in front first; see docs/scale_out.md" ;;
  basic)
    [ -n "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ] || die "--auth basic needs MLFLOW_FLASK_SERVER_SECRET_KEY \
(a random string, the same on every server process; it protects the login forms against CSRF)"
    extra=(--app-name basic-auth "${extra[@]}") ;;
  proxy) ;;
  *) die "--auth must be none, basic or proxy, got $auth" ;;
esac

case "$artifacts" in
  *://*) ;;  # s3://, gs://, file://, ...: MLflow resolves it
  *) mkdir -p "$artifacts" && artifacts=$(cd "$artifacts" && pwd) ;;  # absolute: independent of later cwd
esac

command -v mlflow >/dev/null 2>&1 || die "mlflow not found on PATH: activate hqcbench's virtual environment first"

case "$host" in
  0.0.0.0|::) client_host=$(hostname -f 2>/dev/null || hostname) ;;  # every interface: name this machine
  *:*) client_host="[$host]" ;;  # an IPv6 address in a URL
  *) client_host=$host ;;
esac
echo "MLflow tracking server: runs in $shown_db, artifacts in $artifacts (proxied), listening on $host:$port, auth $auth"
echo "On every worker:"
if [ "$auth" = proxy ]; then
  echo "export MLFLOW_TRACKING_URI=https://...  # the reverse proxy's address, which forwards to http://$client_host:$port"
else
  echo "export MLFLOW_TRACKING_URI=http://$client_host:$port"
fi
if [ "$auth" = basic ]; then
  echo "export MLFLOW_TRACKING_USERNAME=... MLFLOW_TRACKING_PASSWORD=...  # a user created through the server"
fi

# MLflow 3 also starts a job runner and seven huey consumer processes for its GenAI features (scorers,
# prompt optimisation, trace jobs), which hqcbench never uses: off unless the environment turns them on.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

exec mlflow server \
  --backend-store-uri "$db_url" \
  --serve-artifacts \
  --artifacts-destination "$artifacts" \
  --host "$host" \
  --port "$port" \
  --workers "$workers" \
  "${extra[@]}"
