#!/usr/bin/env python3
"""Probe vern's access controls from outside, as a client on loopback would.

Starts `vern dev` with TLS and mutual TLS (a throwaway CA, server and client
certificates made with openssl), then checks with a real gRPC client (grpcio):

  1   a server stream ends with UNAUTHENTICATED once its token expires
  2   suspending a tenant ends its integration's open streams with PERMISSION_DENIED;
      its auditor's and admin's audit exports go on (documented: they may still
      read while suspended; --export-ends-on-suspension expects them to end too)
  3   the first write after SuspendTenant returns is PERMISSION_DENIED
  4   one client cannot hold more than server.max_streams_per_client streams, and
      other tenants are still served while it tries
  5   idle TCP connections are closed within the handshake timeout, and health
      still answers meanwhile
  6   the internal listener is a private Unix socket; the gateway speaks TLS only
      and requires a client certificate

Prints one PASS/FAIL line per check and a summary; exits 1 if any check failed.

    python3 scripts/probe-access.py [--vern PATH] [--keep] [--export-ends-on-suspension]

grpcio and grpcio-tools are installed into ~/.cache/vern-probe-venv when the running
interpreter lacks them; the script then re-runs itself with that venv.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV = Path.home() / ".cache" / "vern-probe-venv"
# gRPC core logs the TLS failures that check 6 provokes on purpose; keep them out.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

# What vern documents (crates/kit/src/config.rs defaults, README).
MAX_STREAMS_PER_CLIENT = 64
HANDSHAKE_TIMEOUT_S = 10


# --------------------------------------------------------------------------- deps


def ensure_deps() -> None:
    """Re-runs this script in a venv with grpcio and grpcio-tools if they are missing."""
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401

        return
    except ImportError:
        pass
    if os.environ.get("VERN_PROBE_IN_VENV"):
        sys.exit(f"grpcio/grpcio-tools still not importable in {VENV}")
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(py), "-c", "import grpc, grpc_tools"], capture_output=True)
    if probe.returncode != 0:
        print(f"installing grpcio grpcio-tools into {VENV}", file=sys.stderr)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "grpcio", "grpcio-tools"], check=True
        )
    env = dict(os.environ, VERN_PROBE_IN_VENV="1")
    os.execve(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]], env)


# --------------------------------------------------------------------------- results


@dataclass
class Results:
    lines: list[tuple[str, bool, str]] = field(default_factory=list)

    def record(self, name: str, ok: bool, detail: str) -> None:
        self.lines.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)

    @property
    def failed(self) -> int:
        return sum(1 for _, ok, _ in self.lines if not ok)


# --------------------------------------------------------------------------- setup


HEALTH_PROTO = """
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
"""


def generate_stubs(proto_root: Path, out: Path) -> None:
    """Python stubs of every proto under proto/vern, plus grpc.health.v1."""
    import grpc_tools
    from grpc_tools import protoc

    out.mkdir(parents=True)
    extra = out / "extra"
    (extra / "probe").mkdir(parents=True)
    (extra / "probe" / "health.proto").write_text(HEALTH_PROTO)
    protos = sorted(str(p.relative_to(proto_root)) for p in (proto_root / "vern").rglob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {proto_root / 'vern'}")
    include = Path(grpc_tools.__file__).parent / "_proto"
    for root, files in ((proto_root, protos), (extra, ["probe/health.proto"])):
        args = [
            "protoc",
            f"-I{root}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {root}")
    sys.path.insert(0, str(out))


def load_stubs() -> dict:
    names = {
        "tenants": "vern.tenants.v1.tenants",
        "subjects": "vern.subjects.v1.subjects",
        "rights": "vern.rights.v1.rights",
        "audit": "vern.audit.v1.audit",
        "health": "probe.health",
    }
    mods = {}
    for key, base in names.items():
        mods[key] = importlib.import_module(base + "_pb2")
        mods[key + "_grpc"] = importlib.import_module(base + "_pb2_grpc")
    return mods


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for localhost/127.0.0.1, and two client
    certificates (one vern presents to its own components, one this probe uses)."""
    d.mkdir(parents=True)
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=vern-probe CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )

    def leaf(name: str, cn: str, ext: str) -> None:
        (d / f"{name}.ext").write_text(ext)
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-out", f"{name}.key", cwd=d)
        openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}",
                "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.crt", cwd=d)

    leaf("server", "localhost",
         "basicConstraints=critical,CA:FALSE\n"
         "keyUsage=critical,digitalSignature\n"
         "extendedKeyUsage=serverAuth,clientAuth\n"
         "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("internal", "client"):
        leaf(name, f"vern-probe-{name}",
             "basicConstraints=critical,CA:FALSE\n"
             "keyUsage=critical,digitalSignature\n"
             "extendedKeyUsage=clientAuth\n")
    return {p.stem + "_" + p.suffix[1:]: p for p in d.iterdir() if p.suffix in (".crt", ".key")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Vern:
    binary: Path
    data_dir: Path
    env: dict
    proc: subprocess.Popen
    log: Path
    port: int
    internal: str = ""
    console: str = ""

    def token(self, role: str, tenant: str | None = None, expires_in: int = 3600,
              sub: str = "probe") -> str:
        cmd = [str(self.binary), "token", "--role", role, "--sub", sub,
               "--expires-in", str(expires_in), "--data-dir", str(self.data_dir)]
        if tenant:
            cmd += ["--tenant", tenant]
        out = subprocess.run(cmd, env=self.env, cwd=self.data_dir.parent, check=True,
                             capture_output=True, text=True)
        return out.stdout.strip()


def start_vern(binary: Path, work: Path, certs: dict[str, Path]) -> Vern:
    data = work / "data"
    # Traversable by others, so check 6 tests vern's own run directory and socket
    # modes rather than this one (vern leaves an existing data directory's mode as is).
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERN_")}
    env.update(
        VERN_TLS__CERT_FILE=str(certs["server_crt"]),
        VERN_TLS__KEY_FILE=str(certs["server_key"]),
        VERN_TLS__CLIENT_CA_FILE=str(certs["ca_crt"]),
        VERN_TLS__CA_FILE=str(certs["ca_crt"]),
        VERN_TLS__CLIENT_CERT_FILE=str(certs["internal_crt"]),
        VERN_TLS__CLIENT_KEY_FILE=str(certs["internal_key"]),
        VERN_AUTH__LEEWAY_SECONDS="0",
        NO_COLOR="1",
    )
    log = work / "vern-dev.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [str(binary), "dev", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
             "--console-listen", "127.0.0.1:0"],
            cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    vern = Vern(binary, data, env, proc, log, port)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = ANSI.sub("", log.read_text(errors="replace"))
        gw = re.search(r"^\s*gateway\s+(\S+)", text, re.M)
        internal = re.search(r"^\s*internal\s+(\S+)", text, re.M)
        console = re.search(r"^\s*console\s+http://(\S+?)/", text, re.M)
        if gw and internal and console:
            if gw.group(1) != f"127.0.0.1:{port}":
                raise RuntimeError(f"vern dev printed gateway {gw.group(1)}, asked for {port}")
            vern.internal = internal.group(1)
            vern.console = console.group(1)
            return vern
        if proc.poll() is not None:
            raise RuntimeError(f"vern dev exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError("vern dev did not print its addresses within 90 s")


def stop_vern(vern: Vern | None) -> None:
    if vern is None or vern.proc.poll() is not None:
        return
    vern.proc.terminate()
    try:
        vern.proc.wait(timeout=25)
    except subprocess.TimeoutExpired:
        vern.proc.kill()
        vern.proc.wait(timeout=10)


def token_exp(token: str) -> float:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return float(json.loads(base64.urlsafe_b64decode(payload))["exp"])


# --------------------------------------------------------------------------- probe


class Probe:
    def __init__(self, vern: Vern, certs: dict[str, Path], stubs: dict, results: Results):
        import grpc

        self.grpc = grpc
        self.vern = vern
        self.certs = certs
        self.s = stubs
        self.r = results
        self.target = f"127.0.0.1:{vern.port}"
        self.creds = grpc.ssl_channel_credentials(
            root_certificates=certs["ca_crt"].read_bytes(),
            private_key=certs["client_key"].read_bytes(),
            certificate_chain=certs["client_crt"].read_bytes(),
        )
        self.channels: list = []
        self.run_id = uuid.uuid4().hex[:6]
        self._n = 0

    # ---- helpers

    def channel(self, creds=None, secure: bool = True):
        """A channel of its own (own connection: channel args differ)."""
        self._n += 1
        opts = [("grpc.probe_channel", self._n), ("grpc.use_local_subchannel_pool", 1)]
        if secure:
            ch = self.grpc.aio.secure_channel(self.target, creds or self.creds, options=opts)
        else:
            ch = self.grpc.aio.insecure_channel(self.target, options=opts)
        self.channels.append(ch)
        return ch

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close(grace=None)

    @staticmethod
    def md(token: str):
        return (("authorization", f"Bearer {token}"),)

    def uid(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{self.run_id}-{self._n}"

    async def create_tenant(self, ch, admin: str, prefix: str) -> str:
        t = self.s["tenants"]
        tenant_id = self.uid(prefix)
        stub = self.s["tenants_grpc"].TenantServiceStub(ch)
        await stub.CreateTenant(
            t.CreateTenantRequest(
                tenant_id=tenant_id, name=f"Probe {tenant_id}", org_number="989990748",
                dpo_email="personvern@probe.example", request_id=self.uid("create"),
            ),
            metadata=self.md(admin), timeout=15,
        )
        return tenant_id

    async def suspend(self, ch, admin: str, tenant: str):
        stub = self.s["tenants_grpc"].TenantServiceStub(ch)
        return await stub.SuspendTenant(
            self.s["tenants"].SuspendTenantRequest(
                tenant_id=tenant, reason="access probe", request_id=self.uid("suspend")),
            metadata=self.md(admin), timeout=15,
        )

    async def resume(self, ch, admin: str, tenant: str):
        stub = self.s["tenants_grpc"].TenantServiceStub(ch)
        return await stub.ResumeTenant(
            self.s["tenants"].ResumeTenantRequest(
                tenant_id=tenant, reason="access probe done", request_id=self.uid("resume")),
            metadata=self.md(admin), timeout=15,
        )

    async def create_subject(self, ch, token: str):
        stub = self.s["subjects_grpc"].SubjectServiceStub(ch)
        return await stub.CreateSubject(
            self.s["subjects"].CreateSubjectRequest(
                email=f"{self.uid('kari')}@example.no", request_id=self.uid("subj")),
            metadata=self.md(token), timeout=15,
        )

    def watch(self, ch, token: str):
        stub = self.s["rights_grpc"].RightsServiceStub(ch)
        return stub.WatchEvents(self.s["rights"].WatchEventsRequest(), metadata=self.md(token))

    def export_follow(self, ch, token: str):
        stub = self.s["audit_grpc"].AuditServiceStub(ch)
        return stub.ExportEvents(self.s["audit"].ExportEventsRequest(follow=True),
                                 metadata=self.md(token))

    async def health(self, ch, timeout: float = 5.0):
        stub = self.s["health_grpc"].HealthStub(ch)
        return await stub.Check(self.s["health"].HealthCheckRequest(), timeout=timeout)

    async def opened(self, call, settle: float = 0.5) -> tuple[bool, str]:
        """Whether a server stream is open: its headers arrived and it has not ended."""
        try:
            await asyncio.wait_for(call.initial_metadata(), timeout=10)
        except asyncio.TimeoutError:
            return False, "no response headers within 10 s"
        await asyncio.sleep(settle)
        if call.done():
            return False, f"ended at once with {(await call.code()).name}: {await call.details()}"
        return True, ""

    @staticmethod
    def ending(call, log: list | None = None) -> asyncio.Task:
        """A task draining a stream (messages appended to `log` with their monotonic
        arrival time); resolves to (code, details, monotonic end, wall end)."""

        async def run():
            try:
                async for msg in call:
                    if log is not None:
                        log.append((time.monotonic(), msg))
            except Exception:  # the status is read below
                pass
            code = await call.code()
            return code, await call.details(), time.monotonic(), time.time()

        return asyncio.ensure_future(run())

    @staticmethod
    async def outcome(task: asyncio.Task, within: float):
        """The stream's ending if it comes within `within` seconds, else None."""
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout=max(0.0, within))
        except asyncio.TimeoutError:
            return None

    # ---- checks

    async def check_expiry(self, admin: str) -> None:
        G = self.grpc.StatusCode
        ch = self.channel()
        tenant = await self.create_tenant(ch, admin, "exp")
        cases = []
        for name, role, open_stream in (
            ("1a expired token ends open WatchEvents (integration)", "integration", self.watch),
            ("1b expired token ends open ExportEvents follow (auditor)", "auditor",
             self.export_follow),
        ):
            tok = self.vern.token(role, tenant, expires_in=3, sub=f"{role}-expiring")
            call = open_stream(ch, tok)
            ok, why = await self.opened(call, settle=0.2)
            if not ok:
                self.r.record(name, False, f"stream did not open: {why}")
                continue
            cases.append((name, call, token_exp(tok), time.time(), self.ending(call)))
        for name, call, exp, opened_at, task in cases:
            end = await self.outcome(task, exp - time.time() + 15)
            if end is None:
                call.cancel()
                self.r.record(name, False, f"stream still open {time.time() - exp:.1f} s after "
                                           f"exp (opened {exp - opened_at:.1f} s before exp)")
                continue
            code, details, _, ended = end
            after = ended - exp
            ok = code == G.UNAUTHENTICATED and -0.5 <= after <= 5.0
            self.r.record(name, ok,
                          f"ended with {code.name} {after:+.2f} s after exp (open "
                          f"{ended - opened_at:.2f} s; want UNAUTHENTICATED within 5 s): "
                          f"{details!r}")

    async def check_suspension_streams(self, admin: str, exports_end: bool) -> None:
        """WatchEvents of an integration must end with PERMISSION_DENIED. ExportEvents
        follow streams of an auditor and a tenant admin: vern documents that these
        roles may still read while their tenant is suspended (SuspendTenant in
        tenants.proto; allowed_while_suspended in crates/kit/src/tenancy.rs), so by
        default they must stay open and keep delivering the tenant's chain (the
        suspension, and the integration's refused write, as they are chained); with
        exports_end they must end with PERMISSION_DENIED like WatchEvents."""
        G = self.grpc.StatusCode
        audit = self.s["audit"]
        ch = self.channel()
        tenant = await self.create_tenant(ch, admin, "susp")
        crm = self.vern.token("integration", tenant, sub="crm-watcher")
        watch_name = "2a WatchEvents (integration) ends with PERMISSION_DENIED on suspension"
        if exports_end:
            verdict = "ends with PERMISSION_DENIED on suspension"
        else:
            verdict = "stays open and live on suspension (documented: may still read)"
        streams = {watch_name: (self.watch(ch, crm), [])}
        for label, role in (("2b", "auditor"), ("2c", "tenant-admin")):
            tok = self.vern.token(role, tenant, sub=f"{role}-tail")
            streams[f"{label} ExportEvents follow ({role}) {verdict}"] = (
                self.export_follow(ch, tok), [])
        tasks = {}
        for name, (call, log) in streams.items():
            ok, why = await self.opened(call, settle=0.0)
            if not ok:
                self.r.record(name, False, f"stream did not open: {why}")
            else:
                tasks[name] = self.ending(call, log)
        await asyncio.sleep(1.5)  # past at least one periodic re-check while active
        for name, task in list(tasks.items()):
            if task.done():
                code, details, _, _ = task.result()
                self.r.record(name, False,
                              f"stream ended before the suspension: {code.name} {details!r}")
                del tasks[name]
        t0 = time.monotonic()
        await self.suspend(ch, admin, tenant)
        returned = time.monotonic()
        # A write of the suspended tenant's integration: refused, and (refused for its
        # tenant) chained in the tenant's audit trail, which the exports should deliver.
        try:
            await self.create_subject(ch, crm)
            write = "the integration's CreateSubject after the suspension was OK"
        except self.grpc.aio.AioRpcError as e:
            write = f"the integration's CreateSubject after the suspension: {e.code().name}"
        for name, task in tasks.items():
            call, log = streams[name]
            end = await self.outcome(task, returned + 2.0 - time.monotonic())
            if name == watch_name or exports_end:
                if end is None:
                    call.cancel()
                    self.r.record(name, False, "still open 2.0 s after SuspendTenant returned "
                                               "(want PERMISSION_DENIED within ~2 s)")
                    continue
                code, details, ended, _ = end
                ok = code == G.PERMISSION_DENIED and ended - returned <= 2.0
                self.r.record(name, ok,
                              f"ended with {code.name} {ended - returned:+.2f} s after "
                              f"SuspendTenant returned (call took {returned - t0:.2f} s): "
                              f"{details!r}")
                continue
            if end is not None:
                code, details, ended, _ = end
                self.r.record(name, False, f"ended with {code.name} {ended - returned:+.2f} s "
                                           f"after SuspendTenant returned: {details!r}")
                continue

            def seen(action: str, outcome: int) -> float | None:
                for at, msg in log:
                    if (at >= t0 and msg.WhichOneof("item") == "event"
                            and msg.event.action == action and msg.event.outcome == outcome):
                        return at - returned
                return None

            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and (
                    seen("SuspendTenant", audit.OUTCOME_SUCCESS) is None
                    or seen("CreateSubject", audit.OUTCOME_DENIED) is None):
                await asyncio.sleep(0.1)
            suspended_at = seen("SuspendTenant", audit.OUTCOME_SUCCESS)
            denied_at = seen("CreateSubject", audit.OUTCOME_DENIED)
            still_open = not call.done()
            ok = still_open and suspended_at is not None and denied_at is not None

            def when(x: float | None) -> str:
                return "not delivered within 5 s" if x is None else f"delivered at {x:+.2f} s"

            self.r.record(name, ok,
                          f"{'open' if still_open else 'ENDED'} "
                          f"{time.monotonic() - returned:.1f} s after SuspendTenant returned; "
                          f"SuspendTenant event {when(suspended_at)}, refused CreateSubject "
                          f"event {when(denied_at)} ({write})")
            call.cancel()
        await self.resume(ch, admin, tenant)

    async def check_suspend_then_write(self, admin: str) -> None:
        """The write right after SuspendTenant returns is refused, and nothing of it is
        stored (after resuming, the subject is not found)."""
        name = "3 first CreateSubject after SuspendTenant is PERMISSION_DENIED"
        G = self.grpc.StatusCode
        sub = self.s["subjects"]
        ch = self.channel()
        tenant = await self.create_tenant(ch, admin, "write")
        crm = self.vern.token("integration", tenant, sub="crm-writer")
        await self.create_subject(ch, crm)  # every cache now holds "active"
        await self.suspend(ch, admin, tenant)
        returned = time.monotonic()
        email = f"{self.uid('after-suspend')}@example.no"
        stub = self.s["subjects_grpc"].SubjectServiceStub(ch)
        try:
            subj = await stub.CreateSubject(
                sub.CreateSubjectRequest(email=email, request_id=self.uid("subj")),
                metadata=self.md(crm), timeout=15)
            result, denied = f"OK (subject_id {subj.subject_id})", False
        except self.grpc.aio.AioRpcError as e:
            result, denied = f"{e.code().name}: {e.details()!r}", e.code() == G.PERMISSION_DENIED
        sent_after = time.monotonic() - returned
        await self.resume(ch, admin, tenant)
        # Nothing written: look the e-mail up once the tenant answers again (a resume
        # takes effect within auth.tenant_status_ttl_seconds, 5 s).
        stored = "unknown"
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                await stub.FindSubject(sub.FindSubjectRequest(email=email),
                                       metadata=self.md(crm), timeout=10)
                stored = "FOUND: the refused write was stored"
                break
            except self.grpc.aio.AioRpcError as e:
                if e.code() == G.PERMISSION_DENIED:
                    await asyncio.sleep(0.25)
                    continue
                stored = ("not stored (FindSubject NOT_FOUND)" if e.code() == G.NOT_FOUND
                          else f"FindSubject {e.code().name}: {e.details()!r}")
                break
        ok = denied and stored.startswith("not stored")
        self.r.record(name, ok, f"CreateSubject sent {sent_after * 1000:.0f} ms after "
                                f"SuspendTenant returned got {result}; {stored}")

    async def check_stream_flood(self, admin: str, total: int = 1100) -> None:
        setup = self.channel()
        flood_tenant = await self.create_tenant(setup, admin, "flood")
        other_tenant = await self.create_tenant(setup, admin, "other")
        crm = self.vern.token("integration", flood_tenant, sub="crm-flood")
        other = self.vern.token("integration", other_tenant, sub="crm-other")
        subject = await self.create_subject(setup, other)

        chans = [self.channel() for _ in range(4)]
        calls = [self.watch(chans[i % len(chans)], crm) for i in range(total)]
        started = time.monotonic()
        # Wait until the outcome settles: every call answered or ended, and nothing
        # changed for 3 s (at least 5 s, at most 40 s).
        last, stable_since = -1, time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            done = sum(1 for c in calls if c.done())
            now = time.monotonic()
            if done != last:
                last, stable_since = done, now
            if (now - started >= 5 and now - stable_since >= 3) or now - started >= 40:
                break
        codes: dict[str, int] = {}
        for c in calls:
            if c.done():
                k = (await c.code()).name
                codes[k] = codes.get(k, 0) + 1
        # Held open: not ended, and answered (response headers arrived).
        held = pending = 0
        for c in calls:
            if c.done():
                continue
            try:
                await asyncio.wait_for(c.initial_metadata(), timeout=2)
                held += 1
            except asyncio.TimeoutError:
                pending += 1
        exhausted = codes.pop("RESOURCE_EXHAUSTED", 0)

        # While they are held: another tenant's read.
        sub_stub = self.s["subjects_grpc"].SubjectServiceStub(self.channel())
        t = time.monotonic()
        try:
            got = await sub_stub.GetSubject(
                self.s["subjects"].GetSubjectRequest(subject_id=subject.subject_id),
                metadata=self.md(other), timeout=10)
            other_ok = got.subject_id == subject.subject_id
            other_detail = f"GetSubject of tenant {other_tenant} OK in {time.monotonic() - t:.3f} s"
        except self.grpc.aio.AioRpcError as e:
            other_ok = False
            other_detail = f"GetSubject of tenant {other_tenant} failed: {e.code().name} {e.details()!r}"
        still_held = sum(1 for c in calls if not c.done())

        ok = 1 <= held <= MAX_STREAMS_PER_CLIENT and held + exhausted == total
        self.r.record(
            f"4a {total} WatchEvents from one client: at most {MAX_STREAMS_PER_CLIENT} held, "
            f"rest RESOURCE_EXHAUSTED", ok,
            f"held open {held}, RESOURCE_EXHAUSTED {exhausted}, other endings {codes or 'none'}, "
            f"unanswered {pending} (settled after {time.monotonic() - started:.1f} s)")
        self.r.record("4b another tenant is served meanwhile", other_ok and still_held > 0,
                      f"{other_detail}; {still_held} flood streams open at the time")
        for c in calls:
            c.cancel()

    async def check_idle_sockets(self, count: int = 200,
                                 limit: float = HANDSHAKE_TIMEOUT_S + 5) -> None:
        host, port = "127.0.0.1", self.vern.port

        async def idle() -> tuple[float, str]:
            t0 = time.monotonic()
            reader, writer = await asyncio.open_connection(host, port)
            try:
                while True:
                    left = t0 + limit + 5 - time.monotonic()
                    if left <= 0:
                        return float("inf"), "open"
                    try:
                        data = await asyncio.wait_for(reader.read(4096), timeout=left)
                    except asyncio.TimeoutError:
                        return float("inf"), "open"
                    if not data:
                        return time.monotonic() - t0, "eof"
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - t0, "reset"
            finally:
                writer.close()

        tasks = [asyncio.ensure_future(idle()) for _ in range(count)]
        await asyncio.sleep(1.0)
        open_now = sum(1 for t in tasks if not t.done())
        try:
            resp = await self.health(self.channel(), timeout=5)
            status = self.s["health"].HealthCheckResponse.ServingStatus.Name(resp.status)
            health_ok = status == "SERVING"
            health_detail = f"health Check answered {status}"
        except self.grpc.aio.AioRpcError as e:
            health_ok, health_detail = False, f"health Check failed: {e.code().name} {e.details()!r}"
        self.r.record("5a health answers SERVING while idle sockets are open",
                      health_ok and open_now > 0,
                      f"{health_detail} with {open_now}/{count} idle connections open")
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        times = [o[0] for o in outcomes if not isinstance(o, BaseException)]
        closed = [x for x in times if x <= limit]
        lingering = len(times) - len(closed)
        ok = not errors and len(closed) == count
        detail = (f"{len(closed)}/{count} closed by the server within {limit:.0f} s"
                  + (f" (first {min(closed):.1f} s, last {max(closed):.1f} s)" if closed else "")
                  + (f"; {lingering} still open after {limit:.0f} s" if lingering else "")
                  + (f"; {len(errors)} connect errors: {errors[0]!r}" if errors else ""))
        self.r.record(f"5b {count} idle TCP connections closed by the server within {limit:.0f} s",
                      ok, detail)

    async def check_internal_listener(self) -> None:
        pid = self.vern.proc.pid
        # (a) listening sockets of the vern dev process
        ss = subprocess.run(["ss", "-H", "-lntup"], capture_output=True, text=True).stdout
        mine = [l for l in ss.splitlines() if f"pid={pid}," in l]
        ports = sorted({(l.split()[0], l.split()[4]) for l in mine})
        unix = subprocess.run(["ss", "-H", "-lxp"], capture_output=True, text=True).stdout
        unix_mine = sorted({l.split()[4] for l in unix.splitlines() if f"pid={pid}," in l})
        want_sock = self.vern.internal.removeprefix("unix:")
        # The web console listens on loopback too (HTTP, for the browser on this machine).
        expected_tcp = sorted([("tcp", f"127.0.0.1:{self.vern.port}"), ("tcp", self.vern.console)])
        ok = ports == expected_tcp and unix_mine == [want_sock]
        self.r.record("6a vern dev listens on the gateway port, the console's loopback port and "
                      "its internal socket only", ok,
                      f"tcp/udp {[f'{p}:{a}' for p, a in ports]}, unix {unix_mine} "
                      f"(expected tcp:127.0.0.1:{self.vern.port}, tcp:{self.vern.console}, "
                      f"unix {want_sock})")

        # (b) modes
        if not self.vern.internal.startswith("unix:"):
            self.r.record("6b internal socket 0600 in a 0700 directory", False,
                          f"internal listener is not a Unix socket: {self.vern.internal}")
        else:
            path = Path(want_sock)
            st, dst = path.stat(), path.parent.stat()
            ok = (stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
                  and stat.S_IMODE(dst.st_mode) == 0o700 and st.st_uid == os.getuid()
                  and dst.st_uid == os.getuid())
            self.r.record("6b internal socket 0600 in a 0700 directory", ok,
                          f"{path}: {oct(stat.S_IMODE(st.st_mode))} "
                          f"{'socket' if stat.S_ISSOCK(st.st_mode) else 'NOT a socket'}, "
                          f"dir {oct(stat.S_IMODE(dst.st_mode))}")

        # (c) another user cannot connect
        self.r.record("6c user nobody cannot connect to the internal socket",
                      *self._connect_as_nobody(want_sock))

        # (d) plaintext to the gateway gets no gRPC answer
        G = self.grpc.StatusCode
        try:
            resp = await self.health(self.channel(secure=False), timeout=5)
            grpc_plain = f"plaintext health Check answered {resp.status} (OK)"
            plain_ok = False
        except self.grpc.aio.AioRpcError as e:
            grpc_plain = f"plaintext gRPC call failed with {e.code().name}"
            plain_ok = e.code() != G.OK
        raw = await self._raw_h2_preface(tls=False)
        raw_ok = not raw.startswith("HTTP/2 SETTINGS")
        self.r.record("6d plaintext connection to the gateway gets no gRPC answer",
                      plain_ok and raw_ok, f"{grpc_plain}; raw HTTP/2 preface -> {raw}")

        # (e) TLS without a client certificate is refused
        no_cert = self.grpc.ssl_channel_credentials(
            root_certificates=self.certs["ca_crt"].read_bytes())
        try:
            resp = await self.health(self.channel(creds=no_cert), timeout=5)
            grpc_nocert, nocert_ok = f"health Check answered {resp.status} without a client cert", False
        except self.grpc.aio.AioRpcError as e:
            grpc_nocert = f"gRPC over TLS without client cert failed with {e.code().name}"
            nocert_ok = e.code() != G.OK
        raw = await self._raw_h2_preface(tls=True)
        raw_ok = not raw.startswith("HTTP/2 SETTINGS")
        self.r.record("6e TLS without a client certificate is refused", nocert_ok and raw_ok,
                      f"{grpc_nocert}; raw TLS (no cert) + HTTP/2 preface -> {raw}")

    def _connect_as_nobody(self, path: str) -> tuple[bool, str]:
        if os.geteuid() != 0:
            return False, "cannot test: not root, so cannot run a connect attempt as nobody"
        runner = shutil.which("runuser")
        py = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                   if os.access(p, os.X_OK)), None)
        if not runner or not py:
            return False, "cannot test: runuser or a system python3 is missing"
        code = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX)\n"
            "try:\n s.connect(sys.argv[1]); print('CONNECTED')\n"
            "except PermissionError as e: print('EACCES', e)\n"
            "except OSError as e: print('OSERROR', e)\n"
        )
        out = subprocess.run([runner, "-u", "nobody", "--", py, "-c", code, path],
                             capture_output=True, text=True, timeout=20)
        text = (out.stdout + out.stderr).strip()
        return text.startswith("EACCES"), f"connect as nobody -> {text!r}"

    async def _raw_h2_preface(self, tls: bool) -> str:
        """Sends the HTTP/2 client preface and an empty SETTINGS frame; describes what
        came back ("HTTP/2 SETTINGS …" if the server spoke HTTP/2)."""
        ctx = None
        if tls:
            ctx = ssl.create_default_context(cafile=str(self.certs["ca_crt"]))
            ctx.set_alpn_protocols(["h2"])
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.vern.port, ssl=ctx,
                                        server_hostname="localhost" if tls else None),
                timeout=5)
        except Exception as e:  # noqa: BLE001
            return f"connection/handshake failed: {type(e).__name__}: {e}"
        try:
            writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(4096), timeout=5)
        except asyncio.TimeoutError:
            return "no answer within 5 s"
        except Exception as e:  # noqa: BLE001
            return f"refused: {type(e).__name__}: {e}"
        finally:
            writer.close()
        if not data:
            return "closed without an answer"
        if len(data) >= 9 and data[3] == 0x04:
            return f"HTTP/2 SETTINGS frame ({len(data)} bytes)"
        return f"non-HTTP/2 bytes {data[:16].hex()}"


# --------------------------------------------------------------------------- main


async def run_checks(vern: Vern, certs: dict[str, Path], stubs: dict, results: Results,
                     exports_end: bool) -> None:
    probe = Probe(vern, certs, stubs, results)
    admin = vern.token("platform-admin", sub="probe-platform")
    checks = [
        ("1", lambda: probe.check_expiry(admin)),
        ("2", lambda: probe.check_suspension_streams(admin, exports_end)),
        ("3", lambda: probe.check_suspend_then_write(admin)),
        ("4", lambda: probe.check_stream_flood(admin)),
        ("5", probe.check_idle_sockets),
        ("6", probe.check_internal_listener),
    ]
    try:
        for label, check in checks:
            try:
                await check()
            except Exception as e:  # noqa: BLE001 - a probe error is a failed check
                detail = f"{type(e).__name__}: {e}"
                if hasattr(e, "code") and callable(e.code):
                    detail = f"RPC failed: {e.code().name} {e.details()!r}"
                results.record(f"{label} (probe error)", False, detail)
    finally:
        await probe.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vern", type=Path, default=REPO_ROOT / "target" / "debug" / "vern",
                        help="the vern binary (default: target/debug/vern of this repo)")
    parser.add_argument("--proto", type=Path, default=REPO_ROOT / "proto",
                        help="proto root (default: proto/ of this repo)")
    parser.add_argument("--export-ends-on-suspension", action="store_true",
                        help="check 2b/2c: expect an auditor's and a tenant admin's ExportEvents "
                             "follow stream to end with PERMISSION_DENIED on suspension, instead "
                             "of the documented behaviour (these roles may still read)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (certificates, data, vern log)")
    args = parser.parse_args()
    ensure_deps()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop vern dev

    binary = args.vern.resolve()
    if not os.access(binary, os.X_OK):
        print(f"no executable vern at {binary} (use --vern PATH)", file=sys.stderr)
        return 2
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="vern-probe-"))
    work.chmod(0o755)  # see start_vern: others may traverse up to vern's own directories
    results = Results()
    vern = None
    try:
        generate_stubs(args.proto.resolve(), work / "gen")
        stubs = load_stubs()
        certs = make_certs(work / "tls")
        vern = start_vern(binary, work, certs)
        print(f"vern dev pid {vern.proc.pid}: gateway 127.0.0.1:{vern.port} (TLS, client certs "
              f"required), internal {vern.internal}", flush=True)
        asyncio.run(run_checks(vern, certs, stubs, results, args.export_ends_on_suspension))
        if vern.proc.poll() is not None:
            results.record("vern dev still running after the checks", False,
                           f"exited with {vern.proc.returncode}")
    except Exception as e:  # noqa: BLE001
        results.record("setup", False, f"{type(e).__name__}: {e}")
    finally:
        stop_vern(vern)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    total = len(results.lines)
    print(f"SUMMARY: {total - results.failed}/{total} passed, {results.failed} failed "
          f"({time.monotonic() - started:.1f} s)")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
