"""Runs the test suite once per installed Keras backend: ``python tests/run_all_backends.py [pytest args]``.

The backends are jax, tensorflow and torch (or ``KERAS_SEQUENCER_TEST_BACKENDS``,
comma-separated); those not installed are skipped, each named on one line with
the reason, so any subset works. It exits non-zero if none is installed, if
pytest is missing (``pip install -e ".[dev]"``) or if any backend's run fails.

Each backend runs in its own process (the backend is fixed at import). Up to
``KERAS_SEQUENCER_TEST_JOBS`` backends (default: 2, or 1 on a 1-core machine) run
at the same time, the slowest (JAX) first; much of each run is single-threaded
(compiling, Python), so two at once use two cores well. Each backend's output is
streamed line by line as it comes, each line prefixed with ``[backend]``; each
backend's summary line follows when it finishes. Exits non-zero if any backend fails; prints a combined
summary line at the end.
"""

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

BACKENDS = [b for b in os.environ.get("KERAS_SEQUENCER_TEST_BACKENDS", "jax,tensorflow,torch").split(",") if b]
# The package each backend needs (what ``pip install -e ".[<backend>]"`` installs).
BACKEND_PACKAGES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}
PRINT_LOCK = threading.Lock()
JOBS = int(os.environ.get("KERAS_SEQUENCER_TEST_JOBS", min(2, os.cpu_count() or 1)))


def installed(module):
    """Whether ``module`` can be imported by this interpreter (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def plan(backends, is_installed=installed):
    """Splits ``backends`` into ``(to run, {skipped backend: reason})``."""
    run, skipped = [], {}
    for backend in backends:
        package = BACKEND_PACKAGES.get(backend)
        if package is None:
            skipped[backend] = f"not a backend this suite runs (one of {', '.join(BACKEND_PACKAGES)})"
        elif not is_installed(package):
            skipped[backend] = f'{package} is not installed (pip install -e ".[{backend}]")'
        else:
            run.append(backend)
    return run, skipped


def pytest_summary(output):
    """pytest's closing line (``==== 3 passed, 1 skipped in 2.0s ====``): the last
    such line, since a backend may still print at interpreter exit; "" if none."""
    pattern = re.compile(r"^(=+ )?(\d+ \w+|no tests ran).* in [0-9.]+s")
    lines = [line for line in output.splitlines() if pattern.match(line)]
    return lines[-1] if lines else ""


def seconds_per_file(junit_xml):
    """``{test file: seconds}`` summed over the ``<testcase>`` entries of a JUnit XML
    report (the file is the module part of ``classname``: ``tests.test_x.TestY`` ->
    ``tests/test_x.py``); ``{}`` if the report is missing or unreadable."""
    import xml.etree.ElementTree as ElementTree

    try:
        cases = ElementTree.parse(junit_xml).getroot().iter("testcase")
    except (OSError, ElementTree.ParseError):
        return {}
    totals = {}
    for case in cases:
        parts = case.get("classname", "").split(".")
        module = next((i for i, part in enumerate(parts) if part.startswith("test_")), len(parts) - 1)
        name = "/".join(parts[: module + 1]) + ".py"
        totals[name] = totals.get(name, 0.0) + float(case.get("time") or 0.0)
    return totals


def time_table(per_backend, rows=12):
    """The ``rows`` test files that took longest over all backends, seconds per backend."""
    backends = list(per_backend)
    files = {f for times in per_backend.values() for f in times}
    total = lambda f: sum(times.get(f, 0.0) for times in per_backend.values())  # noqa: E731
    lines = [f"{'seconds per test file':40s}" + "".join(f"{b:>12s}" for b in backends) + f"{'all':>9s}"]
    for f in sorted(files, key=total, reverse=True)[:rows]:
        cells = "".join(f"{per_backend[b].get(f, 0.0):12.0f}" for b in backends)
        lines.append(f"{f:40s}{cells}{total(f):9.0f}")
    return "\n".join(lines)


def junit_path(backend):
    return os.path.join(tempfile.gettempdir(), f"keras-sequencer-tests-{backend}.xml")


def run_backend(backend, argv):
    """Runs pytest for one backend, streaming its output (:func:`emit`); returns
    ``(backend, exit code, output, seconds)``."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    # Concurrent pytest runs get their own temporary folders; the 25 slowest tests
    # are listed and every test's time goes to a JUnit XML file (junit_path), to
    # keep the suite's time in view.
    basetemp = os.path.join(tempfile.gettempdir(), f"keras-sequencer-tests-{backend}")
    if os.path.exists(junit_path(backend)):
        os.remove(junit_path(backend))  # a run that dies early must not report an older run's times
    start = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-ra",
            "--durations=25",
            f"--basetemp={basetemp}",
            f"--junitxml={junit_path(backend)}",
            *argv,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    lines = []
    for line in proc.stdout:  # streamed as it comes, each line prefixed with its backend
        lines.append(line)
        emit(f"[{backend}] {line.rstrip()}")
    code = proc.wait()
    return backend, code, "".join(lines), time.time() - start


def emit(line):
    """Prints one line at once (the backends' threads print whole lines)."""
    with PRINT_LOCK:
        print(line, flush=True)


def main(argv):
    if not installed("pytest"):
        print('The tests need pytest: pip install -e ".[dev]"', flush=True)
        return 1
    backends, skipped = plan(BACKENDS)
    for backend, reason in skipped.items():
        print(f"skipping KERAS_BACKEND={backend}: {reason}", flush=True)
    if not backends:
        print('No Keras backend installed: pip install -e ".[jax]" (or [tensorflow], [torch])', flush=True)
        return 1
    totals = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    failed_backends = []
    start = time.time()
    with ThreadPoolExecutor(max_workers=max(JOBS, 1)) as pool:
        futures = [pool.submit(run_backend, backend, argv) for backend in backends]
        for future in futures:
            backend, code, output, seconds = future.result()
            summary = pytest_summary(output)
            emit(f"===== KERAS_BACKEND={backend} ===== {summary or 'no pytest summary'}")
            for count, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", summary):
                totals[kind] += int(count)
            emit(f"[{backend}] exit {code} in {seconds:.0f}s")
            if code != 0:
                failed_backends.append(backend)
    per_backend = {b: seconds_per_file(junit_path(b)) for b in backends}
    if any(per_backend.values()):
        print("\n" + time_table(per_backend), flush=True)
    print(f"\nbackends failed: {failed_backends or 'none'}")
    if skipped:
        print(f"backends skipped: {', '.join(skipped)}")
    print(
        f"{totals['passed']} passed, {totals['failed'] + totals['error']} failed, "
        f"{totals['skipped']} skipped in {time.time() - start:.0f}s "
        f"({len(backends)} backends: {', '.join(backends)}; {JOBS} at a time)"
    )
    return 1 if failed_backends else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
