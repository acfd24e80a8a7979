"""A client host of the test's own: a network namespace joined to this one by a veth pair.

Traffic goes only between the two addresses given to the pair's ends here, and everything is
removed afterwards (deleting the namespace deletes the pair). Shaping uses the kernel: ``tbf``
for bandwidth, an nftables rule for random loss, ``netem`` for delay and jitter where the kernel
has it. Tests skip when namespaces cannot be made (not root, or no permission).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

SUBNET = "10.213.57"
"""A /30 for the pair: .1 here (the server's end), .2 in the namespace (the client's)."""


def _run(*command: str, namespace: str | None = None) -> subprocess.CompletedProcess[str]:
    inside = [] if namespace is None else ["ip", "netns", "exec", namespace]
    return subprocess.run([*inside, *command], capture_output=True, text=True, check=False)


def _ip(*args: str, namespace: str | None = None) -> subprocess.CompletedProcess[str]:
    return _run("ip", *args, namespace=namespace)


def _must(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(result.args)}: {result.stderr.strip()}")


@dataclass(frozen=True, slots=True)
class ClientHost:
    namespace: str
    host_device: str
    """This side's end: shaping here applies to what the server sends."""
    server_address: str
    client_address: str

    def run(self, command: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside the namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *command],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def limit_rate(self, kbit: int) -> None:
        """Server-to-client bandwidth, with a queue of about a second's worth."""
        burst = max(1600, kbit * 1000 // 8 // 50)
        _must(
            _run(
                *("tc", "qdisc", "replace", "dev", self.host_device, "root", "tbf"),
                *("rate", f"{kbit}kbit", "burst", str(burst), "latency", "1s"),
            )
        )

    def drop_randomly(self, percent: int) -> None:
        """Drop ``percent`` of the packets arriving in the namespace (nftables)."""
        if shutil.which("nft") is None:
            pytest.skip("nft (Debian's nftables) is not installed: make test-long installs it")
        rules = (
            "table inet kokoro_loss {\n"
            "  chain input { type filter hook input priority 0; policy accept;\n"
            f"    numgen random mod 100 < {percent} drop\n"
            "  }\n"
            "}\n"
        )
        result = subprocess.run(
            ["ip", "netns", "exec", self.namespace, "nft", "-f", "-"],
            input=rules,
            capture_output=True,
            text=True,
            check=False,
        )
        _must(result)

    def clear_shaping(self) -> None:
        """Back to an unshaped link (what was not set is not there: errors are ignored)."""
        _run("tc", "qdisc", "del", "dev", self.host_device, "root")
        if shutil.which("nft") is not None:
            self.run(["nft", "delete", "table", "inet", "kokoro_loss"], timeout_s=10)

    def delay(self, delay_ms: int, jitter_ms: int) -> None:
        """Delay and jitter on what the server sends (netem), or skip where the kernel lacks it."""
        result = _run(
            *("tc", "qdisc", "replace", "dev", self.host_device, "root", "netem"),
            *("delay", f"{delay_ms}ms", f"{jitter_ms}ms"),
        )
        if "unknown" in result.stderr.lower():
            pytest.skip(f"this kernel ({os.uname().release}) has no netem qdisc")
        _must(result)


@contextmanager
def client_host() -> Iterator[ClientHost]:
    """A namespace with a veth pair to this one, addressed, up, and removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:6]
    namespace, host_device, inner_device = f"kokoro-{tag}", f"ks{tag}h", f"ks{tag}c"
    created = _ip("netns", "add", namespace)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {created.stderr.strip()}")
    try:
        server, client = f"{SUBNET}.1", f"{SUBNET}.2"
        _must(_ip("link", "add", host_device, "type", "veth", "peer", "name", inner_device))
        _must(_ip("link", "set", inner_device, "netns", namespace))
        _must(_ip("addr", "add", f"{server}/30", "dev", host_device))
        _must(_ip("link", "set", host_device, "up"))
        _must(_ip("addr", "add", f"{client}/30", "dev", inner_device, namespace=namespace))
        _must(_ip("link", "set", inner_device, "up", namespace=namespace))
        _must(_ip("link", "set", "lo", "up", namespace=namespace))
        yield ClientHost(namespace, host_device, server, client)
    finally:
        _ip("link", "del", host_device)
        _ip("netns", "del", namespace)
