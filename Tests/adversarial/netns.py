"""Network-namespace plumbing for the adversarial suite: one process holds
sockets in several pod namespaces at once.

A socket belongs to the namespace its creating thread was in, and keeps it, so
the driver enters a namespace (setns), opens what it needs there and comes back
to the host; sniffer and listener threads only read sockets already open.
Nothing here judges traffic: it sends frames exactly as crafted (AF_PACKET,
below the sender's own stack) and counts what arrives.
"""
import contextlib
import errno
import ctypes
import json
import os
import socket
import struct
import subprocess
import threading
import time

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
_libc = ctypes.CDLL(None, use_errno=True)
_host_fd = os.open("/proc/self/ns/net", os.O_RDONLY)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def inside(ns):
    """Runs the block in network namespace `ns` (None: the host's)."""
    if ns is None:
        yield
        return
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(fd)
        yield
    finally:
        _setns(_host_fd)
        os.close(fd)


def ip_json(ns, *args):
    cmd = ["ip"] + (["-n", ns] if ns else []) + ["-j"] + list(args)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


class Pod:
    """A pod's namespace, its interface and the host-side peer of that interface."""

    def __init__(self, name, ns, ifname="eth0"):
        self.name, self.ns, self.ifname = name, ns, ifname
        link = ip_json(ns, "link", "show", ifname)[0]
        self.mac = link["address"]
        self.peer_ifindex = link.get("link_index")
        self.ipv4 = self.ipv6 = None
        for a in ip_json(ns, "addr", "show", ifname)[0].get("addr_info", []):
            if a["family"] == "inet" and not self.ipv4:
                self.ipv4 = a["local"]
            if a["family"] == "inet6" and a.get("scope") == "global" and not self.ipv6:
                self.ipv6 = a["local"]
        self.host_if = self.host_mac = None
        for l in ip_json(None, "link", "show"):
            if l.get("ifindex") == self.peer_ifindex:
                self.host_if, self.host_mac = l["ifname"], l["address"]
        if not self.host_if:
            raise RuntimeError(f"{name}: no host-side peer of {ifname} (ifindex {self.peer_ifindex})")
        self.gw4 = self._gateway("-4")
        self.gw6 = self._gateway("-6") if self.ipv6 else None

    def _gateway(self, fam):
        for r in ip_json(self.ns, fam, "route", "show", "default"):
            if "gateway" in r:
                return r["gateway"]
        return None


class Sniffer:
    """Counts frames arriving on an interface (AF_PACKET, every ethertype).

    Inside a pod this sees what reached the pod, after the host's programs;
    nothing that was dropped on the way can show up here."""

    def __init__(self, ns, ifname):
        with inside(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind((ifname, 0))
        self.sock.settimeout(0.1)
        self.frames = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            if addr[2] != socket.PACKET_OUTGOING:
                self.frames.append(data)

    def count(self, predicate):
        from scapy.layers.l2 import Ether
        return sum(1 for f in list(self.frames) if predicate(Ether(f)))

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


class Sender:
    """Sends frames exactly as given on an interface, below that namespace's stack."""

    def __init__(self, ns, ifname):
        with inside(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind((ifname, 0))

    def send(self, frame, count=1, gap=0.01):
        """Sends `count` copies; returns how many the device took. A tc program
        that drops a frame on transmit makes send() fail with ENOBUFS: that is a
        verdict for the receiver's count, not an error of the test."""
        raw = bytes(frame)
        taken = 0
        for _ in range(count):
            try:
                self.sock.send(raw)
                taken += 1
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
            time.sleep(gap)
        return taken

    def close(self):
        self.sock.close()


class Listener:
    """A TCP listener or UDP receiver in a namespace that records each accepted
    connection or datagram as (monotonic time, peer address, payload)."""

    def __init__(self, ns, family, kind, port):
        with inside(ns):
            self.sock = socket.socket(family, kind)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            if kind == socket.SOCK_STREAM:
                self.sock.listen(512)
        self.sock.settimeout(0.1)
        self.kind = kind
        self.events = []
        self.held = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                if self.kind == socket.SOCK_STREAM:
                    conn, addr = self.sock.accept()
                    self.held.append(conn)
                    self.events.append((time.monotonic(), addr[0], b""))
                else:
                    data, addr = self.sock.recvfrom(65535)
                    self.events.append((time.monotonic(), addr[0], data))
            except socket.timeout:
                continue
            except OSError:
                return

    def wait_from(self, addr, n=1, timeout=1.0):
        """Waits up to `timeout` for `n` events from `addr`; returns how many there are."""
        end = time.monotonic() + timeout
        while self.from_addr(addr) < n and time.monotonic() < end:
            time.sleep(0.02)
        return self.from_addr(addr)

    def from_addr(self, addr, marker=None):
        return sum(1 for _, a, d in list(self.events)
                   if a.removeprefix("::ffff:") == addr and (marker is None or marker in d))

    def close(self):
        self._stop.set()
        self._thread.join()
        for c in self.held:
            c.close()
        self.sock.close()


def tcp_connect(ns, addr, port, timeout=1.0, keep=False):
    """A genuine connect from `ns`; returns the socket if kept, else whether it connected."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with inside(ns):
        s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
    except OSError:
        s.close()
        return None if keep else False
    if keep:
        return s
    s.close()
    return True


def udp_send(ns, addr, port, payload, count=1):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with inside(ns):
        s = socket.socket(family, socket.SOCK_DGRAM)
    for _ in range(count):
        s.sendto(payload, (addr, port))
        time.sleep(0.01)
    s.close()


def packed_ipv4(addr):
    return struct.unpack("!I", socket.inet_aton(addr))[0]
