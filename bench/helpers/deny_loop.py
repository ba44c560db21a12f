#!/usr/bin/env python3
"""Makes verdict events as fast as one process can: connect() calls that policy denies.

usage: deny_loop.py HOST PORT SECONDS [MAX_EVENTS [RATE]]
Run inside an enrolled pod whose egress policy denies HOST:PORT: cgroup/connect4 fails
every call with EPERM and emits one DROPPED event. A socket whose connect() was refused
by the hook stays unconnected, so one socket serves every attempt: the loop is one
syscall per event. Stops after SECONDS or MAX_EVENTS (0: no limit); RATE (events/s, 0:
as fast as possible) paces the loop in slices of 1 ms.
Prints {"ready": true} and waits for a line on stdin, so several pods start together;
then prints one JSON line: {"events": N, "seconds": S, "cpu": CPU seconds it used}
(N counts calls, the first probe included; the kernel's drop counter is the
authoritative count).
"""
import errno
import json
import socket
import sys
import time

host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
limit = int(sys.argv[4]) if len(sys.argv) > 4 else 0
rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
addr = (host, port)
connect = s.connect_ex
# anything but EPERM means the hook did not deny: the benchmark is measuring the wrong thing
first = connect(addr)
if first != errno.EPERM:
    print(json.dumps({"error": f"connect() returned {errno.errorcode.get(first, first)}, not EPERM: is the pod enrolled with a denying policy?"}), flush=True)
    sys.exit(2)

print(json.dumps({"ready": True}), flush=True)
sys.stdin.readline()
# in slices: the clock is read once per slice, not once per call
SLICE = 256 if rate == 0 else max(1, int(rate / 1000))
n = 1
t0 = time.monotonic()
c0 = time.process_time()
deadline = t0 + seconds
while True:
    k = SLICE if limit == 0 else min(SLICE, limit - n)
    for _ in range(k):
        connect(addr)
    n += k
    now = time.monotonic()
    if now >= deadline or (limit and n >= limit):
        break
    if rate:
        ahead = n / rate - (now - t0)
        if ahead > 0:
            time.sleep(ahead)
print(json.dumps({"events": n, "seconds": time.monotonic() - t0, "cpu": time.process_time() - c0}), flush=True)
