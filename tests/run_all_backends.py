"""Runs the test suite once per Keras backend: ``python tests/run_all_backends.py [pytest args]``.

Each backend runs in its own process (the backend is fixed at import). Up to
``KERAS_SEQUENCER_TEST_JOBS`` backends (default: 2, or 1 on a 1-core machine) run
at the same time, the slowest (JAX) first; much of each run is single-threaded
(compiling, Python), so two at once use two cores well. Each backend's output is
printed when it finishes. Exits non-zero if any backend fails; prints a combined
summary line at the end.
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

BACKENDS = os.environ.get("KERAS_SEQUENCER_TEST_BACKENDS", "jax,tensorflow,torch").split(",")
JOBS = int(os.environ.get("KERAS_SEQUENCER_TEST_JOBS", min(2, os.cpu_count() or 1)))


def run_backend(backend, argv):
    """Runs pytest for one backend; returns ``(backend, exit code, output, seconds)``."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    # Concurrent pytest runs get their own temporary folders.
    basetemp = os.path.join(tempfile.gettempdir(), f"keras-sequencer-tests-{backend}")
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-ra", f"--basetemp={basetemp}", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return backend, proc.returncode, proc.stdout, time.time() - start


def main(argv):
    totals = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    failed_backends = []
    start = time.time()
    with ThreadPoolExecutor(max_workers=max(JOBS, 1)) as pool:
        futures = [pool.submit(run_backend, backend, argv) for backend in BACKENDS]
        for future in futures:
            backend, code, output, seconds = future.result()
            print(f"\n===== KERAS_BACKEND={backend} =====", flush=True)
            print(output, flush=True)
            summary = output.strip().splitlines()[-1] if output.strip() else ""
            for count, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", summary):
                totals[kind] += int(count)
            print(f"[{backend}] exit {code} in {seconds:.0f}s", flush=True)
            if code != 0:
                failed_backends.append(backend)
    print(f"\nbackends failed: {failed_backends or 'none'}")
    print(
        f"{totals['passed']} passed, {totals['failed'] + totals['error']} failed, "
        f"{totals['skipped']} skipped in {time.time() - start:.0f}s "
        f"({len(BACKENDS)} backends, {JOBS} at a time)"
    )
    return 1 if failed_backends else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
