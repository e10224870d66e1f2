"""Start and stop a real one-node Ceph cluster and its RADOS Gateway (S3) on a loopback address.

A second S3 implementation beside SeaweedFS (`blobshift.lab.seaweed`), with the same interface
as `SeaweedServer`. One mon, one OSD (memstore: the objects live in the OSD's memory), no mgr
unless asked for (RGW does not need one), one `radosgw`; `add_gateway()` starts more `radosgw`
processes over the same cluster, as more nodes of one store behind a proxy.

Ports, all on `ip` only: RGW (beast) on `base_port`, the mon (msgr2 only) on `base_port + 1`, the
OSD's and mgr's messengers in `base_port + 2 .. base_port + 9`. So, as for `SeaweedServer`,
instances whose base ports are 10 apart never clash, whether they share an address or not.
Everything the cluster writes (config, mon store, OSD dir, logs, admin sockets, pid files) is
under `data_dir`, which is the cluster's own. The data does not survive `stop()` (memstore):
every `start()` makes a fresh cluster. Measured here: start ~0.8 s, ~130 MB RSS for the three
processes (+50 MB per extra gateway), stop ~0.2 s; the OSD then grows by ~17 KB per small
object (10,000 objects of 2 KB: OSD ~220 MB), more than the data itself.

Seen with Debian's Ceph 16.2: bucket names need at least 3 characters; keys such as `a//b` and
`x/` are kept as written; SigV2 and SigV4 are both accepted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blobshift.lab.s3server import S3Endpoint

# Debian packages that provide the binaries (see the Makefile's `deps`).
CEPH_PACKAGES = ("ceph-mon", "ceph-osd", "ceph-mgr", "radosgw", "ceph-common")
# Subdirectories of data_dir that belong to the cluster: start() wipes them.
_STATE_DIRS = ("mon", "osd", "mgr", "rgw", "run", "log", "tmp", "crash")


def ceph_binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(
            f"Ceph binary {name!r} not found: apt-get install {' '.join(CEPH_PACKAGES)}"
        )
    return found


def _tail(path: Path, size: int = 3000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def _admin_socket(path: Path, prefix: str, timeout: float = 2.0) -> dict[str, Any]:
    """One command on a daemon's admin socket (what `ceph daemon` does, without the
    Python CLI's start-up time): the JSON request ends with a NUL, the answer is a
    big-endian 32-bit length and that many bytes of JSON."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"prefix": prefix, "format": "json"}).encode() + b"\0")
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(f"admin socket {path} closed early")
            data += chunk
        return json.loads(data[4:])


def _stop_foreign(pid: int, timeout: float) -> None:
    """SIGTERM the process group of a daemon that is not our child, SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                # A zombie (exited, not yet reaped by its new parent) counts as gone.
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    return
            except (OSError, IndexError):
                return
            time.sleep(0.05)


@dataclass
class _Daemon:
    """One cluster process, started in its own session so that its group can be killed."""

    name: str  # Ceph's entity name: mon.a, osd.0, mgr.x, client.rgw.a
    process: subprocess.Popen[bytes]
    log: Path  # Ceph's own log
    out: Path  # stdout/stderr: what a daemon says before its log is open

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        return f"--- {self.log} ---\n{_tail(self.log)}\n--- {self.out} ---\n{_tail(self.out, 1000)}"

    def send(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


class _S3Endpoint(S3Endpoint):
    """What a test needs of one Ceph S3 address: what SeaweedServer offers."""

    def port_in_use(self) -> bool:
        return _port_open(self.ip, self.s3_port)

    def create_bucket(self, bucket: str) -> None:
        client = self.client()
        exists = (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists)
        with contextlib.suppress(*exists):
            client.create_bucket(Bucket=bucket)


@dataclass
class CephRGW(_S3Endpoint):
    """One S3 "cluster": a one-node Ceph cluster on `ip`, RGW on `ip:base_port`."""

    ip: str
    base_port: int
    data_dir: Path
    access_key: str
    secret_key: str
    buckets: list[str] = field(default_factory=list)
    # More (access key, secret key) pairs of the same user: like SeaweedServer's extra keys,
    # each one reaches the same buckets.
    extra_keys: list[tuple[str, str]] = field(default_factory=list)
    # memstore's capacity: RSS grows with the data stored, not with this. Ceph refuses
    # writes at 95 % full, and RGW then times out rather than failing fast.
    memstore_bytes: int = 1 << 30
    pg_num: int = 8
    # RGW runs without a mgr; one adds ~300 MB RSS (its Python modules), for `ceph -s` figures.
    mgr: bool = False
    uid: str = "blobshift"
    daemons: list[_Daemon] = field(default_factory=list, repr=False, compare=False)
    gateways: list[CephGateway] = field(default_factory=list, repr=False, compare=False)

    @property
    def s3_port(self) -> int:
        return self.base_port

    @property
    def mon_port(self) -> int:
        # Not 6789/3300: those would clash between instances on the same address.
        return self.base_port + 1

    @property
    def conf(self) -> Path:
        return self.data_dir / "ceph.conf"

    def _path(self, *parts: str) -> Path:
        return self.data_dir.joinpath(*parts)

    def conf_text(self, fsid: str) -> str:
        d = self.data_dir
        b = self.base_port
        options = {
            "fsid": fsid,
            "mon host": f"[v2:{self.ip}:{self.mon_port}]",
            "public addr": self.ip,
            "cluster addr": self.ip,
            # msgr2 only: one port per messenger, and the mon port is ours, not 6789.
            "ms bind msgr1": "false",
            "ms bind port min": str(b + 2),
            "ms bind port max": str(b + 9),
            # A port taken in that range is a clash to report, not one to wait out (3 x 5 s).
            "ms bind retry count": "1",
            "auth cluster required": "none",
            "auth service required": "none",
            "auth client required": "none",
            # radosgw, as a daemon, asks the mon for "secure" mode only, which needs cephx.
            "ms mon client mode": "crc",
            "keyring": "/dev/null",
            "run dir": f"{d}/run",
            "admin socket": "$run_dir/$name.asok",
            "pid file": "$run_dir/$name.pid",
            "log file": f"{d}/log/$name.log",
            "mon cluster log file": f"{d}/log/cluster.log",
            "crash dir": f"{d}/crash",
            "tmp dir": f"{d}/tmp",
            "mon data": f"{d}/mon/$name",
            "osd data": f"{d}/osd/$name",
            "mgr data": f"{d}/mgr/$name",
            "rgw data": f"{d}/rgw/$name",
            "osd objectstore": "memstore",
            "memstore device bytes": str(self.memstore_bytes),
            # One OSD: one copy, and placement on the OSD level, not the host level.
            "osd pool default size": "1",
            "osd pool default min size": "1",
            "mon allow pool size one": "true",
            "osd crush chooseleaf type": "0",
            # The OSD's weight from a small memstore would round to 0, which maps no PG.
            "osd crush initial weight": "1",
            "osd pool default pg autoscale mode": "off",
            "osd pool default pg num": str(self.pg_num),
            "osd pool default pgp num": str(self.pg_num),
            "mon max pg per osd": "1000",
            # Commit mon updates (pool creations) at once rather than batching for 1 s.
            "paxos propose interval": "0.01",
            "paxos min wait": "0.01",
            # The warning threshold (30 % free) is near what a dev disk has: noise only.
            "mon data avail warn": "5",
            "mon warn on pool no redundancy": "false",
            "mon warn on insecure global id reclaim allowed": "false",
            "osd op num shards": "2",
            # The PG logs live in memory twice with memstore (the log and its omap copy).
            "osd min pg log entries": "100",
            "osd max pg log entries": "100",
            "osd pg log dups tracked": "100",
            "osd pg log trim min": "10",
            # RGW: S3 only, and no background work the tests do not need.
            "rgw enable apis": "s3, admin",
            "rgw thread pool size": "64",
            "rgw dynamic resharding": "false",
            "rgw enable usage log": "false",
            "rgw enable lc threads": "false",
            "rgw enable quota threads": "false",
            "rgw run sync thread": "false",
            # Deleted objects' tails stay in memstore until GC: collect after a minute, not 2 h.
            "rgw gc obj min wait": "60",
            "rgw gc processor period": "60",
        }
        lines = ["# blobshift.lab.ceph: a one-node test cluster, no authentication", "[global]"]
        lines += [f"{key} = {value}" for key, value in options.items()]
        # Clients (the ceph CLI, radosgw-admin) may run several at once: no admin socket.
        lines += ["[client]", "admin socket ="]
        return "\n".join(lines) + "\n"

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> _Daemon:
        out = self._path("log", f"{name}.out")
        with out.open("ab") as f:
            process = subprocess.Popen(
                args,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        daemon = _Daemon(name, process, self._path("log", f"{name}.log"), out)
        self.daemons.append(daemon)
        # For leftovers(): radosgw in the foreground writes no pid file (mon and OSD write
        # the same one themselves).
        self._path("run", f"{name}.pid").write_text(f"{process.pid}\n")
        return daemon

    def _check_daemons(self) -> None:
        for daemon in self.daemons:
            if not daemon.alive():
                raise RuntimeError(
                    f"Ceph {daemon.name} of {self.url} exited with "
                    f"{daemon.process.returncode}:\n{daemon.tail()}"
                )

    def _run(self, args: list[str], deadline: float, what: str, stdin: bytes = b"") -> str:
        """Run a helper command (ceph CLI, radosgw-admin) while watching the daemons;
        `stdin` is its input (what must not be on a command line)."""
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        pending: bytes | None = stdin
        try:
            while True:
                try:
                    out, _ = proc.communicate(pending, timeout=0.1)
                    break
                except subprocess.TimeoutExpired:
                    pending = None  # given once: communicate() keeps feeding it
                    self._check_daemons()
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{what} did not finish in time ({' '.join(args)}):\n"
                            + "\n".join(d.tail() for d in self.daemons)
                        ) from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            # A failed assert prints its backtrace several times: the start of it is enough.
            raise RuntimeError(
                f"{what} failed ({proc.returncode}): {' '.join(args)}\n{text[:3000]}"
            )
        return text

    def _ceph(self, *args: str, deadline: float) -> str:
        left = max(1, int(deadline - time.monotonic()))
        cmd = [ceph_binary("ceph"), "-c", str(self.conf), "--connect-timeout", str(left), *args]
        return self._run(cmd, deadline, f"ceph {args[0]}")

    def _admin(self, *args: str, deadline: float, stdin: bytes = b"") -> str:
        cmd = [ceph_binary("radosgw-admin"), "-c", str(self.conf), *args]
        return self._run(cmd, deadline, f"radosgw-admin {args[0]} {args[1]}", stdin)

    def _wait_socket(self, daemon: _Daemon, ready: Any, deadline: float) -> None:
        """Poll `daemon`'s admin socket until `ready(status)` holds."""
        asok = self._path("run", f"{daemon.name}.asok")
        prefix = "mon_status" if daemon.name.startswith("mon.") else "status"
        last: object = None
        while time.monotonic() < deadline:
            self._check_daemons()
            try:
                last = _admin_socket(asok, prefix)
                if ready(last):
                    return
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(
            f"Ceph {daemon.name} of {self.url} not ready in time ({last}):\n{daemon.tail()}"
        )

    def start_gateway(self, gateway: CephGateway, deadline: float) -> None:
        if gateway.port_in_use():
            raise RuntimeError(f"{gateway.ip}:{gateway.s3_port} is already in use")
        gateway.daemon = self._spawn(
            gateway.name,
            [
                ceph_binary("radosgw"),
                "-f",
                "-c",
                str(self.conf),
                "-n",
                gateway.name,
                # Its own admin socket, which [client] leaves out for the CLI's sake.
                f"--admin-socket={self._path('run', gateway.name + '.asok')}",
                # Without tcp_nodelay a GET or a listing waits ~40 ms (Nagle's algorithm
                # against the client's delayed ACK): 1.6 ms with it.
                f"--rgw-frontends=beast endpoint={gateway.ip}:{gateway.s3_port} tcp_nodelay=1",
            ],
        )
        gateway.wait_ready(max(0.0, deadline - time.monotonic()))

    # -- the interface the tests use -----------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        if self.daemons:
            raise RuntimeError(f"{self.url} is already started")
        # A leftover cluster on these ports would pass for ours (or our OSD would join it).
        for port in (self.s3_port, self.mon_port):
            if _port_open(self.ip, port):
                raise RuntimeError(f"{self.ip}:{port} is already in use: stop what holds it")
        # A daemon whose admin socket path is too long for AF_UNIX (108 bytes) runs without
        # one, and start() would wait for it in vain.
        asok = self._path("run", "client.rgw.n99.asok")
        if len(os.fsencode(asok)) > 107:
            raise ValueError(f"data_dir is too long for Ceph's admin sockets: {asok}")
        deadline = time.monotonic() + timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for sub in _STATE_DIRS:
            shutil.rmtree(self._path(sub), ignore_errors=True)
            self._path(sub).mkdir()
        fsid, osd_uuid = str(uuid.uuid4()), str(uuid.uuid4())
        self.conf.write_text(self.conf_text(fsid))
        conf = ["-c", str(self.conf)]
        try:
            monmap = str(self._path("tmp", "monmap"))
            self._run(
                [
                    ceph_binary("monmaptool"),
                    "--create",
                    "--fsid",
                    fsid,
                    "--addv",
                    "a",
                    f"[v2:{self.ip}:{self.mon_port}]",
                    monmap,
                ],
                deadline,
                "monmaptool",
            )
            self._run(
                [ceph_binary("ceph-mon"), *conf, "--mkfs", "-i", "a", "--monmap", monmap],
                deadline,
                "ceph-mon --mkfs",
            )
            mon = self._spawn("mon.a", [ceph_binary("ceph-mon"), "-f", *conf, "-i", "a"])
            # The OSD's store is made offline, while the mon starts.
            self._path("osd", "osd.0").mkdir()
            self._run(
                [
                    ceph_binary("ceph-osd"),
                    *conf,
                    "--no-mon-config",
                    "--mkfs",
                    "-i",
                    "0",
                    "--osd-uuid",
                    osd_uuid,
                ],
                deadline,
                "ceph-osd --mkfs",
            )
            self._wait_socket(mon, lambda s: s.get("state") == "leader", deadline)
            # The OSD id and uuid the mon knows must be those of the store made above.
            self._ceph("osd", "new", osd_uuid, "0", deadline=deadline)
            osd = self._spawn("osd.0", [ceph_binary("ceph-osd"), "-f", *conf, "-i", "0"])
            if self.mgr:
                self._spawn("mgr.x", [ceph_binary("ceph-mgr"), "-f", *conf, "-i", "x"])
            self._wait_socket(osd, lambda s: s.get("state") == "active", deadline)
            # Makes RGW's zone and first pools too, so the gateway starts on a ready zone.
            self._make_users(deadline)
            self.start_gateway(CephGateway(self, "client.rgw.n1", self.ip, self.s3_port), deadline)
            for bucket in self.buckets:
                self.create_bucket(bucket)
        except BaseException:
            self.stop()
            raise

    def _make_users(self, deadline: float) -> None:
        """The user and its S3 keys. The keys go to radosgw-admin on its stdin (`metadata
        put` of the user, made with generated keys first): a secret on a command line is
        readable by every local user in ps and /proc."""
        uid = self.uid
        self._admin("user", "create", f"--uid={uid}", f"--display-name={uid}", deadline=deadline)
        user = json.loads(self._admin("metadata", "get", f"user:{uid}", deadline=deadline))
        pairs = [(self.access_key, self.secret_key), *self.extra_keys]
        user["data"]["keys"] = [{"user": uid, "access_key": a, "secret_key": s} for a, s in pairs]
        self._admin(
            "metadata", "put", f"user:{uid}", deadline=deadline, stdin=json.dumps(user).encode()
        )

    def wait_ready(self, timeout: float) -> None:
        """Poll until a signed ListBuckets succeeds on the main gateway."""
        if not self.gateways:
            raise RuntimeError(f"{self.url} is not started")
        self.gateways[0].wait_ready(timeout)

    def add_gateway(self, ip: str, port: int, timeout: float = 30.0) -> CephGateway:
        """Start one more `radosgw` on `ip:port` over this cluster (a second node of the
        same store, with the same users and data); stop() stops it with the cluster."""
        if not self.gateways:
            raise RuntimeError(f"start {self.url} before adding a gateway to it")
        gateway = CephGateway(self, f"client.rgw.n{len(self.gateways) + 1}", ip, port)
        self.start_gateway(gateway, time.monotonic() + timeout)
        return gateway

    def pids(self) -> list[int]:
        return [d.process.pid for d in self.daemons if d.alive()]

    def rss_bytes(self) -> int:
        """Resident memory of all the cluster's processes together."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def leftovers(self) -> dict[str, int]:
        """Daemons of this data_dir that this object did not start (another process did and
        is gone): name -> pid, from their pid files, if their command line names our config
        (a pid file can outlive its process, and the pid be reused)."""
        ours = {d.process.pid for d in self.daemons}
        found = {}
        for pid_file in sorted(self._path("run").glob("*.pid")):
            try:
                pid = int(pid_file.read_text().split()[0])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            if pid not in ours and os.fsencode(self.conf) in cmdline:
                found[pid_file.stem] = pid
        return found

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every process of the cluster: gateways first, the mon last (an OSD that
        stops tells the mon, and waits for its answer). Also stops the leftovers of a
        cluster that another process started on this data_dir."""
        order = ("client.", "mgr.", "osd.", "mon.")
        for prefix in order:
            for name, pid in self.leftovers().items():
                if name.startswith(prefix):
                    _stop_foreign(pid, timeout)
            group = [d for d in self.daemons if d.name.startswith(prefix)]
            for daemon in group:
                daemon.send(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for daemon in group:
                try:
                    daemon.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    daemon.send(signal.SIGKILL)
                    daemon.process.wait(timeout)
        self.daemons.clear()
        for gateway in self.gateways:
            gateway.daemon = None
        self.gateways.clear()


@dataclass
class CephGateway(_S3Endpoint):
    """One `radosgw` of a CephRGW cluster: an S3 node on its own address and port."""

    cluster: CephRGW = field(repr=False, compare=False)
    name: str
    ip: str
    port: int
    daemon: _Daemon | None = None

    def __post_init__(self) -> None:
        self.access_key = self.cluster.access_key
        self.secret_key = self.cluster.secret_key
        self.cluster.gateways.append(self)

    @property
    def s3_port(self) -> int:
        return self.port

    def wait_ready(self, timeout: float) -> None:
        """Poll until a signed ListBuckets succeeds (the port opens before RGW can serve)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self.cluster._check_daemons()
            if _port_open(self.ip, self.port):
                try:
                    self.client().list_buckets()
                    return
                except Exception as exc:
                    last = exc
            time.sleep(0.1)
        tail = self.daemon.tail() if self.daemon else ""
        raise RuntimeError(f"Ceph RGW on {self.url} not ready after {timeout}s: {last}\n{tail}")
