"""Server replicas behind a real HAProxy on loopback: the compose topology without containers.

``docker-compose.yml`` runs replicas behind HAProxy; this module runs the same arrangement as
plain processes (Debian's ``haproxy``; ``make test`` installs it), for the topology test and for
trying scale-out on one machine:

    python -m loadtest.topology --replicas 3 --port 8080

The HAProxy configuration follows ``deploy/haproxy/haproxy.cfg`` (least connections, ``/ready``
health checks, the capacity agent as weight, retries on another replica), with the replicas
listed by address instead of found through Docker's DNS, and an admin socket for statistics.

Every function here blocks: call it from a worker thread when an event loop is running.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.local_server import LOOPBACK, free_port, start_server, stop_server, wait_ready

HAPROXY = "haproxy"
REPLICA_ENV = {"KOKORO_BENCH_INTERVAL_S": "0"}
"""Replicas on one machine: no scheduled benchmark competing with the load."""


@dataclass(frozen=True, slots=True)
class Replica:
    name: str
    port: int
    agent_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def haproxy_config(port: int, replicas: Sequence[Replica], stats_socket: Path) -> str:
    """The balancer's configuration (see ``deploy/haproxy/haproxy.cfg`` for the reasons)."""
    servers = "\n".join(
        f"    server {r.name} {LOOPBACK}:{r.port} agent-port {r.agent_port}" for r in replicas
    )
    return f"""global
    maxconn 2000
    stats socket {stats_socket} mode 600 level admin

defaults
    mode http
    option forwardfor
    option redispatch 1
    retries 3
    retry-on conn-failure empty-response 503
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 5s
    timeout tunnel 1h
    timeout client-fin 5s

frontend tts_in
    bind {LOOPBACK}:{port}
    default_backend tts

backend tts
    balance leastconn
    option httpchk GET /ready
    http-check expect status 200
    default-server check inter 1s fall 2 rise 2 weight 100 agent-check agent-inter 500ms
{servers}
"""


@dataclass(slots=True)
class Topology:
    port: int
    replicas: list[Replica]
    haproxy: subprocess.Popen[bytes]
    stats_socket: Path

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/v1/stream"

    def server_stats(self) -> dict[str, dict[str, str]]:
        """HAProxy's ``show stat`` for each replica: ``status``, ``weight``, ``scur`` (open
        connections), ``stot`` (connections so far) and the rest of its columns."""
        with socket.socket(socket.AF_UNIX) as admin:
            admin.connect(str(self.stats_socket))
            admin.sendall(b"show stat\n")
            chunks = []
            while chunk := admin.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode().lstrip("# ")
        names = {replica.name for replica in self.replicas}
        return {
            row["svname"]: row
            for row in csv.DictReader(io.StringIO(text))
            if row["svname"] in names
        }

    def wait_until(self, check: str, timeout_s: float = 60.0) -> dict[str, dict[str, str]]:
        """Poll the statistics until every replica's ``status`` starts with ``check``."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.server_stats()
            if all(row["status"].startswith(check) for row in stats.values()):
                return stats
            if time.monotonic() > deadline:
                raise RuntimeError(f"replicas not {check} after {timeout_s:g} s: {stats}")
            time.sleep(0.2)  # another process's state: polled


def haproxy_binary() -> str:
    found = shutil.which(HAPROXY) or shutil.which(HAPROXY, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("haproxy is not installed: `make test` installs it (Debian: haproxy)")
    return found


@contextlib.contextmanager
def local_topology(
    workdir: Path,
    replicas: int = 2,
    port: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[Topology]:
    """Start ``replicas`` servers and HAProxy in front of them; stop them all afterwards."""
    started: list[Replica] = []
    haproxy: subprocess.Popen[bytes] | None = None
    try:
        for index in range(replicas):
            name = f"tts{index + 1}"
            replica_port, agent_port = free_port(), free_port()
            log = workdir / f"{name}.log"
            replica_env = {**REPLICA_ENV, **(env or {}), "KOKORO_AGENT_PORT": str(agent_port)}
            process = start_server(replica_port, log, args, env=replica_env)
            started.append(Replica(name, replica_port, agent_port, process, log))
        for replica in started:
            wait_ready(replica.base, replica.process, replica.log)
        front = port or free_port()
        stats_socket = workdir / "haproxy.sock"
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(front, started, stats_socket))
        with (workdir / "haproxy.log").open("wb") as haproxy_log:
            haproxy = subprocess.Popen(
                [haproxy_binary(), "-db", "-f", str(config)],
                stdout=haproxy_log,
                stderr=subprocess.STDOUT,
            )
        topology = Topology(front, started, haproxy, stats_socket)
        _wait_for_socket(stats_socket, haproxy)
        topology.wait_until("UP")
        yield topology
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(timeout=10)
        for replica in started:
            stop_server(replica.process, stop_signal=signal.SIGTERM)


def _wait_for_socket(path: Path, process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("haproxy did not start: see haproxy.log")
        time.sleep(0.05)  # another process's file: polled


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--plan", default="cpu:1x1", help="each replica's provider plan")
    options = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="kokoro-topology-") as workdir,
        local_topology(
            Path(workdir), options.replicas, options.port, ["--plan", options.plan]
        ) as topology,
    ):
        print(f"{options.replicas} replicas behind {topology.base} (logs in {workdir})")
        with contextlib.suppress(KeyboardInterrupt):
            topology.haproxy.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
