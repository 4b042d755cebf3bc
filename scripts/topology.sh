#!/usr/bin/env bash
# Starts vern as it is deployed, on this machine: every component its own `vern serve`
# process on PostgreSQL over loopback (gateway 127.0.0.1:50051, web console
# http://127.0.0.1:50052/, services 50061-50066; with --replicas 2 every service and
# the console twice, on 127.0.0.2 and 127.0.0.3, the services behind one name).
# A front for deploy/local/topology.sh (its header documents every variable); this one
# builds the binary it runs and can open the rate limits for benchmarks.
#
#   scripts/topology.sh                     # release build, one replica of each
#   scripts/topology.sh --replicas 2        # two replicas of every service
#   scripts/topology.sh --debug             # the debug build (faster to build)
#   scripts/topology.sh --bench             # per-client rate limits raised: one
#                                           # benchmark client is one token subject
#
# Then, for example:
#   target/release/vern bench check --target http://127.0.0.1:50051 \
#     --internal http://127.0.0.1:50063 --data-dir /tmp/x --concurrency 64
# (the HS256 secret comes from VERN_AUTH__HS256_SECRET, printed at start).
# scripts/bench-topology.sh runs the whole BENCHMARKS.md table this way.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) export VERN_TOPOLOGY_REPLICAS="$2"; shift 2 ;;
    --debug) profile=debug; shift ;;
    --bench)
      export VERN_SERVER__RATE_LIMIT_PER_CLIENT=${VERN_SERVER__RATE_LIMIT_PER_CLIENT:-1000000000}
      export VERN_SERVER__RATE_LIMIT_BURST=${VERN_SERVER__RATE_LIMIT_BURST:-1000000000}
      export VERN_SERVER__CONCURRENCY_LIMIT_PER_CLIENT=${VERN_SERVER__CONCURRENCY_LIMIT_PER_CLIENT:-4096}
      shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

target=${CARGO_TARGET_DIR:-target}
if [ -z "${VERN_BIN:-}" ]; then
  if [ "$profile" = release ]; then
    cargo build -q --release -p vern-cli --bin vern
  else
    cargo build -q -p vern-cli --bin vern
  fi
  export VERN_BIN="$target/$profile/vern"
fi
exec deploy/local/topology.sh
