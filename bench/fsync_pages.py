"""What an fdatasync costs on this disk by the pages it flushes: python3 bench/fsync_pages.py [DIR] [ROUNDS]

Per round, interleaved (so that the disk's swings hit every case alike), each followed by
`fdatasync`: a 4 KiB append to a file (what an append-only log pays); one 4 KiB write at a
random page of a 256 MiB file made with ftruncate (a hole, as redb grows its file) and of one
written in full beforehand; 11 such writes at random pages (a redb commit of a one-at-a-time
produce wrote 11-12 pages, scattered); and 11 writes to adjacent pages. Prints the p50 and
p90 of each, in ms. DIR defaults to /tmp/fjord-bench/fsync-pages (the disk bench/ uses).
"""

import os
import random
import sys
import time

PAGE = 4096
SIZE = 256 << 20


def make(path, prewrite):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    if prewrite:
        chunk = b"\0" * (1 << 20)
        for _ in range(SIZE >> 20):
            os.write(fd, chunk)
        os.fsync(fd)
    else:
        os.ftruncate(fd, SIZE)
        os.fsync(fd)
    return fd


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "/tmp/fjord-bench/fsync-pages"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    os.makedirs(d, exist_ok=True)
    buf = os.urandom(PAGE)
    holes = make(os.path.join(d, "holes"), False)
    written = make(os.path.join(d, "written"), True)
    append = os.open(os.path.join(d, "append"), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    pages = SIZE // PAGE
    cases = {
        "append, 1 page": None,
        "hole, 1 page": (holes, 1, False),
        "written, 1 page": (written, 1, False),
        "hole, 11 scattered pages": (holes, 11, False),
        "written, 11 scattered pages": (written, 11, False),
        "written, 11 adjacent pages": (written, 11, True),
    }
    times = {k: [] for k in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            t = time.perf_counter()
            if case is None:
                os.write(append, buf)
                os.fdatasync(append)
            else:
                fd, n, adjacent = case
                if adjacent:
                    base = random.randrange(pages - n)
                    at = range(base, base + n)
                else:
                    at = [random.randrange(pages) for _ in range(n)]
                for p in at:
                    os.pwrite(fd, buf, p * PAGE)
                os.fdatasync(fd)
            times[name].append((time.perf_counter() - t) * 1000)
    for name, v in times.items():
        v.sort()
        print(f"{name:30s} p50 {v[len(v) // 2]:.3f} ms  p90 {v[int(len(v) * 0.9)]:.3f} ms")
    for f in ("holes", "written", "append"):
        os.unlink(os.path.join(d, f))


if __name__ == "__main__":
    main()
