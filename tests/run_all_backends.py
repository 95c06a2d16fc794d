"""Runs the test suite once per Keras backend: ``python tests/run_all_backends.py [pytest args]``.

Each backend runs in its own process (the backend is fixed at import). Exits
non-zero if any backend fails; prints a combined summary line at the end.
"""

import os
import re
import subprocess
import sys
import time

BACKENDS = os.environ.get("KERAS_SEQUENCER_TEST_BACKENDS", "jax,tensorflow,torch").split(",")


def main(argv):
    totals = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    failed_backends = []
    for backend in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=backend)
        print(f"\n===== KERAS_BACKEND={backend} =====", flush=True)
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-ra", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        print(proc.stdout, flush=True)
        summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        for count, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", summary):
            totals[kind] += int(count)
        print(f"[{backend}] exit {proc.returncode} in {time.time() - start:.0f}s", flush=True)
        if proc.returncode != 0:
            failed_backends.append(backend)
    print(f"\nbackends failed: {failed_backends or 'none'}")
    print(
        f"{totals['passed']} passed, {totals['failed'] + totals['error']} failed, "
        f"{totals['skipped']} skipped"
    )
    return 1 if failed_backends else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
