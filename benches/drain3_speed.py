"""Drain3 (PyPI `drain3`, default configuration) over the files named on the command
line, one TemplateMiner per file, as the LogHub bench feeds driftwatch's miner.
Prints one JSON object: lines mined, seconds spent in add_log_message, clusters."""

import json
import logging
import sys
import time

from drain3 import TemplateMiner

logging.disable(logging.WARNING)  # drain3 warns that it found no drain3.ini: defaults

lines_total, seconds, clusters = 0, 0.0, 0
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    miner = TemplateMiner()
    start = time.perf_counter()
    for line in lines:
        miner.add_log_message(line)
    seconds += time.perf_counter() - start
    lines_total += len(lines)
    clusters += len(miner.drain.clusters)
print(json.dumps({"lines": lines_total, "seconds": seconds, "clusters": clusters}))
