#!/usr/bin/env bash
# Builds the fuzz targets and runs each for N seconds (default 30); fails on the first
# crash, panic, leak or timeout a target finds (the input is left in fuzz/artifacts/).
#
#   fuzz/run.sh            # 30 s per target
#   fuzz/run.sh 20         # CI
#   fuzz/run.sh 3600 identifiers   # a longer campaign on one target
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). The
# seed corpora in fuzz/seeds/ are read, never written: new inputs go to fuzz/corpus/
# (gitignored), which later runs reuse.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(token_verify identifiers page_token audit_canonical audit_export)
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# The build is shared by every target; -O with debug assertions (cargo-fuzz default).
# VERN_FUZZ_TARGET_DIR moves it out of fuzz/target (e.g. to a cache kept between CI runs).
target_dir=()
if [ -n "${VERN_FUZZ_TARGET_DIR:-}" ]; then
  target_dir=(--target-dir "$VERN_FUZZ_TARGET_DIR")
fi
# One retry, one job at a time: a CI run once saw the linker die with SIGBUS while five
# sanitizer builds linked at once (the space left is printed for the next one who looks).
if ! cargo +nightly fuzz build "${target_dir[@]}"; then
  echo "fuzz: the build failed; space left:" >&2
  df -h . "${VERN_FUZZ_TARGET_DIR:-target}" /tmp >&2 || true
  echo "fuzz: building again, one job at a time" >&2
  CARGO_BUILD_JOBS=1 cargo +nightly fuzz build "${target_dir[@]}"
fi
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "fuzz: $t for ${seconds}s"
  log="$(mktemp)"
  if ! cargo +nightly fuzz run "${target_dir[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/; reproduce with: cargo +nightly fuzz run $t <file>" >&2
    exit 1
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|Done)" "$log" || tail -n 3 "$log"
  rm -f "$log"
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no finding"
