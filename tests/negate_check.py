"""Run the default test suite with every anomaly score negated, and check that it fails.

A test that passes whatever the sign of the scores cannot tell a detector from its opposite.
This script puts a `sitecustomize` module first on PYTHONPATH, so every Python process the
suite starts (pytest, the CLI in a subprocess, the example scripts) loads it; it wraps the one
scoring front-end, `vaeguard.scorer.Scorer.score_and_explain`, to return minus the scores.
Every score then comes out negated: the estimator's, the calibration scores behind the
threshold, bulk and engine output alike. The script lists the tests that caught it and checks
that each test in MUST_CATCH (tests that once passed with negated scores) is among them.

Run from the repository root (as long as the suite, a few minutes on 2 cores):
    python tests/negate_check.py [extra pytest arguments, e.g. tests/test_examples.py]
Exit status 0 when the suite fails as it should, 1 otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUST_CATCH = (
    "tests/test_cli.py::test_digits_job_prints_auroc_per_heldout_digit",
    "tests/test_cli.py::test_mnist_job_on_a_small_local_copy",
    "tests/test_estimator.py::test_score_conventions_are_consistent",
    "tests/test_examples.py::test_estimator_basics",
    "tests/test_examples.py::test_heldout_digits_writes_the_report_offline",
    "tests/test_examples.py::test_pipeline_search",
)
NEGATE = '''
"""Written by tests/negate_check.py: negates vaeguard's scoring front-end in this process."""
import importlib.abc
import importlib.util
import sys


class _NegateScores(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "vaeguard.scorer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            score = module.Scorer.score_and_explain

            def negated(self, X, *, explain=True):
                scores, features = score(self, X, explain=explain)
                return -scores, features

            module.Scorer.score_and_explain = negated

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _NegateScores())
'''


def outcomes(junit: Path) -> dict[str, bool]:
    """node id (tests/file.py::name[param]) -> whether the test failed or erred."""
    result = {}
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        result[f"{module}.py::{case.get('name')}"] = case.find("failure") is not None or case.find("error") is not None
    return result


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(NEGATE)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (tmp, str(ROOT), os.environ.get("PYTHONPATH")) if p))
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *argv]
        print("with negated scores:", " ".join(command), flush=True)
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if not junit.exists():
            print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
            return 1
        ran = outcomes(junit)
    caught = [test for test, failed in ran.items() if failed]
    print(f"{len(caught)} of {len(ran)} tests caught the negated scores:")
    for test in caught:
        print(f"  {test}")
    # tests that once passed whatever the sign: each must now fail (when it ran)
    missed = [test for test, failed in ran.items() if not failed and test.split("[")[0] in MUST_CATCH]
    if run.returncode == 0 or missed:
        print("FAILED: the suite passes with negated scores" if run.returncode == 0 else "FAILED: these tests still pass:")
        for test in missed:
            print(f"  {test}")
        return 1
    print("ok: the suite fails when the scores are negated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
