#!/usr/bin/env bash
# Installs what the console's browser tests need, when missing: Debian's chromium and
# chromium-driver (apt-get: as root), axe-core from the npm registry (pinned, in
# ~/.cache/vern-axe, where the tests look for it) and the test OpenID provider's
# packages (oidc-provider, pinned by tests/idp/package-lock.json). `make browser-deps`;
# `.ci/run` calls it. Without these, `make test` skips the browser tests and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "installing chromium and chromium-driver"
  apt-get install -y -q chromium chromium-driver >/dev/null
fi
AXE_VERSION=4.14.1
axe_dir="${XDG_CACHE_HOME:-$HOME/.cache}/vern-axe"
if [ ! -f "$axe_dir/node_modules/axe-core/axe.min.js" ] ||
  ! grep -q "\"version\": \"$AXE_VERSION\"" "$axe_dir/node_modules/axe-core/package.json"; then
  mkdir -p "$axe_dir"
  (cd "$axe_dir" && npm install --no-audit --no-fund --silent "axe-core@$AXE_VERSION")
fi
if [ ! -f tests/idp/node_modules/oidc-provider/package.json ]; then
  (cd tests/idp && npm ci --no-audit --no-fund --silent)
fi
echo "browser test tools: $(command -v chromium), $(command -v chromedriver), axe-core $AXE_VERSION, oidc-provider $(sed -n 's/.*"version": "\(.*\)".*/\1/p' tests/idp/node_modules/oidc-provider/package.json | head -1)"
