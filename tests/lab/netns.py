"""A real-NAT lab made of Linux network namespaces (needs root, ``ip`` and ``nft``).

Theory of operation. Every lab gets a unique prefix (``dl<pid>-<n>``) and makes namespaces named
``<prefix>-pub``, ``<prefix>-nat-a`` and so on; ``close()`` kills what it started and deletes
every namespace it made. Nothing leaves the namespaces: ``pub`` has no uplink, so the only
"internet" is the TEST-NET-3 segment 203.0.113.0/24 (RFC 5737) on a bridge inside ``pub``.

NAT lab (``build_nat_lab``)::

    alice 10.0.1.2 --lan-- 10.0.1.1 nat-a 203.0.113.10 --+
                                                          +-- br0 203.0.113.1 pub
    bob   10.0.2.2 --lan-- 10.0.2.1 nat-b 203.0.113.20 --+

LAN lab (``build_lan_lab``): alice 10.0.1.2 and bob 10.0.1.3 share one bridge behind nat-a.

Each router masquerades what leaves its ``wan`` leg (nftables, Linux conntrack: the source port
is kept when free, so mapping is endpoint-independent; ``symmetric=True`` randomises the port
per connection instead). Forwarding from ``wan`` inward is allowed only for established or
related flows, and new inbound packets to the router itself are dropped: no port forwarding,
inbound connections are impossible, UDP hole punching works as on a common home router.
IPv6 is off on every interface but ``lo``, so the lab is IPv4 only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Self

PUBLIC_NET = "203.0.113.0/24"
PUB_ADDR = "203.0.113.1"

_counter = itertools.count()
_STALE = re.compile(r"^dl(\d+)-\d+-")
_STOP_TIMEOUT = 3.0
_CMD_TIMEOUT = 20.0

_IP = "ip"
_NFT = "nft"


class LabError(RuntimeError):
    """A lab command failed; carries the command and its output."""


def _check(argv: Sequence[str], *, input_text: str | None = None) -> str:
    done = subprocess.run(
        list(argv), input=input_text, capture_output=True, text=True, timeout=_CMD_TIMEOUT
    )
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} -> {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@cache
def lab_unavailable() -> str | None:
    """Why the lab cannot run here (not root, tools missing, no netns), or ``None``."""
    if os.geteuid() != 0:
        return "the netns lab needs root"
    missing = [tool for tool in (_IP, _NFT, "sysctl") if shutil.which(tool) is None]
    if missing:
        return f"the netns lab needs {', '.join(missing)}"
    probe = f"dl{os.getpid()}-probe"
    try:
        _check([_IP, "netns", "add", probe])
        _check([_IP, "netns", "exec", probe, _NFT, "list", "ruleset"])
    except (LabError, OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns / nft unusable: {exc}"
    finally:
        subprocess.run([_IP, "netns", "del", probe], capture_output=True, timeout=_CMD_TIMEOUT)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Delete lab namespaces left by runs whose process is gone; return their names."""
    out = _check([_IP, "netns", "list"])
    stale = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _STALE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            subprocess.run([_IP, "netns", "del", name], capture_output=True, timeout=_CMD_TIMEOUT)
            stale.append(name)
    return stale


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(_STOP_TIMEOUT)


@dataclass(frozen=True)
class Host:
    """Addresses of one namespace: its own, and the one the public side sees it as."""

    addr: str
    public_addr: str


class Lab:
    """Namespaces made for one test; run processes in them; ``close()`` removes everything."""

    def __init__(self) -> None:
        self.prefix = f"dl{os.getpid()}-{next(_counter)}"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen[Any]] = []
        self._closed = False

    # --- naming and addresses

    def netns(self, ns: str) -> str:
        """The real namespace name of the lab's ``ns`` (e.g. ``alice``)."""
        if ns not in self._namespaces:
            raise KeyError(f"no namespace {ns!r} in this lab (has {self._namespaces})")
        return f"{self.prefix}-{ns}"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self._namespaces)

    def addr(self, ns: str) -> str:
        """The namespace's own address (routers: their public ``wan`` address)."""
        return self.hosts[ns].addr

    def public_addr(self, ns: str) -> str:
        """The address a server in ``pub`` sees connections from ``ns`` come from."""
        return self.hosts[ns].public_addr

    # --- running things

    def argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside ``ns`` (``ip netns exec`` execs it: same PID)."""
        return [_IP, "netns", "exec", self.netns(ns), *argv]

    def run(self, ns: str, argv: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``ns``; ``close()`` kills it by PID if it is still running."""
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        process: subprocess.Popen[Any] = subprocess.Popen(self.argv(ns, argv), **popen_kw)
        self._processes.append(process)
        return process

    def exec(
        self, ns: str, argv: Sequence[str], *, timeout: float = 10.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``ns`` to completion (killed by PID after ``timeout``)."""
        process = self.run(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            raise LabError(f"{argv} in {ns} timed out after {timeout} s: {err}") from None
        done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        if check and done.returncode != 0:
            raise LabError(f"{argv} in {ns} -> {done.returncode}: {err.strip()}")
        return done

    def python(
        self, ns: str, code: str, *args: str, timeout: float = 10.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code args`` inside ``ns`` to completion."""
        return self.exec(ns, [sys.executable, "-c", code, *args], timeout=timeout)

    def start_python(self, ns: str, code: str, *args: str) -> subprocess.Popen[str]:
        """Start ``python -c code args`` inside ``ns`` with stdout/stderr piped (text)."""
        return self.run(
            ns,
            [sys.executable, "-u", "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # --- building

    def add_namespace(self, ns: str) -> None:
        name = f"{self.prefix}-{ns}"
        _check([_IP, "netns", "add", name])
        self._namespaces.append(ns)
        self.ip(ns, "link", "set", "lo", "up")
        self.sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")

    def ip(self, ns: str, *args: str) -> str:
        return _check([_IP, "-n", self.netns(ns), *args])

    def sysctl(self, ns: str, setting: str) -> None:
        _check([_IP, "netns", "exec", self.netns(ns), "sysctl", "-qw", setting])

    def nft(self, ns: str, ruleset: str) -> None:
        _check([_IP, "netns", "exec", self.netns(ns), _NFT, "-f", "-"], input_text=ruleset)

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        """A veth pair with end ``if_a`` in ``ns_a`` and ``if_b`` in ``ns_b``, both up."""
        self.ip(ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b,
                "netns", self.netns(ns_b))  # fmt: skip
        self.ip(ns_a, "link", "set", if_a, "up")
        self.ip(ns_b, "link", "set", if_b, "up")

    def bridge(self, ns: str, name: str, members: Sequence[str]) -> None:
        self.ip(ns, "link", "add", name, "type", "bridge")
        for member in members:
            self.ip(ns, "link", "set", member, "master", name)
        self.ip(ns, "link", "set", name, "up")

    def address(self, ns: str, ifname: str, cidr: str) -> None:
        self.ip(ns, "addr", "add", cidr, "dev", ifname)

    def default_route(self, ns: str, via: str) -> None:
        self.ip(ns, "route", "add", "default", "via", via)

    # --- teardown

    def _leftover_pids(self, ns: str) -> list[int]:
        done = subprocess.run(
            [_IP, "netns", "pids", f"{self.prefix}-{ns}"],
            capture_output=True, text=True, timeout=_CMD_TIMEOUT,
        )  # fmt: skip
        return [int(pid) for pid in done.stdout.split() if pid.isdigit()]

    def close(self) -> None:
        """Kill every process started in the lab (by PID) and delete its namespaces."""
        if self._closed:
            return
        self._closed = True
        for process in self._processes:
            _stop(process)
        for ns in self._namespaces:
            for pid in self._leftover_pids(ns):  # children of what we started, inside our netns
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for ns in reversed(self._namespaces):
            subprocess.run(
                [_IP, "netns", "del", f"{self.prefix}-{ns}"],
                capture_output=True, timeout=_CMD_TIMEOUT,
            )  # fmt: skip

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _router_ruleset(symmetric: bool) -> str:
    """Masquerade out of ``wan``; inbound only for established flows (no port forwarding)."""
    masquerade = "masquerade random" if symmetric else "masquerade"
    return f"""
table ip dellab_nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" {masquerade}
    }}
}}
table inet dellab_filter {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname != "wan" oifname "wan" accept
        iifname "lan" oifname "lan" accept
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }}
}}
"""


def _add_router(lab: Lab, router: str, wan_addr: str, symmetric: bool) -> None:
    lab.add_namespace(router)
    lab.veth(router, "wan", "pub", f"to-{router}")
    lab.ip("pub", "link", "set", f"to-{router}", "master", "br0")
    lab.address(router, "wan", f"{wan_addr}/24")
    lab.default_route(router, PUB_ADDR)
    lab.sysctl(router, "net.ipv4.ip_forward=1")
    lab.nft(router, _router_ruleset(symmetric))
    lab.hosts[router] = Host(wan_addr, wan_addr)


def _add_host(lab: Lab, host: str, router: str, addr: str, gateway: str, link: str) -> None:
    """``host`` with ``eth0`` = ``addr``/24; the other veth end is ``link`` in ``router``."""
    lab.add_namespace(host)
    lab.veth(router, link, host, "eth0")
    lab.address(host, "eth0", f"{addr}/24")
    lab.default_route(host, gateway)
    lab.hosts[host] = Host(addr, lab.hosts[router].public_addr)


def _build(lab: Lab, build: Callable[[Lab], None]) -> Lab:
    try:
        remove_stale_namespaces()
        build(lab)
    except BaseException:
        lab.close()
        raise
    return lab


def _make_pub(lab: Lab) -> None:
    lab.add_namespace("pub")
    lab.ip("pub", "link", "add", "br0", "type", "bridge")
    lab.ip("pub", "link", "set", "br0", "up")
    lab.address("pub", "br0", f"{PUB_ADDR}/24")
    lab.hosts["pub"] = Host(PUB_ADDR, PUB_ADDR)


def build_nat_lab(*, symmetric: bool = False) -> Lab:
    """alice behind nat-a, bob behind nat-b, both routers on the public segment with pub."""

    def build(lab: Lab) -> None:
        _make_pub(lab)
        for router, wan, subnet, host in (
            ("nat-a", "203.0.113.10", "10.0.1", "alice"),
            ("nat-b", "203.0.113.20", "10.0.2", "bob"),
        ):
            _add_router(lab, router, wan, symmetric)
            _add_host(lab, host, router, f"{subnet}.2", f"{subnet}.1", "lan")
            lab.address(router, "lan", f"{subnet}.1/24")

    return _build(Lab(), build)


def build_lan_lab() -> Lab:
    """alice and bob on one LAN (a bridge in nat-a), behind one NAT to pub."""

    def build(lab: Lab) -> None:
        _make_pub(lab)
        _add_router(lab, "nat-a", "203.0.113.10", symmetric=False)
        _add_host(lab, "alice", "nat-a", "10.0.1.2", "10.0.1.1", "to-alice")
        _add_host(lab, "bob", "nat-a", "10.0.1.3", "10.0.1.1", "to-bob")
        lab.bridge("nat-a", "lan", ["to-alice", "to-bob"])
        lab.address("nat-a", "lan", "10.0.1.1/24")

    return _build(Lab(), build)
