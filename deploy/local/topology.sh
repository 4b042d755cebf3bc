#!/usr/bin/env bash
# Starts vern as it is deployed, on this machine: every component its own
# `vern serve` process on PostgreSQL over loopback — tenants, subjects, consents,
# retention, rights and audit on 127.0.0.1:50061-50066 and the gateway on
# 127.0.0.1:50051 — with a shared HS256 secret and master key (development values,
# printed below). Stops them all on Ctrl-C or when the script is killed.
#
#   deploy/local/topology.sh                 # build (debug) and start
#   VERN_BIN=target/release/vern deploy/local/topology.sh
#   VERN_TOPOLOGY_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test ...
#
# Each run uses a fresh schema prefix (`topo_<random>`), dropped at exit unless
# VERN_TOPOLOGY_KEEP=1. Logs go to $VERN_TOPOLOGY_DIR (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${VERN_BIN:-target/debug/vern}
if [ -z "${VERN_BIN:-}" ]; then
  cargo build -q -p vern-cli --bin vern
fi
db=${VERN_TOPOLOGY_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
dir=${VERN_TOPOLOGY_DIR:-$(mktemp -d -t vern-topology.XXXXXX)}
prefix="topo_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
mkdir -p "$dir"

export VERN_DATABASE_URL="$db"
export VERN_DATABASE_SCHEMA_PREFIX="$prefix"
export VERN_AUTH__HS256_SECRET=${VERN_AUTH__HS256_SECRET:-vern-topology-dev-secret}
export VERN_KEYS__MASTER_KEY=${VERN_KEYS__MASTER_KEY:-dmVybi10b3BvbG9neS1kZXYtbWFzdGVyLWtleS0zMmI=}
# The audit checkpoint key is created in the data dir (development only).
export VERN_AUTH__DEV_KEY=true
export VERN_DATA_DIR="$dir/data"
export VERN_LOG_FORMAT=${VERN_LOG_FORMAT:-json}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${VERN_TOPOLOGY_KEEP:-0}" != 1 ] && command -v psql >/dev/null; then
    psql "$db" -qAt -c "SELECT 'DROP SCHEMA IF EXISTS \"' || nspname || '\" CASCADE;' FROM pg_namespace WHERE nspname LIKE '${prefix}_%'" \
      | psql "$db" -q >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT INT TERM

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open; see $dir/$2.log" >&2
  return 1
}

# Migrations first, one process (as the Kubernetes migrate Job does).
"$bin" migrate >"$dir/migrate.log" 2>&1
port=50061
for svc in tenants subjects consents retention rights audit; do
  "$bin" serve "$svc" >"$dir/$svc.log" 2>&1 &
  pids+=($!)
  wait_port "$port" "$svc"
  port=$((port + 1))
done
"$bin" serve gateway >"$dir/gateway.log" 2>&1 &
pids+=($!)
wait_port 50051 gateway

cat <<EOF
vern topology ready (schemas ${prefix}_*, logs in $dir)
  gateway   127.0.0.1:50051
  services  127.0.0.1:50061-50066 (tenants subjects consents retention rights audit)
  secret    VERN_AUTH__HS256_SECRET=$VERN_AUTH__HS256_SECRET (tokens: vern token --data-dir with the same secret in VERN_AUTH__HS256_SECRET)
Ctrl-C stops every component.
EOF
if [ -n "${VERN_TOPOLOGY_READY_FILE:-}" ]; then
  echo "$prefix" >"$VERN_TOPOLOGY_READY_FILE"
fi
wait
