"""Which TCP ports the processes of a process tree listen on, read from /proc (no `ss` needed).

Each process's sockets are looked up in the table of its own network namespace, so a server in a
namespace of its own is seen where it really listens.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    pid: int
    command: str
    address: str
    port: int
    netns: str

    @property
    def loopback(self) -> bool:
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return ip.is_loopback


def descendants(root: int) -> set[int]:
    """`root` and every live process below it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def _decode(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # /proc/net/tcp prints the address as 32-bit words in host (little-endian) order.
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw)), int(port, 16)


def _listening_sockets(pid: int) -> dict[str, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket in pid's network namespace."""
    table: dict[str, tuple[str, int]] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == TCP_LISTEN:
                    table[fields[9]] = _decode(fields[1])
    return table


def listeners(pids: set[int]) -> list[Listener]:
    found: list[Listener] = []
    tables: dict[str, dict[str, tuple[str, int]]] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            ns = netns(pid)
            if ns not in tables:
                tables[ns] = _listening_sockets(pid)
            command = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and (hit := tables[ns].get(target[8:-1])):
                        found.append(Listener(pid, command, hit[0], hit[1], ns))
    return sorted(set(found), key=lambda item: (item.port, item.pid))


def interfaces(pid: int) -> list[str]:
    """Network interfaces of pid's namespace."""
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    return [line.split(":")[0].strip() for line in lines]
