#!/usr/bin/env python3
"""Who closed wrk's connections first? (bench/abort_storm_repro, CAPTURE=1)

Reads RUNDIR/flags.txt (tshark fields of the SYN/FIN/RST packets on the
server's port), RUNDIR/access.log (the repro's LogFormat) and
RUNDIR/error.log. For every wrk connection (client 127.0.0.1) it finds the
first FIN or RST and its sender. A server-first close is "announced" when the
connection's last logged response said it closes (%X "-":
MaxKeepAliveRequests, Connection: close), otherwise "unannounced": the server
closed a keep-alive connection on which wrk then (or already) waited for a
response, which wrk counts as a read error. Each unannounced close is listed
with the child that had the connection, its last logged request and the
nearest event-MPM "workers busy" line of that child.
"""
import collections
import datetime
import re
import sys

rundir, port = sys.argv[1], sys.argv[2]

conns = {}  # (ip, cport, syn_time) -> dict
current = {}  # (ip, cport) -> key of the connection in progress
for line in open(f"{rundir}/flags.txt"):
    f = line.split()
    if len(f) < 9:
        continue
    t = float(f[0])
    src, sport, dst, dport = f[1], f[2], f[3], f[4]
    syn, ack, fin, rst = (x in ("1", "True") for x in f[5:9])
    if sport == port:
        client, side = (dst, dport), "server"
    else:
        client, side = (src, sport), "client"
    if syn and not ack and side == "client":
        key = (client[0], client[1], t)
        current[client] = key
        conns[key] = {"syn": t, "first": None}
        continue
    key = current.get(client)
    if key is None:
        continue
    c = conns[key]
    if (fin or rst) and c["first"] is None:
        c["first"] = (t, side, "RST" if rst else "FIN")

# access log: ip port pid tid status X k end_usec D "req" ag=
acc = collections.defaultdict(list)
for line in open(f"{rundir}/access.log"):
    f = line.split()
    try:
        acc[(f[0], f[1])].append(
            {"pid": f[2], "tid": f[3], "status": f[4], "x": f[5], "k": int(f[6]),
             "end": int(f[7]) / 1e6, "line": line.rstrip()})
    except (IndexError, ValueError):
        pass

# event-MPM "busy" lines, per pid
busy = collections.defaultdict(list)
tsre = re.compile(r"^\[(\w{3} \w{3} \d+ \d+:\d+:\d+\.\d+ \d{4})\].*\[pid (\d+):tid \d+\] (.*)")
for line in open(f"{rundir}/error.log", errors="replace"):
    m = tsre.match(line)
    if not m or ("workers" not in m.group(3) and "Too many open" not in m.group(3)):
        continue
    t = datetime.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S.%f %Y").timestamp()
    busy[m.group(2)].append((t, m.group(3)[:70]))

try:
    wrk_end = float(open(f"{rundir}/wrk.end").read())
except (OSError, ValueError):
    wrk_end = float("inf")

counts = collections.Counter()
unannounced = []
for key, c in conns.items():
    ip, cport, syn = key
    who = "wrk" if ip == "127.0.0.1" else "storm"
    if c["first"] is None:
        counts[f"{who}_no_close_seen"] += 1
        continue
    t, side, kind = c["first"]
    if side == "client":
        counts[f"{who}_client_first_{kind.lower()}"] += 1
        continue
    if who == "storm":
        counts[f"storm_server_first_{kind.lower()}"] += 1
        continue
    lines = [a for a in acc.get((ip, cport), []) if syn - 0.001 <= a["end"] <= t + 0.001]
    last = lines[-1] if lines else None
    if last is not None and last["x"] == "-":
        counts[f"server_first_{kind.lower()}_announced"] += 1
        continue
    counts[f"server_first_{kind.lower()}_unannounced"] += 1
    if t > wrk_end - 0.05:
        counts["unannounced_at_or_after_wrk_end"] += 1
    near = None
    if last is not None:
        for bt, msg in busy.get(last["pid"], []):
            if near is None or abs(bt - t) < abs(near[0] - t):
                near = (bt, msg)
    unannounced.append((t, kind, cport, len(lines), last, near))

# an unannounced close within 5 ms of a "workers busy" line of its child
near5 = sum(1 for u in unannounced if u[5] is not None and abs(u[5][0] - u[0]) <= 0.005)
counts["unannounced_within_5ms_of_busy_line"] = near5
for k in ("server_first_fin_unannounced", "server_first_rst_unannounced",
          "server_first_fin_announced", "server_first_rst_announced"):
    counts.setdefault(k, 0)
for k, v in sorted(counts.items()):
    print(k, v)
t0 = min((c["syn"] for c in conns.values()), default=0)
print("# unannounced server-first closes of wrk connections:")
print("# t(s from first SYN) kind cport requests_logged last(pid k X ms_since_last_response) nearest_busy_line(ms)")
for t, kind, cport, n, last, near in sorted(unannounced, key=lambda u: u[0]):
    lastd = (f"pid={last['pid']} k={last['k']} X={last['x']} +{(t - last['end']) * 1000:.2f}ms"
             if last else "none")
    neard = f"{(near[0] - t) * 1000:+.1f}ms '{near[1]}'" if near else "none"
    print(f"{t - t0:8.4f} {kind} {cport} {n} {lastd} {neard}")
