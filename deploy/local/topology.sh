#!/usr/bin/env bash
# Starts vern as it is deployed, on this machine: every component its own
# `vern serve` process on PostgreSQL over loopback, with a shared HS256 secret and
# master key (development values, printed below), and the web console (`vern serve
# console`, plain HTTP, a client of the gateway). Stops them all on Ctrl-C or when the
# script is killed.
#
#   deploy/local/topology.sh                 # one of each: services on 127.0.0.1
#   VERN_TOPOLOGY_REPLICAS=2 deploy/local/topology.sh
#                                            # two replicas of every service and of
#                                            # the console, on 127.0.0.2 and 127.0.0.3
#   VERN_BIN=target/release/vern deploy/local/topology.sh
#   VERN_TOPOLOGY_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test ...
#
# Ports (VERN_TOPOLOGY_PORT_BASE, default 50050): the gateway on 127.0.0.1:base+1
# (50051), the console on base+2 (http://127.0.0.1:50052, each replica's address with
# replicas), tenants subjects consents retention rights audit on base+11..base+16
# (50061-50066), each process's Prometheus /metrics on base+21..base+26 (same
# address as the process) and the gateway's on 127.0.0.1:base+20.
#
# The console gets what its Deployment gets: the database (its sessions in the schema
# <prefix>_console, shared by its replicas) and the gateway's URL (https:// verified
# with the test CA under VERN_TOPOLOGY_TLS=1); no master key, no HS256 secret, no dev
# key, so no development sign-in. It answers GET / with the sign-in page (200).
#
# Replicas: replica i (1-based) of every service listens on 127.0.0.(i+1), and the
# gateway and the services reach each service at http://$VERN_TOPOLOGY_NAME:<port>
# (default vern-replicas.test), a name that must resolve to all of those addresses —
# like a Kubernetes headless Service. The script adds the name to /etc/hosts when it
# is missing and the file is writable (root); otherwise it says what to add.
#
# Each run uses a fresh schema prefix (`topo_<random>`), dropped at exit unless
# VERN_TOPOLOGY_KEEP=1 or the file $VERN_TOPOLOGY_DIR/keep exists; VERN_TOPOLOGY_PREFIX
# starts on an earlier run's schemas instead (a restart with other configuration).
# Logs go to $VERN_TOPOLOGY_DIR (default a temp dir).
#
# $VERN_TOPOLOGY_DIR/replica-<i>.env, when present: one `NAME=value` or
# `--unset=NAME` per line, in any order (blank lines and `#` comments are skipped),
# given to replica i of every service only (not the gateway or the console) — e.g. a
# new key configuration on one replica, as in the middle of a rolling update. Works
# with and without TLS.
# VERN_TOPOLOGY_READY_FILE: written (the schema prefix) once everything is SERVING.
#
# VERN_TOPOLOGY_IDP=1: a real OpenID provider, as people sign in when deployed: the
# test provider of tests/idp (oidc-provider from npm; `cd tests/idp && npm ci` first)
# on http://127.0.0.1:base+3 (50053). Its accounts come from VERN_TOPOLOGY_IDP_ACCOUNTS
# (JSON, see tests/idp/provider.mjs; default: `officer` and `admin` of department
# `demo`, `auditor` of it, any password). Every component then takes the provider's
# access tokens (issuer the provider's URL, audience urn:vern, its JWKS) besides
# HS256 tokens with that issuer and audience, and each console replica signs people in
# through it (client `vern-console`, secret VERN_TOPOLOGY_IDP_SECRET).
#
# VERN_TOPOLOGY_TLS=1: every hop over TLS, as the prod-tls overlay deploys it. A test
# CA and one certificate (localhost, the replica addresses and the shared name) are
# made with openssl in $VERN_TOPOLOGY_DIR/tls; every listener serves it, the services
# are reached at https://… and require it as a client certificate (mutual TLS), the
# gateway asks its clients for none. Clients trust $VERN_TOPOLOGY_DIR/tls/ca.crt
# (`vern --ca …`).
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=${VERN_BIN:-${CARGO_TARGET_DIR:-target}/debug/vern}
if [ -z "${VERN_BIN:-}" ]; then
  cargo build -q -p vern-cli --bin vern
fi
db=${VERN_TOPOLOGY_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
dir=${VERN_TOPOLOGY_DIR:-$(mktemp -d -t vern-topology.XXXXXX)}
replicas=${VERN_TOPOLOGY_REPLICAS:-1}
name=${VERN_TOPOLOGY_NAME:-vern-replicas.test}
base=${VERN_TOPOLOGY_PORT_BASE:-50050}
prefix=${VERN_TOPOLOGY_PREFIX:-"topo_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"}
mkdir -p "$dir"
services=(tenants subjects consents retention rights audit)

export VERN_DATABASE_URL="$db"
export VERN_DATABASE_SCHEMA_PREFIX="$prefix"
# Every process keeps a small pool: replicas × stores share the server's max_connections.
export VERN_DATABASE_MAX_CONNECTIONS=${VERN_DATABASE_MAX_CONNECTIONS:-4}
export VERN_AUTH__HS256_SECRET=${VERN_AUTH__HS256_SECRET:-vern-topology-dev-secret}
export VERN_KEYS__MASTER_KEY=${VERN_KEYS__MASTER_KEY:-dmVybi10b3BvbG9neS1kZXYtbWFzdGVyLWtleS0zMmI=}
# The audit checkpoint key is created in the data dir (development only).
export VERN_AUTH__DEV_KEY=true
export VERN_DATA_DIR="$dir/data"
export VERN_LOG_FORMAT=${VERN_LOG_FORMAT:-json}

if [ "$replicas" -gt 1 ]; then
  host=$name
  want=()
  for i in $(seq 1 "$replicas"); do want+=("127.0.0.$((i + 1))"); done
  have=$(getent ahostsv4 "$name" 2>/dev/null | awk '{print $1}' | sort -u || true)
  for ip in "${want[@]}"; do
    if ! grep -qx "$ip" <<<"$have"; then
      if [ -w /etc/hosts ]; then
        echo "$ip $name" >>/etc/hosts
        echo "added '$ip $name' to /etc/hosts" >&2
      else
        echo "$name must resolve to ${want[*]}: add '$ip $name' to /etc/hosts" >&2
        exit 1
      fi
    fi
  done
else
  host=127.0.0.1
  want=(127.0.0.1)
fi
scheme=http
client_ca=()
if [ "${VERN_TOPOLOGY_TLS:-0}" = 1 ]; then
  scheme=https
  tls="$dir/tls"
  mkdir -p "$tls"
  sans="DNS:localhost,DNS:$name,IP:127.0.0.1"
  for ip in "${want[@]}"; do sans="$sans,IP:$ip"; done
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=vern topology test CA" -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=vern topology" -keyout "$tls/tls.key" -out "$tls/tls.csr" 2>/dev/null
  openssl x509 -req -in "$tls/tls.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
    -CAcreateserial -days 2 -out "$tls/tls.crt" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$sans") 2>/dev/null
  export VERN_TLS__CERT_FILE="$tls/tls.crt" VERN_TLS__KEY_FILE="$tls/tls.key"
  export VERN_TLS__CA_FILE="$tls/ca.crt"
  export VERN_TLS__CLIENT_CERT_FILE="$tls/tls.crt" VERN_TLS__CLIENT_KEY_FILE="$tls/tls.key"
  client_ca=("VERN_TLS__CLIENT_CA_FILE=$tls/ca.crt")
fi
i=0
for svc in "${services[@]}"; do
  up=$(tr '[:lower:]' '[:upper:]' <<<"$svc")
  export "VERN_SERVICES__${up}__URL=$scheme://$host:$((base + 11 + i))"
  i=$((i + 1))
done

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${VERN_TOPOLOGY_KEEP:-0}" != 1 ] && [ ! -e "$dir/keep" ] && command -v psql >/dev/null; then
    psql "$db" -qAt -c "SELECT 'DROP SCHEMA IF EXISTS \"' || nspname || '\" CASCADE;' FROM pg_namespace WHERE nspname LIKE '${prefix}_%'" \
      | psql "$db" -q >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT INT TERM

wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1:$2 did not open; see $dir/$3.log" >&2
  return 1
}

# `GET /healthz` on $1:$2 answers 200 (plain HTTP/1.1, no curl needed).
http_ok() {
  (
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf 'GET /healthz HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$1" "$2" >&3
    IFS= read -r -t 5 status <&3 || exit 1
    [[ $status == "HTTP/1.1 200"* ]]
  ) 2>/dev/null
}

# A console replica answers GET /healthz with 200, and is that process: one that exits (a
# port taken by another process, a database error) fails the start.
wait_console() {
  for _ in $(seq 1 300); do
    if ! kill -0 "$3" 2>/dev/null; then
      echo "the console on $1:$2 exited; see $dir/$4.log:" >&2
      tail -n 5 "$dir/$4.log" >&2
      return 1
    fi
    http_ok "$1" "$2" && return 0
    sleep 0.1
  done
  echo "the console on $1:$2 did not answer GET /healthz with 200; see $dir/$4.log" >&2
  return 1
}

# The OpenID provider, before anything that verifies its tokens starts.
console_env=()
if [ "${VERN_TOPOLOGY_IDP:-0}" = 1 ]; then
  idp_dir="$PWD/tests/idp"
  if [ ! -f "$idp_dir/node_modules/oidc-provider/package.json" ]; then
    echo "VERN_TOPOLOGY_IDP=1 needs the test provider's packages: cd tests/idp && npm ci" >&2
    exit 1
  fi
  idp="http://127.0.0.1:$((base + 3))"
  idp_secret=${VERN_TOPOLOGY_IDP_SECRET:-vern-topology-console-secret}
  accounts=${VERN_TOPOLOGY_IDP_ACCOUNTS:-}
  if [ -z "$accounts" ]; then
    accounts='{"officer": {"tenant": ["demo"], "roles": ["privacy-officer"]},
      "admin": {"tenant": ["demo"], "roles": ["tenant-admin"]},
      "auditor": {"tenant": ["demo"], "roles": ["auditor"]}}'
  fi
  redirects=""
  logouts=""
  for ip in "${want[@]}"; do
    redirects="$redirects http://$ip:$((base + 2))/oidc/callback"
    logouts="$logouts http://$ip:$((base + 2))/"
  done
  (cd "$idp_dir" && exec env VERN_IDP_PORT=$((base + 3)) VERN_IDP_CLIENT_SECRET="$idp_secret" \
    VERN_IDP_REDIRECT_URIS="$redirects" VERN_IDP_POST_LOGOUT_URIS="$logouts" \
    VERN_IDP_ACCOUNTS="$accounts" \
    node provider.mjs) >"$dir/idp.log" 2>&1 &
  pids+=($!)
  echo $! >"$dir/idp.pid"
  for _ in $(seq 1 300); do
    grep -q '"issuer"' "$dir/idp.log" 2>/dev/null && break
    sleep 0.1
  done
  if ! grep -q '"issuer"' "$dir/idp.log"; then
    echo "the OpenID provider did not start; see $dir/idp.log" >&2
    exit 1
  fi
  export VERN_AUTH__ISSUER="$idp" VERN_AUTH__AUDIENCE=urn:vern VERN_AUTH__JWKS_URL="$idp/jwks"
  console_env=(VERN_CONSOLE__OIDC__ISSUER_URL="$idp" VERN_CONSOLE__OIDC__CLIENT_SECRET="$idp_secret"
    VERN_CONSOLE__OIDC__RESOURCE=urn:vern)
fi

# Migrations first, one process (as the Kubernetes migrate Job does).
"$bin" migrate >"$dir/migrate.log" 2>&1
i=0
for svc in "${services[@]}"; do
  port=$((base + 11 + i))
  for r in $(seq 1 "$replicas"); do
    ip=${want[$((r - 1))]}
    log="$svc-$r"
    [ "$replicas" -gt 1 ] || log=$svc
    # `env` takes options only before the first NAME=value: every --unset goes first,
    # in whatever order the file lists them, TLS or not.
    unsets=()
    sets=()
    if [ -f "$dir/replica-$r.env" ]; then
      while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
          '' | '#'*) ;;
          --unset=*) unsets+=("$line") ;;
          *) sets+=("$line") ;;
        esac
      done <"$dir/replica-$r.env"
    fi
    # With TLS the services require client certificates of the CA (mutual TLS).
    env "${unsets[@]}" "${client_ca[@]}" "${sets[@]}" VERN_TELEMETRY__METRICS_LISTEN="$ip:$((base + 21 + i))" \
      "$bin" serve "$svc" --listen "$ip:$port" >"$dir/$log.log" 2>&1 &
    pids+=($!)
    # For fault tests that kill one replica (`env` runs vern in its own process).
    echo $! >"$dir/$log.pid"
  done
  i=$((i + 1))
done
i=0
for svc in "${services[@]}"; do
  for r in $(seq 1 "$replicas"); do
    log="$svc-$r"
    [ "$replicas" -gt 1 ] || log=$svc
    wait_port "${want[$((r - 1))]}" $((base + 11 + i)) "$log"
  done
  i=$((i + 1))
done
VERN_TELEMETRY__METRICS_LISTEN="127.0.0.1:$((base + 20))" \
  "$bin" serve gateway --listen "127.0.0.1:$((base + 1))" >"$dir/gateway.log" 2>&1 &
pids+=($!)
# The console: one process per replica (like the services), reaching the gateway as
# any client does, with only what its Deployment gets (no keys, no signing secret).
# A small pool: it keeps sessions only.
consoles=()
console_pids=()
for r in $(seq 1 "$replicas"); do
  ip=${want[$((r - 1))]}
  log="console-$r"
  [ "$replicas" -gt 1 ] || log=console
  env -u VERN_KEYS__MASTER_KEY -u VERN_AUTH__HS256_SECRET -u VERN_AUTH__DEV_KEY \
    VERN_DATABASE_MAX_CONNECTIONS=2 "${console_env[@]}" \
    VERN_CONSOLE__SESSION_KEY="${VERN_CONSOLE__SESSION_KEY:-dmVybi10b3BvbG9neS1jb25zb2xlLXNlc3Npb24ta2U=}" \
    VERN_CONSOLE__PUBLIC_URL="http://$ip:$((base + 2))" \
    VERN_CONSOLE__GATEWAY_URL="$scheme://127.0.0.1:$((base + 1))" \
    "$bin" serve console --listen "$ip:$((base + 2))" >"$dir/$log.log" 2>&1 &
  pids+=($!)
  console_pids+=($!)
  echo $! >"$dir/$log.pid"
  consoles+=("http://$ip:$((base + 2))/")
done
wait_port 127.0.0.1 $((base + 1)) gateway
for r in $(seq 1 "$replicas"); do
  log="console-$r"
  [ "$replicas" -gt 1 ] || log=console
  wait_console "${want[$((r - 1))]}" $((base + 2)) "${console_pids[$((r - 1))]}" "$log"
done

cat <<EOF
vern topology ready (schemas ${prefix}_*, logs in $dir)
  gateway   127.0.0.1:$((base + 1))
  console   ${consoles[*]} (sessions in ${prefix}_console; no development sign-in)
  sign-in   ${idp:-no OpenID provider (set VERN_TOPOLOGY_IDP=1)}
  services  ${want[*]} ports $((base + 11))-$((base + 16)) (${services[*]}), reached as $scheme://$host:<port>
  metrics   <address>:$((base + 21))-$((base + 26)) per service replica, 127.0.0.1:$((base + 20)) the gateway
  tls       ${VERN_TLS__CA_FILE:-off (set VERN_TOPOLOGY_TLS=1)}
  secret    VERN_AUTH__HS256_SECRET=$VERN_AUTH__HS256_SECRET (tokens: vern token --data-dir with the same secret in VERN_AUTH__HS256_SECRET)
Ctrl-C stops every component.
EOF
if [ -n "${VERN_TOPOLOGY_READY_FILE:-}" ]; then
  echo "$prefix" >"$VERN_TOPOLOGY_READY_FILE"
fi
wait
