"""Summarise a py-spy `--format raw` (collapsed stacks) profile: top functions by self and by inclusive samples.

    python bench/profile_summary.py bench/results/profile/pollux-c8.txt [N]
"""

from __future__ import annotations

import collections
import re
import sys


def main() -> None:
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in open(path):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        # py-spy frames look like "func (path/to/file.py:123)"; drop line numbers so a function counts once.
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"{total} samples")
    for title, counter in (("self", self_t), ("inclusive", incl)):
        print(f"\n== top {top} by {title} time ==")
        for f, n in counter.most_common(top):
            print(f"{100 * n / total:6.1f}%  {f}")


if __name__ == "__main__":
    main()
