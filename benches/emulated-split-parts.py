#!/usr/bin/env python3
"""Splits a combined benches/results/emulated-paths.json back into the raw part files that
`emulated_paths report` merged, so that some parts can be run again and the report rebuilt
from the others plus the new ones:

    benches/emulated-split-parts.py benches/results/emulated-paths.json /tmp/parts
    emulated_paths report /tmp/parts/quinn-engi.json ... new-uring-engi.json ...

Each part gets its run arguments, its start time and its runs (in the order the report
stored them, which is the parts' order), and the plotted time series of each cell's first
seed (the only series the combined file keeps), and its run time (`part_wall_seconds`;
files written before that field existed lack it, and then the time to the next part
started later stands in, the last part getting what is left of the campaign's total).
"""
import datetime
import json
import os
import sys


def main(combined, out_dir):
    d = json.load(open(combined))
    args, started = d["run_args"], d["started"]
    times = [datetime.datetime.fromisoformat(s.replace("Z", "+00:00")) for s in started]
    walls = list(d.get("part_wall_seconds") or [])
    for t in times[len(walls):]:
        later = [u for u in times if u > t]
        walls.append((min(later) - t).total_seconds() if later else None)
    rest = max(0.0, d["campaign_wall_seconds"] - sum(w for w in walls if w is not None))
    unknown = sum(1 for w in walls if w is None)
    walls = [rest / unknown if w is None else w for w in walls]
    plotted = {(p["backend"], p["controller"], p["scenario"], p["seed"]): p["series"]
               for p in d["plotted_series"]}

    def belongs(a, r):
        return (r["backend"] in a["backends"] and r["controller"] in a["controllers"]
                and (r["scenario"] in a["scenarios"] or r["scenario"] == "all"))

    parts, i = [[] for _ in args], 0
    for r in d["runs"]:
        while i < len(args) and not belongs(args[i], r):
            i += 1
        if i == len(args):
            sys.exit(f"run {r['backend']} {r['controller']} {r['scenario']} seed {r['seed']} "
                     "matches no part after the previous run's (runs out of part order?)")
        r = dict(r)
        r["series"] = plotted.get((r["backend"], r["controller"], r["scenario"], r["seed"]),
                                  r["series"])
        parts[i].append(r)
    os.makedirs(out_dir, exist_ok=True)
    for a, s, w, p in zip(args, started, walls, parts):
        name = os.path.basename(a["out"])
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump({"args": a, "started": s, "wall_seconds": w, "runs": p}, f)
        print(f"{name}: {len(p)} runs")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: emulated-split-parts.py <emulated-paths.json> <out-dir>")
    main(sys.argv[1], sys.argv[2])
