"""Runs inside a network namespace of its own (unshare -n), where only four local ports are left for
connects: l4lb with one backend, and more clients than ports. Prints one JSON line with what the
clients saw and what l4lb logged. Used by PortExhaustionTests; every wait is bounded."""
import json
import shutil
import socket
import subprocess
import sys
import threading
import time

l4lb = sys.argv[1]
subprocess.run([shutil.which("ip") or "/usr/sbin/ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
    f.write("40000 40003")

# The backend greets each connection and holds it until told to close them all.
backend = socket.socket()
backend.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
backend.bind(("127.0.0.1", 9000))
backend.listen(64)
held = []
lock = threading.Lock()


def serve():
    while True:
        try:
            connection, _ = backend.accept()
        except OSError:
            return
        connection.sendall(b"hello\n")
        with lock:
            held.append(connection)


threading.Thread(target=serve, daemon=True).start()


def close_held():
    """The backend closes every connection it holds."""
    with lock:
        for connection in held:
            connection.close()
        held.clear()


proxy = subprocess.Popen(
    [l4lb, "--listen", "127.0.0.1:8080", "--backend", "127.0.0.1:9000", "--threads", "1",
     "--retire-after", "1", "--log-level", "info"],
    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
log = []
threading.Thread(target=lambda: log.extend(proxy.stderr), daemon=True).start()


def connect(index):
    """A client on a port of its own, outside the four: it takes none of them. None if refused."""
    client = socket.socket()
    client.settimeout(5)
    client.bind(("127.0.0.1", 50000 + index))
    try:
        client.connect(("127.0.0.1", 8080))
    except OSError:
        client.close()
        return None
    return client


def greeted(client):
    if client is None:
        return False
    try:
        return client.recv(16) == b"hello\n"
    except OSError:
        return False


deadline = time.time() + 20
while True:
    try:
        probe = socket.create_connection(("127.0.0.1", 8080), timeout=1)
        probe.close()
        break
    except OSError:
        if time.time() > deadline:
            raise SystemExit("l4lb did not listen")
        time.sleep(0.05)
# The probe's own backend connection may hold a port until l4lb sees it close: wait for it to go.
deadline = time.time() + 10
while time.time() < deadline:
    with lock:
        if held:
            break
    time.sleep(0.01)
close_held()
time.sleep(0.2)

first = [connect(i) for i in range(4)]
served_first = sum(greeted(c) for c in first)
more = [connect(10 + i) for i in range(8)]
refused = sum(not greeted(c) for c in more)
for c in more:
    if c is not None:
        c.close()
# The backend ends its connections first, so that l4lb's side does not wait in TIME_WAIT.
close_held()
for c in first:
    if c is not None:
        try:
            c.recv(16)
        except OSError:
            pass
        c.close()
time.sleep(0.5)
after = connect(30)
served_after = greeted(after)
if after is not None:
    after.close()
close_held()
proxy.terminate()
proxy.wait(timeout=15)
print(json.dumps({"served_first": served_first, "refused": refused, "served_after": served_after, "log": log}))
