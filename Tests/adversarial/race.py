"""The two ends of the deny-X-allow-rest race (case 6 of run.sh), each run with
`ip netns exec` in a pod's namespace.

    race.py guard PORT LOG SECONDS    accepts on PORT, one line `<peer address>` per connection
    race.py probe ADDR PORT STOPFILE SECONDS OUT
                                      connects to ADDR:PORT in a tight loop from before the
                                      pod has an interface until STOPFILE exists; writes
                                      `<attempts> <connected> <errno:count,...> <wall time of the first connect or 0>` to OUT
"""
import errno
import os
import socket
import sys
import time


def guard(port, log, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1024)
    s.settimeout(0.2)
    end = time.monotonic() + seconds
    with open(log, "a", buffering=1) as out:
        while time.monotonic() < end:
            try:
                c, addr = s.accept()
            except socket.timeout:
                continue
            out.write(f"{addr[0]}\n")
            c.close()


def probe(addr, port, stopfile, seconds, out):
    attempts = connected = 0
    errors = {}
    first = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end and not os.path.exists(stopfile):
        attempts += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.25)
        try:
            s.connect((addr, port))
            connected += 1
            first = first or time.time()
        except OSError as e:
            name = type(e).__name__ if e.errno is None else errno.errorcode.get(e.errno, str(e.errno))
            errors[name] = errors.get(name, 0) + 1
            # No interface or route yet: fails at once; don't spin the CPU.
            time.sleep(0.001)
        finally:
            s.close()
    with open(out, "w") as f:
        f.write(f"{attempts} {connected} " + (",".join(f"{k}:{v}" for k, v in sorted(errors.items())) or "-")
                + f" {first:.6f}\n")


if __name__ == "__main__":
    if sys.argv[1] == "guard":
        guard(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
    else:
        probe(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]), sys.argv[6])
