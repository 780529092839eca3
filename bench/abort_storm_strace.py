#!/usr/bin/env python3
"""Who made which socket calls? (bench/abort_storm_repro, STRACE=1)

Reads RUNDIR/strace (strace -f -tt -yy -e trace=shutdown,close,epoll_ctl of
the httpd child(ren)) and RUNDIR/threads.txt (pid tid comm), and counts the
calls per thread kind (the module's monitor thread is named "ag-monitor"),
call, operation and peer: "wrk" (a client at 127.0.0.1), "storm" (127.0.0.2),
"listener", "file", ... Every shutdown() of a wrk connection is then listed
with the connection's last access-log line (port match), so a shutdown that
follows a "Connection: close" response (%X "-") is told apart from one that
does not.
"""
import collections
import re
import sys

rundir = sys.argv[1]
names = {}
for line in open(f"{rundir}/threads.txt"):
    f = line.split(None, 2)
    if len(f) == 3:
        names[f[1]] = f[2].strip()

def peer_of(obj):
    m = re.match(r"TCP:\[([^\]]*)\]", obj)
    if not m:
        return "file" if obj.startswith("/") else obj.split(":")[0]
    ends = m.group(1).split("->")
    if len(ends) == 1:
        return "listener"
    return {"127.0.0.1": "wrk", "127.0.0.2": "storm"}.get(ends[1].split(":")[0], ends[1])

acc = collections.defaultdict(list)
for line in open(f"{rundir}/access.log"):
    f = line.split()
    if len(f) > 7:
        acc[(f[0], f[1])].append(line.rstrip())

counts = collections.Counter()
wrk_shutdowns = []
OBJ = r"<((?:TCP|TCPv6|UDP|UNIX):\[[^\]]*\]|[^>]*)>"
call = re.compile(r"(\d+)\s+(\S+)\s+(\w+)\((\d+)" + OBJ + r"(?:, (\w+))?(?:, (\d+)" + OBJ + ")?")
for line in open(f"{rundir}/strace"):
    m = call.match(line)
    if not m:
        continue
    tid, ts, sc, fd, obj, op, fd2, obj2 = m.groups()
    thread = names.get(tid, "?")
    thread = "ag-monitor" if thread == "ag-monitor" else "httpd thread"
    if sc == "epoll_ctl":
        target = peer_of(obj2 or "")
        counts[(thread, sc, f"{op} epfd={fd}", target)] += 1
        continue
    peer = peer_of(obj)
    counts[(thread, sc, op or "", peer)] += 1
    if sc == "shutdown" and peer == "wrk":
        port = re.search(r"->127\.0\.0\.1:(\d+)", obj).group(1)
        wrk_shutdowns.append((ts, tid, port))

print("# calls: count thread call op peer")
for k, v in sorted(counts.items()):
    print(v, *k)
print("# shutdown() of wrk connections: time tid port last-access-line")
for ts, tid, port in wrk_shutdowns:
    lines = acc.get(("127.0.0.1", port), [])
    print(ts, tid, port, lines[-1] if lines else "(no request logged)")
