#!/usr/bin/env bash
# Reproduces the BENCHMARKS.md "deployed shape" table: starts the separate-process
# topology on PostgreSQL (scripts/topology.sh --bench), runs `vern bench` against it
# (Check at 64 and 16 in flight, BatchCheck of 10,000 with 100,000 subjects seeded,
# import of 20,000 rows), then Check in process (`vern dev`'s shape), and prints one
# line per figure. Every result is also kept as JSON in $VERN_BENCH_OUT (default a
# temp dir). Release build; takes about ten minutes on two cores.
#
#   scripts/bench-topology.sh                 # one replica of each service
#   VERN_TOPOLOGY_REPLICAS=2 scripts/bench-topology.sh
#   VERN_BENCH_ROUNDS=3 VERN_BENCH_DURATION=5s VERN_BENCH_SUBJECTS=5000 (defaults)
#   VERN_BENCH_ONLY="check batch-check import dev" (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p vern-cli --bin vern
bin="$target/release/vern"
out=${VERN_BENCH_OUT:-$(mktemp -d -t vern-bench.XXXXXX)}
mkdir -p "$out"
rounds=${VERN_BENCH_ROUNDS:-3}
duration=${VERN_BENCH_DURATION:-5s}
subjects=${VERN_BENCH_SUBJECTS:-5000}
only=${VERN_BENCH_ONLY:-check batch-check import dev}
base=${VERN_TOPOLOGY_PORT_BASE:-50050}
export VERN_AUTH__HS256_SECRET=${VERN_AUTH__HS256_SECRET:-vern-topology-dev-secret}
gateway="http://127.0.0.1:$((base + 1))"
if [ "${VERN_TOPOLOGY_REPLICAS:-1}" -gt 1 ]; then
  internal="http://127.0.0.2:$((base + 13))"
else
  internal="http://127.0.0.1:$((base + 13))"
fi
wants() { [[ " $only " == *" $1 "* ]]; }

topo=""
if wants check || wants batch-check || wants import; then
  ready="$out/ready"
  rm -f "$ready"
  VERN_BIN="$bin" VERN_TOPOLOGY_DIR="$out/topology" VERN_TOPOLOGY_READY_FILE="$ready" \
    scripts/topology.sh --bench >"$out/topology.out" 2>&1 &
  topo=$!
  trap '[ -n "$topo" ] && kill "$topo" 2>/dev/null; wait 2>/dev/null || true' EXIT INT TERM
  for _ in $(seq 1 600); do
    [ -s "$ready" ] && break
    kill -0 "$topo" 2>/dev/null || { cat "$out/topology.out" >&2; exit 1; }
    sleep 0.2
  done
  [ -s "$ready" ] || { echo "the topology did not start; see $out" >&2; exit 1; }
fi
remote=(--target "$gateway" --internal "$internal" --data-dir "$out/topology/data")

check_line() {
  jq -r '"\(.target) \(.concurrency) in flight: Check \(.rps|floor) req/s, echo \(.baseline_rps|floor) req/s, ratio \(.ratio*100|floor/100), p99 \(.p99_ms*100|floor/100) vs \(.baseline_p99_ms*100|floor/100) ms (\(.p99_ratio*100|floor/100)×), errors \(.errors)"' "$1"
}

if wants check; then
  for c in 64 16; do
    "$bin" bench check "${remote[@]}" --subjects "$subjects" --duration "$duration" \
      --rounds "$rounds" --concurrency "$c" --json >"$out/check-topology-$c.json"
    check_line "$out/check-topology-$c.json"
  done
fi
if wants batch-check; then
  "$bin" bench batch-check "${remote[@]}" --subjects 100000 --json >"$out/batch-check-topology.json"
  jq -r '"\(.target) BatchCheck of \(.batch) with \(.subjects) subjects: p50 \(.p50_ms*10|floor/10) ms, mean \(.mean_ms*10|floor/10) ms"' "$out/batch-check-topology.json"
fi
if wants import; then
  "$bin" bench import "${remote[@]}" --rows 20000 --json >"$out/import-topology.json"
  jq -r '"\(.target) import of \(.rows) rows: \(.rows_per_s|floor) rows/s, first tenth \(.first_tenth_rows_per_s|floor), last tenth \(.last_tenth_rows_per_s|floor) rows/s"' "$out/import-topology.json"
fi
if [ -n "$topo" ]; then
  kill "$topo" 2>/dev/null || true
  wait "$topo" 2>/dev/null || true
  topo=""
fi
if wants dev; then
  for c in 64 16; do
    "$bin" bench check --subjects "$subjects" --duration "$duration" --rounds "$rounds" \
      --concurrency "$c" --json >"$out/check-dev-$c.json"
    check_line "$out/check-dev-$c.json"
  done
fi
echo "results in $out"
