"""Real services for the tests and the measurement script: a PostgreSQL server, a SLURM cluster.

Both run from Debian's packages on this machine, in a temp directory, bound to loopback, and
stop when their context ends::

    with postgres_server() as pg:
        url = pg.new_database("study")          # postgresql://postgres@127.0.0.1:PORT/study
    with slurm_cluster(tmp) as cluster:
        subprocess.run(["sinfo"], env=cluster.env)

The cluster keeps accounting as a real one does: ``slurmdbd`` stores finished jobs in a MariaDB
server of its own, so ``sacct`` (which submitit reads) reports a job cancelled with ``scancel``.
``postgresql`` is on these machines; ``.ci/run`` installs ``slurm-wlm``, ``munge``, ``slurmdbd``
and ``mariadb-server`` when missing. The tests that need them skip only when the binaries are
absent.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_USER = "postgres"  # initdb refuses root; as root the server runs as this system user


def pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``pg_ctl``, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    return Path(found[-1]).parent if found else None


def slurm_missing() -> str | None:
    """Why a SLURM cluster cannot start here (a missing binary), or None."""
    for name in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "slurmdbd", "mariadbd"):
        if shutil.which(name) is None and not Path("/usr/sbin", name).exists():
            return f"{name} not installed (apt-get install slurm-wlm munge slurmdbd mariadb-server)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _version(path: str) -> tuple[int, ...]:
    part = Path(path).parent.parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit())


def _wait(check, what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s\n{tail}")


# -- PostgreSQL ---------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg

        admin = f"host={self.host} port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """initdb into a new temp dir and run a server on a free loopback port until the block ends.

    The directory is made here, not under pytest's (root-only) tmp, so that the server's own
    user can enter it; it is removed afterwards.
    """
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="van-ablate-pg-"))
    data, log, port = root / "pgdata", root / "postgres.log", free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", PG_USER, "--"]
        shutil.chown(root, PG_USER)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=200"
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        _run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust"])
        _run([*pg_ctl, "-o", options, "-l", str(log), "-w", "start"])
        yield PostgresServer("127.0.0.1", port, PG_USER)
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")


# -- SLURM --------------------------------------------------------------------------------------

SLURM_CONF = """\
ClusterName=vanablate
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
{accounting}JobCompType=jobcomp/none
ReturnToService=2
KillWait=10
MinJobAge=600
InactiveLimit=0
SchedulerParameters=sched_interval=1
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""

ACCOUNTING = """\
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
AccountingStoragePass={root}/munge.socket
"""
NO_ACCOUNTING = "AccountingStorageType=accounting_storage/none\n"

# slurmdbd reads slurmdbd.conf next to slurm.conf; MariaDB runs without grant tables on loopback.
SLURMDBD_CONF = """\
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={root}/slurmdbd.pid
LogFile={root}/slurmdbd.log
"""


@dataclass
class SlurmCluster:
    """A running one-node cluster; pass :attr:`env` to every SLURM command and sweep."""

    root: Path
    conf: Path
    node: str
    partition: str = "debug"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def job_states(self) -> dict[str, str]:
        """``{job id: state}`` of the jobs the controller remembers (``scontrol show job``)."""
        out = subprocess.run(
            ["scontrol", "-o", "show", "job"], env=self.env, capture_output=True, text=True
        ).stdout
        states = {}
        for line in out.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if "JobId" in fields:
                states[fields["JobId"]] = fields.get("JobState", "?")
        return states

    def settled_states(self, timeout: float = 60) -> dict[str, str]:
        """:meth:`job_states` once no job is pending, running or still completing."""
        busy = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED")
        _wait(lambda: not set(self.job_states().values()) & set(busy), "SLURM jobs", timeout)
        return self.job_states()


@contextlib.contextmanager
def slurm_cluster(root: Path, accounting: bool = True) -> Iterator[SlurmCluster]:
    """munged, slurmctld and slurmd for this machine's one node, until the block ends; with
    ``accounting``, slurmdbd and its MariaDB too (without, ``sacct`` answers "accounting storage
    is disabled", as on many lab clusters)."""
    missing = slurm_missing()
    if missing:
        raise RuntimeError(missing)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    node = socket.gethostname().split(".")[0]
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    ports = {"dbd_port": free_port(), "db_port": free_port()}
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            node=node,
            root=root,
            ctld_port=free_port(),
            slurmd_port=free_port(),
            cpus=os.cpu_count() or 1,
            memory_mb=_memory_mb(),
            accounting=(ACCOUNTING.format(root=root, **ports) if accounting else NO_ACCOUNTING),
            **ports,
        )
    )
    dbd_conf = root / "slurmdbd.conf"
    dbd_conf.write_text(SLURMDBD_CONF.format(root=root, **ports))
    dbd_conf.chmod(0o600)  # slurmdbd refuses a config others can read
    cluster = SlurmCluster(root, conf, node)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            _daemon(
                [
                    "munged",
                    "-F",
                    "-f",
                    f"--socket={root}/munge.socket",
                    f"--key-file={key}",
                    f"--pid-file={root}/munged.pid",
                    f"--seed-file={root}/munged.seed",
                    f"--log-file={root}/munged.log",
                ],
                cluster.env,
                root / "munged.out",
            )
        )
        _wait(lambda: (root / "munge.socket").exists(), "munged", 20, root / "munged.log")
        if accounting:
            procs.append(_mariadb(root, ports["db_port"]))
            procs.append(_daemon(["slurmdbd", "-D"], cluster.env, root / "slurmdbd.out"))
            _wait(lambda: _accounting_ready(cluster), "slurmdbd", 60, root / "slurmdbd.log")
        procs.append(_daemon(["slurmctld", "-D", "-c", "-i"], cluster.env, root / "ctld.out"))
        procs.append(_daemon(["slurmd", "-D"], cluster.env, root / "slurmd.out"))
        _wait(lambda: _node_state(cluster) == "idle", "slurm node", 60, root / "slurmd.log")
        yield cluster
    finally:
        subprocess.run(
            ["scancel", "--full", "--user", str(os.getuid())],
            env=cluster.env,
            capture_output=True,
            timeout=20,
        )
        for p in reversed(procs):
            _stop(p)


def _daemon(cmd: list[str], env: dict[str, str], out: Path) -> subprocess.Popen:
    with open(out, "wb") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _mariadb(root: Path, port: int) -> subprocess.Popen:
    """A MariaDB server for slurmdbd alone: its own data dir, loopback only, no grant tables."""
    data = root / "mariadb"
    _run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root"])
    server = [
        "mariadbd",
        "--no-defaults",
        f"--datadir={data}",
        f"--socket={root}/mariadb.sock",
        f"--pid-file={root}/mariadb.pid",
        "--bind-address=127.0.0.1",
        f"--port={port}",
        "--skip-grant-tables",
        "--skip-name-resolve",
        "--user=root",
    ]
    proc = _daemon(server, dict(os.environ), root / "mariadb.out")
    _wait(lambda: _port_open(port), "mariadbd", 60, root / "mariadb.out")
    return proc


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _accounting_ready(cluster: SlurmCluster) -> bool:
    """slurmdbd answers; the cluster is registered here (slurmctld would do it on first contact)."""
    proc = subprocess.run(
        ["sacctmgr", "-i", "add", "cluster", "vanablate"],
        env=cluster.env,
        capture_output=True,
        text=True,
    )
    return proc.returncode == 0 or "already exists" in proc.stdout + proc.stderr


def _node_state(cluster: SlurmCluster) -> str:
    proc = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%T", "-n", cluster.node],
        env=cluster.env,
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip()


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 9 // 10
    return 1024
