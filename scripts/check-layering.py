#!/usr/bin/env python3
"""The crate layering rules, from `cargo metadata` (run by .ci/run):

- no service crate depends on another service crate (shared code lives in vern-kit,
  vern-seal or vern-proto);
- vern-kit, vern-seal and vern-proto depend on no service crate.

Development dependencies count too: a test that needs another service talks to it
through its API (the end-to-end tests live in the separate `tests` crate).

Exits non-zero naming every edge that breaks a rule.
"""
import json
import subprocess
import sys

SERVICES = {
    "vern-tenants",
    "vern-subjects",
    "vern-consents",
    "vern-retention",
    "vern-rights",
    "vern-audit",
    "vern-gateway",
}
SHARED = {"vern-kit", "vern-seal", "vern-proto"}

meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
packages = {p["name"]: p for p in meta["packages"]}
missing = (SERVICES | SHARED) - packages.keys()
if missing:
    sys.exit(f"check-layering: unknown crates {sorted(missing)}: update the lists")
broken = []
for name in sorted(SERVICES | SHARED):
    for dep in packages[name]["dependencies"]:
        if dep["name"] in SERVICES:
            rule = "a service links another service" if name in SERVICES else "shared code names a service"
            broken.append(f"{name} -> {dep['name']}: {rule}")
if broken:
    print("check-layering: the crate layering is broken:", file=sys.stderr)
    for b in broken:
        print(f"  {b}", file=sys.stderr)
    sys.exit(1)
print(f"check-layering: {len(SERVICES)} service crates link no other service; kit, seal and proto name none")
