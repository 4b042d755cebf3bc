#!/usr/bin/env python3
"""The crate layering rules, from `cargo metadata` (run by .ci/run):

- no service crate depends on another service crate (shared code lives in vern-kit,
  vern-seal or vern-proto);
- vern-kit, vern-seal, vern-proto and vern-append depend on no service crate.

The service crates are found, not listed: every workspace crate under `crates/` that
is neither shared code (SHARED) nor an assembly of the services (ASSEMBLY: the `vern`
binary and its benchmarks). A new service crate is checked from its first commit.

Development dependencies count too: a test that needs another service talks to it
through its API (the end-to-end tests live in the separate `tests` crate).

Exits non-zero naming every edge that breaks a rule. `--self-test` plants a broken
edge and a new service crate in a copy of the metadata and checks that both are found.
"""
import copy
import json
import os
import subprocess
import sys

SHARED = {"vern-kit", "vern-seal", "vern-proto", "vern-append"}
# Crates that assemble the services into processes and tools: they may link them all.
ASSEMBLY = {"vern-cli", "vern-bench"}


def services_of(meta):
    """Workspace crates under crates/ that are neither shared code nor assembly."""
    root = meta["workspace_root"]
    crates_dir = os.path.join(root, "crates") + os.sep
    members = set(meta["workspace_members"])
    found = set()
    for p in meta["packages"]:
        if p["id"] not in members or not p["manifest_path"].startswith(crates_dir):
            continue
        if p["name"] in SHARED or p["name"] in ASSEMBLY:
            continue
        found.add(p["name"])
    return found


def broken_edges(meta):
    packages = {p["name"]: p for p in meta["packages"]}
    missing = SHARED - packages.keys()
    if missing:
        sys.exit(f"check-layering: shared crates {sorted(missing)} not found: update SHARED")
    services = services_of(meta)
    broken = []
    for name in sorted(services | SHARED):
        for dep in packages[name]["dependencies"]:
            if dep["name"] in services:
                rule = (
                    "a service links another service"
                    if name in services
                    else "shared code names a service"
                )
                broken.append(f"{name} -> {dep['name']}: {rule}")
    return services, broken


def self_test(meta):
    planted = copy.deepcopy(meta)
    by_name = {p["name"]: p for p in planted["packages"]}
    # A service that links another service.
    by_name["vern-rights"]["dependencies"].append({"name": "vern-consents"})
    # A new crate under crates/, in no list, that links a service.
    root = planted["workspace_root"]
    new = {
        "name": "vern-planted",
        "id": "planted 0.1.0",
        "manifest_path": os.path.join(root, "crates", "planted", "Cargo.toml"),
        "dependencies": [{"name": "vern-subjects"}],
    }
    planted["packages"].append(new)
    planted["workspace_members"].append(new["id"])
    services, broken = broken_edges(planted)
    want = {
        "vern-rights -> vern-consents: a service links another service",
        "vern-planted -> vern-subjects: a service links another service",
    }
    if "vern-planted" not in services or not want <= set(broken):
        sys.exit(f"check-layering --self-test: planted edges not found: {broken}")
    print(f"check-layering --self-test: found the planted edges ({len(broken)} broken)")


meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
if "--self-test" in sys.argv[1:]:
    self_test(meta)
    sys.exit(0)
services, broken = broken_edges(meta)
if broken:
    print("check-layering: the crate layering is broken:", file=sys.stderr)
    for b in broken:
        print(f"  {b}", file=sys.stderr)
    sys.exit(1)
print(
    f"check-layering: {len(services)} service crates ({', '.join(sorted(services))}) link no other service; the shared crates ({', '.join(sorted(SHARED))}) link none"
)
