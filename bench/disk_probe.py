"""Free space of some directories' filesystems, sampled often: bench/disk_full.sh's probe.

    python3 bench/disk_probe.py --dirs A,B,C --threshold BYTES [--every SECS] [--max-secs N]

Samples `statvfs` (f_bavail * f_frsize, what a node's free-space check reads, before the
bytes freed inside its database are added) of each directory every --every seconds, until
killed or --max-secs. Prints one JSON object per line: {"t", "dir", "below": true,
"available"} the first time a directory's free space is below --threshold, and every second
{"t", "available": [per dir], "lowest": [per dir, the lowest sample since the start]}.
"""

import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dirs", required=True)
    ap.add_argument("--threshold", type=int, required=True)
    ap.add_argument("--every", type=float, default=0.02)
    ap.add_argument("--max-secs", type=float, default=3600)
    args = ap.parse_args()
    dirs = args.dirs.split(",")
    below = set()
    lowest = [None] * len(dirs)
    start = last_print = time.time()
    while time.time() - start < args.max_secs:
        now = time.time()
        free = []
        for d in dirs:
            st = os.statvfs(d)
            free.append(st.f_bavail * st.f_frsize)
        lowest = [f if lo is None else min(lo, f) for lo, f in zip(lowest, free)]
        for d, f in zip(dirs, free):
            if f < args.threshold and d not in below:
                below.add(d)
                print(json.dumps({"t": round(now, 3), "dir": d, "below": True, "available": f}),
                      flush=True)
        if now - last_print >= 1:
            last_print = now
            print(json.dumps({"t": round(now, 3), "available": free, "lowest": lowest}), flush=True)
        time.sleep(args.every)


if __name__ == "__main__":
    main()
