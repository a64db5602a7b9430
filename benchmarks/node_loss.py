"""The node-loss drills of tests/ray/test_multinode.py (a multi-node Ray cluster on this box,
nodes removed mid-training and mid-fusion), with their record kept in
benchmarks/results/node_loss.json: what was removed, when, and what survived.

Run: python benchmarks/node_loss.py
"""

from __future__ import annotations

import os
import subprocess
import sys

from common import REPO, RESULTS


def main() -> int:
    record = RESULTS / "node_loss.json"
    env = {**os.environ, "DWSFUSION_DRILL_RECORD": str(record), "RAY_ADDRESS": ""}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "multinode",
        "tests/ray/test_multinode.py",
        "-p",
        "no:cacheprovider",
    ]
    status = subprocess.run(command, cwd=REPO, env=env).returncode
    print(f"record: {record}" if record.exists() else "no record written")
    return status


if __name__ == "__main__":
    sys.exit(main())
