"""Several hosts on one machine: Linux network namespaces on one bridge, each running processes of its own.

`Network` makes the bridge `kbbr0` (10.77.0.1/24 on the machine's side, so the machine reaches every
host) and `Host`s on it. A host is a network namespace `kbh-<name>` whose `eth0` is one end of a veth
pair; the other end, `kbv-<name>`, is plugged into the bridge. A host starts its processes with
`ip netns exec`, each in a process group of its own, logging to `<logs>/<host>-<label>.log`, and
keeps them, so that a test can pull its cable (`cut()`: its bridge port goes down), crash it
(`kill()`: SIGKILL to every group it runs), drop its traffic to one address and port (`block()`: an
iptables rule in its namespace), and bring it back. On a host given a cgroup (`Host.cgroup`, a cgroup v1
directory: bench/scaling.py's CPU quotas) a shell joins it and execs each command (same pid, children in it).

`KbCluster` lays KB Portal out on such hosts, one process per role, as a small production site:

| host | address | runs |
|---|---|---|
| `data` | .2 | PostgreSQL (its own cluster, `initdb` in a temporary directory), Redis, the job sweeper |
| `proxy` | .5 | HAProxy on port 80: health checks, idempotent GETs retried on the other web host |
| `es1`..`es3` | .11-.13 | one Elasticsearch cluster of three nodes, HTTP on port 9200 |
| `web1`, `web2` | .21, .22 | uvicorn, one process each, port 8000 |
| `worker1`..`worker3` | .31-.33 | one rq worker each |

The object store is the filesystem store on a directory every host shares (`KB_STORAGE_DIR`), as an
NFS mount would be. The web and worker processes run the product settings (`kbportal.settings`)
and name all three Elasticsearch nodes in `KB_ES_URL`.

Elasticsearch enforces its production bootstrap checks on a node whose transport is bound to
anything but a loopback address, and one of them wants 65,535 open files, more than a process of
this sandbox may have (its hard limit is lower and raising it needs CAP_SYS_RESOURCE). So each
Elasticsearch host carries a second address for the cluster's transport (port 9300), in
127.77.0.0/24, routed over the bridge like any other (`route_localnet`; the host's own `lo` keeps
only 127.0.0.1/32). HTTP, which clients use, is on the host's 10.77.0.x address. Cutting the host
cuts both.

Needs root, iproute2, iptables, HAProxy, and what `make test` needs: PostgreSQL's binaries,
redis-server, the Elasticsearch distribution (`KB_ES_HOME`) and its Java (`KB_ES_JAVA_HOME`).
"""

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.processes import wait_until

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = "kbbr0"
PREFIX = "10.77.0"
NAMESPACE_PREFIX = "kbh-"
#: The queues `make up` gives its workers.
QUEUES = ("high", "default", "ocr", "low", "answers")
#: What the processes started here keep of the caller's environment (never its KB_ settings).
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def port_answers(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def as_user(user: str | None) -> list[str]:
    """Run as `user` (setpriv execs, so the process keeps the pid and the group it was given)."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] if user else []


class Host:
    """One network namespace on the bridge and the processes it runs, by label."""

    def __init__(self, name: str, address: str, logs: Path):
        self.name = name
        self.address = address
        self.namespace = f"{NAMESPACE_PREFIX}{name}"
        self.veth = f"kbv-{name}"  # the bridge's end of the cable
        self.logs = logs
        self.processes: dict[str, subprocess.Popen] = {}
        self.cgroup: Path | None = None

    def command(self, *args: str) -> list[str]:
        join = ("sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup / "cgroup.procs")) if self.cgroup else ()
        return [*join, "ip", "netns", "exec", self.namespace, *args]  # (`ip netns exec` mounts its own /sys)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
        """Run a command on this host to its end; its output, or an error carrying it."""
        result = subprocess.run(self.command(*args), env=env, cwd=ROOT, capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode:
            raise RuntimeError(f"{self.name}: {' '.join(args)} exited {result.returncode}:\n"
                               f"{result.stdout[-2000:]}{result.stderr[-3000:]}")
        return result.stdout

    def start(self, label: str, args: list[str], *, env: dict[str, str] | None = None, user: str | None = None,
              cwd: Path = ROOT) -> subprocess.Popen:
        """Start a long-running process on this host, in a process group of its own."""
        with open(self.logs / f"{self.name}-{label}.log", "ab") as log:
            process = subprocess.Popen(self.command(*as_user(user), *args), env=env, cwd=cwd,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes[label] = process
        return process

    def running(self, label: str) -> bool:
        process = self.processes.get(label)
        return process is not None and process.poll() is None

    def stop(self, label: str, timeout: float = 15) -> None:
        """SIGTERM to the process's group, SIGKILL after `timeout`."""
        process = self.processes.pop(label, None)
        if process is None:
            return
        self._signal(process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
        self._signal(process, signal.SIGKILL)  # and whatever it forked
        process.wait()

    def kill(self) -> None:
        """Crash the host: SIGKILL to every process group it runs."""
        for process in self.processes.values():
            self._signal(process, signal.SIGKILL)
        for process in self.processes.values():
            process.wait()
        self.processes.clear()

    @staticmethod
    def _signal(process: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)

    def cut(self) -> None:
        """Pull the cable: nothing reaches the host and nothing leaves it (its processes run on)."""
        ip("link", "set", self.veth, "down")

    def reconnect(self) -> None:
        ip("link", "set", self.veth, "up")

    def block(self, address: str, port: int) -> None:
        """Partition this host from `address:port`: every TCP packet either way is dropped, silently."""
        for rule in self._partition_rules(address, port):
            self.run("iptables", "-I", *rule)

    def unblock(self, address: str, port: int) -> None:
        for rule in self._partition_rules(address, port):
            self.run("iptables", "-D", *rule)

    @staticmethod
    def _partition_rules(address: str, port: int) -> list[list[str]]:
        return [["OUTPUT", "-d", address, "-p", "tcp", "--dport", str(port), "-j", "DROP"],
                ["INPUT", "-s", address, "-p", "tcp", "--sport", str(port), "-j", "DROP"]]


class Network:
    """The bridge and its hosts. `destroy()` also removes what an earlier, killed run left."""

    def __init__(self, logs: Path, prefix: str = PREFIX, bridge: str = BRIDGE):
        self.logs = logs
        self.prefix = prefix
        self.bridge = bridge
        self.hosts: dict[str, Host] = {}

    def create(self) -> None:
        self.destroy()
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add(self, name: str, number: int) -> Host:
        host = Host(name, f"{self.prefix}.{number}", self.logs)
        ip("netns", "add", host.namespace)
        self.hosts[name] = host
        ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
        ip("link", "set", host.veth, "master", self.bridge, "up")
        host.run("ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
        host.run("ip", "link", "set", "eth0", "up")
        host.run("ip", "link", "set", "lo", "up")
        return host

    def destroy(self) -> None:
        for host in self.hosts.values():
            host.kill()
        self.hosts.clear()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        for namespace in (name for name in listed if name.startswith(NAMESPACE_PREFIX)):
            # Whatever still runs in it (a run killed before its teardown) goes with it.
            pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout
            for pid in pids.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
        # The kernel removes a deleted namespace's devices later, on its own: the cables go now.
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        for link in re.findall(r"^\d+: (kbv-[^@:]+)", links, re.MULTILINE):
            subprocess.run(["ip", "link", "delete", link], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)


class KbCluster:
    """KB Portal on ten hosts (see the module docstring). `start()`, then `stop()` removes it all."""

    ES_NODES = ("es1", "es2", "es3")
    WEBS = ("web1", "web2")
    WORKERS = ("worker1", "worker2", "worker3")

    def __init__(self, *, env: dict[str, str] | None = None, worker_env: dict[str, str] | None = None,
                 es_heap: str = "384m", keep_logs: Path | None = None, cgroups: dict[str, Path] | None = None):
        """`env`: settings of the web, worker and command processes on top of the cluster's own;
        `worker_env`: more for the workers only. `keep_logs`: where `stop()` copies the logs.
        `cgroups`: host name -> the cgroup its processes run in (`Host.cgroup`)."""
        self.es_home = Path(os.environ.get("KB_ES_HOME", ""))
        if not (self.es_home / "bin" / "elasticsearch").exists():
            raise RuntimeError(f"KB_ES_HOME={str(self.es_home)!r} is no Elasticsearch distribution")
        self.java_home = os.environ.get("KB_ES_JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
        self.es_user = os.environ.get("KB_ES_USER", "kbsearch")
        self.es_heap = es_heap
        self.extra_env = env or {}
        self.worker_env = worker_env or {}
        self.keep_logs = keep_logs
        self.cgroups = cgroups or {}
        # Not pytest's tmp_path: its base directory is mode 700, closed to the postgres and kbsearch users.
        self.dir = Path(tempfile.gettempdir()) / f"kb-cluster-{secrets.token_hex(4)}"
        self.dir.mkdir(mode=0o755)
        (self.dir / "logs").mkdir()
        self.network = Network(self.dir / "logs")
        self.secret_key = secrets.token_urlsafe(50)
        self.started_in = 0.0  # seconds `start()` took

    # --- addresses ---------------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        return self.network.hosts[name]

    @property
    def data(self) -> Host:
        return self.host("data")

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host('proxy').address}"

    def es_url(self, name: str) -> str:
        return f"http://{self.host(name).address}:9200"

    @property
    def database_url(self) -> str:
        return f"postgres://postgres@{self.data.address}:5432/kbportal"

    def app_env(self, host: Host) -> dict[str, str]:
        """The environment of KB Portal's processes on `host`: the product settings, on this cluster."""
        env = {name: os.environ[name] for name in INHERITED if name in os.environ}
        env.update(
            KB_DATABASE_URL=self.database_url,
            KB_REDIS_URL=f"redis://{self.data.address}:6379/0",
            KB_ES_URL=",".join(self.es_url(name) for name in self.ES_NODES),
            KB_ES_SHARDS="1",
            KB_ES_REPLICAS="1-1",  # one replica, always: a node may go without losing a shard
            KB_STORAGE_DIR=str(self.dir / "objects"),
            KB_VAR_DIR=str(self.dir / "var"),
            KB_METRICS_DIR=str(self.dir / "var" / f"metrics-{host.name}"),  # one per host
            KB_EMBEDDER="hashing",
            KB_PRELOAD="",
            KB_DEBUG="0",
            KB_SECURE_SSL="0",
            KB_SECRET_KEY=self.secret_key,
            KB_ALLOWED_HOSTS=",".join(self.host(name).address for name in ("proxy", *self.WEBS)),
            PYTHONPATH=str(ROOT),
        )
        env.update(self.extra_env)
        return env

    # --- life cycle --------------------------------------------------------------------------------

    def start(self) -> "KbCluster":
        started = time.monotonic()
        self.network.create()
        for name, number in [("data", 2), ("proxy", 5), *[(n, 11 + i) for i, n in enumerate(self.ES_NODES)],
                             *[(n, 21 + i) for i, n in enumerate(self.WEBS)],
                             *[(n, 31 + i) for i, n in enumerate(self.WORKERS)]]:
            self.network.add(name, number).cgroup = self.cgroups.get(name)
        for name in self.ES_NODES:  # the slowest to start: first
            self.start_elasticsearch(name)
        self.start_postgres()
        self.start_redis()
        self.manage("migrate", "--noinput", "-v", "0")
        wait_until(lambda: self.alive("elasticsearch", self.ES_NODES)
                 and http_ok(f"{self.es_url('es1')}/_cluster/health?wait_for_nodes=3&timeout=1s"),
                 timeout=180, message="three Elasticsearch nodes to form one cluster", interval=1)
        self.manage("search_index", "--create")
        self.wait_green()  # the chunk index's replica placed: any one node may go now
        for name in self.WEBS:
            self.start_web(name)
        for name in self.WORKERS:
            self.start_worker(name)
        self.data.start("scheduler", [sys.executable, "manage.py", "scheduler", "ingestion/cron.py"],
                        env=self.app_env(self.data))
        self.start_proxy()
        for name in self.WEBS:
            self.wait_web(name)
        wait_until(lambda: http_ok(f"{self.proxy_url}/health/live"), timeout=30, message="the proxy")
        self.started_in = time.monotonic() - started
        return self

    def alive(self, label: str, names) -> bool:
        """True; an error with the end of its log when the `label` process of one of the hosts exited."""
        for name in names:
            if not self.host(name).running(label):
                raise RuntimeError(f"{label} on {name} exited:\n{self.log_tail(name, label)}")
        return True

    def stop(self) -> None:
        """Stop every process, delete the hosts and the bridge, remove the files (logs kept if asked)."""
        try:
            self.network.destroy()
        finally:
            if self.keep_logs is not None:
                shutil.rmtree(self.keep_logs, ignore_errors=True)
                shutil.copytree(self.dir / "logs", self.keep_logs)
            shutil.rmtree(self.dir, ignore_errors=True)

    def manage(self, *args: str, host: str = "data", timeout: float = 180) -> str:
        """Run a `manage.py` command on a host of the cluster; its output."""
        on = self.host(host)
        return on.run(sys.executable, "manage.py", *args, env=self.app_env(on), timeout=timeout)

    def log_tail(self, host: str, label: str, lines: int = 30) -> str:
        path = self.dir / "logs" / f"{host}-{label}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # --- data host ---------------------------------------------------------------------------------

    def start_postgres(self) -> None:
        bin_dir = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name))
        home = self.dir / "postgres"
        home.mkdir()
        shutil.chown(home, "postgres", "postgres")
        subprocess.run([*as_user("postgres"), str(bin_dir / "initdb"), "-D", str(home / "data"), "-A", "trust",
                        "-U", "postgres", "--no-sync"], check=True, capture_output=True, cwd=home)
        with open(home / "data" / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.network.prefix}.0/24 trust\n")
        # Keepalives: a host that vanished mid-transaction (a pulled cable) would otherwise keep its
        # row locks until the kernel gives up on the connection, hours later.
        self.data.start("postgres", [
            str(bin_dir / "postgres"), "-D", str(home / "data"), "-k", str(home), "-p", "5432",
            "-c", f"listen_addresses={self.data.address}", "-c", "fsync=off", "-c", "max_connections=300",
            "-c", "tcp_keepalives_idle=5", "-c", "tcp_keepalives_interval=2", "-c", "tcp_keepalives_count=3",
        ], user="postgres", cwd=home)
        wait_until(lambda: port_answers(self.data.address, 5432), timeout=30, message="PostgreSQL")
        subprocess.run(["createdb", "-h", self.data.address, "-U", "postgres", "kbportal"], check=True,
                       capture_output=True)

    def start_redis(self) -> None:
        self.data.start("redis", ["redis-server", "--bind", self.data.address, "--port", "6379", "--save", "",
                                  "--appendonly", "no", "--protected-mode", "no"])
        wait_until(lambda: port_answers(self.data.address, 6379), timeout=20, message="Redis")

    # --- Elasticsearch -----------------------------------------------------------------------------

    def transport_address(self, name: str) -> str:
        return "127.77.0." + self.host(name).address.rsplit(".", 1)[1]

    def start_elasticsearch(self, name: str) -> None:
        """Start (or start again, same data) the node on host `name`; `wait_green()` waits for it."""
        host = self.host(name)
        home = self.dir / name
        first = not home.exists()
        if first:
            self._transport_network(host)
            home.mkdir()
            shutil.copytree(self.es_home / "config", home / "config")  # its own keystore and JVM options
            for sub in ("data", "logs"):
                (home / sub).mkdir()
            subprocess.run(["chown", "-R", f"{self.es_user}:{self.es_user}", str(home)], check=True)
        settings = {
            "node.name": name,
            "cluster.name": "kb-cluster",
            "network.host": host.address,
            "transport.host": self.transport_address(name),
            "http.port": 9200,
            "transport.port": 9300,
            "discovery.seed_hosts": ",".join(f"{self.transport_address(n)}:9300" for n in self.ES_NODES),
            "path.data": home / "data",
            "path.logs": home / "logs",
            "xpack.security.enabled": "false",
            "xpack.ml.enabled": "false",
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        }
        if first:  # a node that has joined the cluster must not be told to bootstrap one again
            settings["cluster.initial_master_nodes"] = ",".join(self.ES_NODES)
        env = {name: os.environ[name] for name in INHERITED if name in os.environ}
        # C1 only: a third less start time on 2 cores, which three nodes starting at once need most.
        env.update(ES_JAVA_HOME=self.java_home, ES_PATH_CONF=str(home / "config"),
                   ES_JAVA_OPTS=f"-Xms{self.es_heap} -Xmx{self.es_heap} -XX:TieredStopAtLevel=1")
        args = [arg for key, value in settings.items() for arg in ("-E", f"{key}={value}")]
        host.start("elasticsearch", [str(self.es_home / "bin" / "elasticsearch"), *args], env=env,
                   user=self.es_user, cwd=home)

    def _transport_network(self, host: Host) -> None:
        """The node's transport address in 127.77.0.0/24, reachable over the bridge (module docstring)."""
        host.run("ip", "addr", "del", "127.0.0.1/8", "dev", "lo")
        host.run("ip", "addr", "add", "127.0.0.1/32", "dev", "lo")
        host.run("sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf.eth0.route_localnet=1")
        host.run("ip", "addr", "add", f"{self.transport_address(host.name)}/24", "dev", "eth0")

    def es_health(self, via: str = "es1") -> dict | None:
        """The cluster's health as node `via` sees it; None when it does not answer."""
        try:
            return httpx.get(f"{self.es_url(via)}/_cluster/health", timeout=10).json()
        except (httpx.HTTPError, ValueError):
            return None

    def wait_green(self, seconds: float = 120, via: str = "es1") -> dict:
        return wait_until(
            lambda: (health := self.es_health(via)) and health["status"] == "green"
            and health["number_of_nodes"] == len(self.ES_NODES) and health,
            timeout=seconds, message="the Elasticsearch cluster to be green with every node", interval=1)

    # --- web, workers, proxy -----------------------------------------------------------------------

    def start_web(self, name: str) -> None:
        host = self.host(name)
        # As scripts/up.sh runs it, one process.
        host.start("web", [str(Path(sys.executable).parent / "uvicorn"), "kbportal.asgi:application",
                           "--host", host.address, "--port", "8000", "--workers", "1", "--no-access-log",
                           "--timeout-graceful-shutdown", "10", "--ws-per-message-deflate", "false"],
                   env=self.app_env(host))

    def wait_web(self, name: str, seconds: float = 60) -> None:
        address = self.host(name).address
        wait_until(lambda: self.alive("web", [name]) and http_ok(f"http://{address}:8000/health/live"), timeout=seconds,
                 message=f"{name}'s web server")

    def start_worker(self, name: str) -> subprocess.Popen:
        host = self.host(name)
        return host.start("worker", [sys.executable, "manage.py", "rqworker", *QUEUES, "--worker-class",
                                     "kbportal.worker.Worker", "--with-scheduler"],
                          env={**self.app_env(host), **self.worker_env})

    def start_proxy(self) -> None:
        """HAProxy in front of the web hosts.

        It checks `/health/live` every second (two failures take a server out, two successes put it
        back) and, on a connection failure, an empty or timed-out answer or a 502-504, retries the
        request on the other server: any request for a failed connection (nothing was sent), only
        GET and HEAD for the rest, since a POST may have been carried out already.
        """
        host = self.host("proxy")
        servers = "\n".join(f"    server {name} {self.host(name).address}:8000 check" for name in self.WEBS)
        config = self.dir / "haproxy.cfg"
        config.write_text(f"""\
global
    maxconn 2000

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 15s
    timeout queue 5s
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 502 503 504

frontend api
    bind {host.address}:80
    default_backend web

backend web
    balance roundrobin
    http-request disable-l7-retry unless METH_GET
    option httpchk
    http-check send meth GET uri /health/live ver HTTP/1.1 hdr Host {host.address}
    http-check expect status 200
    default-server inter 1s fall 2 rise 2
{servers}
""")
        host.start("haproxy", ["haproxy", "-db", "-f", str(config)])
