#!/usr/bin/env python3
"""Times blocking connect() calls, the way an application feels them.

usage: connect_timer.py HOST PORT COUNT
prints one JSON line: {"samples_ns": [...], "errors": {...}}
A blocking socket keeps the measurement close to the syscall: no event loop in the way.
"""
import json
import socket
import sys
import time

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
samples, errors = [], {}
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2.0)
    t0 = time.perf_counter_ns()
    try:
        s.connect((host, port))
        samples.append(time.perf_counter_ns() - t0)
    except OSError as e:
        name = e.__class__.__name__ if e.errno is None else str(e.errno)
        errors[name] = errors.get(name, 0) + 1
    finally:
        s.close()
print(json.dumps({"samples_ns": samples, "errors": errors}))
