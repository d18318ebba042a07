#!/usr/bin/env bash
# System calls per GiB moved: the io_uring backend (stoq-uring) against the quinn backend.
#
# What it measures: one bulk upload per run (phoenix bench's protocol: 1 connection, 1
# stream, client -> server, every byte verified at the receiver, 1452-byte maximum UDP
# payload as in TransportConfig::default), client and server in separate processes on
# loopback ([::1]). Each process runs under its own `perf stat` counting the software
# tracepoint raw_syscalls:sys_enter (every system call entry of every thread of the
# process, start-up and handshake included) plus per-syscall tracepoints
# (syscalls:sys_enter_<name>) for the calls that matter here, and task-clock (CPU time).
# Every run is a fresh pair of processes, so each count covers exactly one transfer.
#
# Rows:
#   quinn         phoenix --backend quinn bench-server / bench --to
#   uring         phoenix --backend uring bench-server / bench --to
#   quinn-1t, uring-1t  the same with --worker-threads 0 on both processes: tokio's
#                 current-thread runtime, application, QUIC engine and I/O on one thread
#   quinn-8c, uring-8c, quinn-8c-1t, uring-8c-1t  the same with `bench --connections 8`:
#                 the MIB split across 8 parallel connections of one client endpoint to
#                 one server endpoint, one stream each (the matrix's bulk_8conn shape)
#   glue, glue-1t, glue-8c, glue-8c-1t  the same shapes on the io_uring backend's other
#                 engine, quinn's async glue on its socket (phoenix --backend uring-glue)
#   quinn-task, uring-task, quinn-8c-task, uring-8c-task  the default runtime with
#                 `bench --sender-tasks`: each connection's sender a task on the runtime's
#                 workers instead of on the thread blocked in main (not a worker)
#   uring-sqpoll  backends/uring/examples/uring_bench.rs (same protocol and config, through
#                 TunedUringBackend with SQPOLL, idle 2 ms, thread unpinned)
#   uring-sqpoll-cpu1  the same with the SQPOLL thread pinned to CPU 1
#
# Reported per row and side (client = sender, server = receiver): system calls per GiB
# (median of the runs, with min and max), the top system calls, CPU-seconds per GiB
# (task-clock), goodput at the receiver; and the ratio quinn/uring of the totals.
# Output: benches/results/syscalls.json and benches/results/syscalls.md.
#
# Usage: benches/syscalls.sh            (RUNS=5 MIB=1024 ROWS="quinn uring uring-sqpoll")
#        RUNS=3 MIB=2048 ROWS="quinn uring" OUT=/tmp/x benches/syscalls.sh
# Needs perf (software tracepoints only; hardware counters are not used) and python3.
# Run it on an otherwise idle machine (nothing else building or measuring).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
MIB=${MIB:-1024}
ROWS=${ROWS:-"quinn uring uring-sqpoll"}
OUT=${OUT:-$ROOT/benches/results}
SYSCALLS="io_uring_enter futex epoll_wait epoll_pwait epoll_ctl sendmsg sendmmsg recvmsg
recvmmsg sendto recvfrom write read mprotect brk mmap munmap madvise sched_yield
getrusage clock_nanosleep"

WORK=$(mktemp -d /tmp/stoq-syscalls.XXXXXX)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p stoq-phoenix --bin phoenix \
        && cargo build --release -q -p stoq-uring --example uring_bench)
fi
# Snapshots: a rebuild during the measurement does not change what is measured.
cp "${PHOENIX:-$ROOT/target/release/phoenix}" "$WORK/phoenix"
cp "$ROOT/target/release/examples/uring_bench" "$WORK/uring_bench"

# io_uring_submit_req counts SQEs (requests handed to io_uring, with or without a system
# call: SQPOLL's kernel thread submits without one); it is not a system call.
EVENTS=(-e raw_syscalls:sys_enter -e task-clock -e io_uring:io_uring_submit_req)
# perf mounts tracefs on first use: on a fresh machine the per-syscall events below only
# appear after that (without this, every count lands in "other").
perf stat -e raw_syscalls:sys_enter -o /dev/null -- true
for s in $SYSCALLS; do
    [ -e "/sys/kernel/tracing/events/syscalls/sys_enter_$s" ] \
        || [ -e "/sys/kernel/debug/tracing/events/syscalls/sys_enter_$s" ] \
        && EVENTS+=(-e "syscalls:sys_enter_$s")
done

# phoenix rows: <backend>[-8c][-1t|-task], backend quinn, uring or glue.
phoenix_flags() { # row -> global flags
    local b=${1%%-*}
    [ "$b" = glue ] && b=uring-glue
    case $1 in *-1t) echo "--worker-threads 0 --backend $b" ;; *) echo "--backend $b" ;; esac
}
connections() { case $1 in *-8c*) echo 8 ;; *) echo 1 ;; esac; }
sender_flag() { case $1 in *-task) echo "--sender-tasks" ;; esac; }
phoenix_row() { [[ $1 =~ ^(quinn|uring|glue)(-8c)?(-1t|-task)?$ ]]; }
server_cmd() {
    if phoenix_row "$1"; then
        echo "$WORK/phoenix $(phoenix_flags "$1") bench-server --bind [::1]:0"
        return
    fi
    case $1 in
        uring-sqpoll) echo "$WORK/uring_bench server --sqpoll-idle-ms 2" ;;
        uring-sqpoll-cpu1) echo "$WORK/uring_bench server --sqpoll-idle-ms 2 --sqpoll-cpu 1" ;;
        *) echo "unknown row $1" >&2; exit 2 ;;
    esac
}
client_cmd() { # row addr
    if phoenix_row "$1"; then
        echo "$WORK/phoenix $(phoenix_flags "$1") bench --to $2 --mib $MIB --runs 1 --connections $(connections "$1") $(sender_flag "$1") --json"
        return
    fi
    case $1 in
        uring-sqpoll) echo "$WORK/uring_bench client --to $2 --mib $MIB --sqpoll-idle-ms 2" ;;
        uring-sqpoll-cpu1) echo "$WORK/uring_bench client --to $2 --mib $MIB --sqpoll-idle-ms 2 --sqpoll-cpu 1" ;;
    esac
}

for row in $ROWS; do
    for run in $(seq 1 "$RUNS"); do
        base="$WORK/$row.$run"
        # shellcheck disable=SC2046
        coproc SRV { exec perf stat -x, -o "$base.server.perf" "${EVENTS[@]}" -- $(server_cmd "$row"); }
        SERVER_PID=$SRV_PID
        read -r line <&"${SRV[0]}"
        addr=${line#LISTENING }
        # shellcheck disable=SC2046
        perf stat -x, -o "$base.client.perf" "${EVENTS[@]}" -- $(client_cmd "$row" "$addr") \
            >"$base.client.json"
        eval "exec ${SRV[1]}>&-" # the server exits when its stdin closes
        wait "$SERVER_PID"
        SERVER_PID=
        echo "$row run $run: $(jq -r '.goodput_gbps.median' "$base.client.json") Gbit/s" >&2
    done
done

MACHINE="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), Linux $(uname -r)"
mkdir -p "$OUT"
python3 - "$WORK" "$OUT" "$RUNS" "$MIB" "$MACHINE" "$ROWS" <<'PY'
import json, statistics, sys, os
work, out, runs, mib, machine, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6].split()
gib = mib / 1024

def perf(path):
    counts, cpu, sqes = {}, 0.0, 0
    for line in open(path):
        f = line.strip().split(",")
        if len(f) < 3 or line.startswith("#") or not f[0].replace(".", "").isdigit():
            continue
        if f[2] == "io_uring:io_uring_submit_req":
            sqes = int(f[0])
        elif f[2] == "task-clock":
            cpu = float(f[0]) / 1e3  # msec -> s
        elif f[2] == "raw_syscalls:sys_enter":
            counts["total"] = int(f[0])
        else:
            counts[f[2].removeprefix("syscalls:sys_enter_")] = int(f[0])
    named = sum(v for k, v in counts.items() if k != "total")
    counts["other"] = counts.get("total", 0) - named
    return counts, cpu, sqes

def med(xs):
    return statistics.median(xs) if xs else None

doc = {"machine": machine, "mib_per_run": mib, "runs": runs, "payload_max": 1452,
       "direction": "client uploads to server (client = sender, server = receiver)",
       "command": f"RUNS={runs} MIB={mib} ROWS=\"{' '.join(rows)}\" benches/syscalls.sh",
       "rows": {}}
for row in rows:
    r = {"runs": []}
    for i in range(1, runs + 1):
        base = os.path.join(work, f"{row}.{i}")
        client = json.load(open(base + ".client.json"))
        run = {"goodput_gbps": client["goodput_gbps"]["median"]}
        for side in ("client", "server"):
            counts, cpu, sqes = perf(f"{base}.{side}.perf")
            run[side] = {"syscalls": counts, "cpu_seconds": cpu, "io_uring_sqes": sqes}
        r["runs"].append(run)
    summary = {}
    for side in ("client", "server", "both"):
        def per_gib(run, key):
            if side == "both":
                return (run["client"]["syscalls"].get(key, 0) + run["server"]["syscalls"].get(key, 0)) / gib
            return run[side]["syscalls"].get(key, 0) / gib
        totals = [per_gib(x, "total") for x in r["runs"]]
        keys = set(k for x in r["runs"] for s in ("client", "server") for k in x[s]["syscalls"]) - {"total"}
        by = {k: med([per_gib(x, k) for x in r["runs"]]) for k in keys}
        top = sorted(((k, v) for k, v in by.items() if v > 0), key=lambda kv: -kv[1])
        cpus = [((x["client"]["cpu_seconds"] + x["server"]["cpu_seconds"]) if side == "both" else x[side]["cpu_seconds"]) / gib for x in r["runs"]]
        sq = [((x["client"]["io_uring_sqes"] + x["server"]["io_uring_sqes"]) if side == "both" else x[side]["io_uring_sqes"]) / gib for x in r["runs"]]
        summary[side] = {"syscalls_per_gib": {"median": med(totals), "min": min(totals), "max": max(totals)},
                         "io_uring_sqes_per_gib": med(sq),
                         "by_syscall_per_gib": dict(top), "cpu_seconds_per_gib": med(cpus)}
    g = [x["goodput_gbps"] for x in r["runs"]]
    summary["goodput_gbps"] = {"median": med(g), "min": min(g), "max": max(g)}
    r["summary"] = summary
    doc["rows"][row] = r
ratios = {}
# Each row is compared with the quinn row of the same shape (connections, runtime):
# uring-8c-1t with quinn-8c-1t, uring-1t with quinn-1t, the SQPOLL rows with quinn.
for row in rows:
    shape = row.split("-", 1)[1] if "-" in row else ""
    base = "quinn-" + shape if shape and "quinn-" + shape in doc["rows"] else (
        "quinn-1t" if row.endswith("-1t") else "quinn")
    if row.startswith("quinn") or base not in doc["rows"]:
        continue
    q = doc["rows"][base]["summary"]
    s = doc["rows"][row]["summary"]
    ratios[row] = {side: q[side]["syscalls_per_gib"]["median"] / s[side]["syscalls_per_gib"]["median"]
                   for side in ("client", "server", "both")}
doc["ratio_quinn_over_row"] = ratios
json.dump(doc, open(os.path.join(out, "syscalls.json"), "w"), indent=2)

def k(v):
    return f"{v/1000:.1f}k" if v >= 1000 else f"{v:.0f}"
lines = ["# System calls per GiB: stoq-uring against stoq-quinn", "",
         f"Machine: {machine}. Loopback [::1], one connection (8 in the -8c rows, the MiB split "
         f"across them), one stream each, {mib} MiB per run "
         f"uploaded client -> server and verified at the receiver, 1452 B maximum UDP payload, "
         f"{runs} runs per row (a fresh server and client process per run); medians, [min-max].", "",
         f"Command: `{doc['command']}` (driver: benches/syscalls.sh; counts from "
         "`perf stat -e raw_syscalls:sys_enter -e syscalls:sys_enter_<name>` on each process, "
         "start-up and handshake included; CPU from task-clock).", "",
         "| row | goodput at receiver (Gbit/s) | client (sender) syscalls/GiB | server (receiver) syscalls/GiB | both | CPU-s/GiB client + server | quinn/row (both) |",
         "|---|---|---|---|---|---|---|"]
for row in rows:
    s = doc["rows"][row]["summary"]
    g = s["goodput_gbps"]
    cell = lambda side: f"{k(s[side]['syscalls_per_gib']['median'])} [{k(s[side]['syscalls_per_gib']['min'])}-{k(s[side]['syscalls_per_gib']['max'])}]"
    ratio = f"{ratios[row]['both']:.2f}x" if row in ratios else "-"
    lines.append(f"| {row} | {g['median']:.2f} [{g['min']:.2f}-{g['max']:.2f}] | {cell('client')} | {cell('server')} | {cell('both')} | "
                 f"{s['client']['cpu_seconds_per_gib']:.2f} + {s['server']['cpu_seconds_per_gib']:.2f} | {ratio} |")
lines += ["", "Top system calls per GiB (median):", ""]
for row in rows:
    s = doc["rows"][row]["summary"]
    for side in ("client", "server"):
        top = list(s[side]["by_syscall_per_gib"].items())[:6]
        sq = s[side]["io_uring_sqes_per_gib"]
        enters = s[side]["by_syscall_per_gib"].get("io_uring_enter", 0)
        per = f"; io_uring SQEs {k(sq)}/GiB, {sq / enters:.1f} per io_uring_enter" if sq and enters else (f"; io_uring SQEs {k(sq)}/GiB" if sq else "")
        lines.append(f"- {row}, {side}: " + ", ".join(f"{n} {k(v)}" for n, v in top) + per)
open(os.path.join(out, "syscalls.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
