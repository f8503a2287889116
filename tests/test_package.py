"""The package surface: what `import vaeguard` gives, and what the CLI imports to start."""

import subprocess
import sys

import numpy as np

import vaeguard


def test_submodules_named_in_the_readme_resolve_after_import_vaeguard():
    assert callable(vaeguard.metrics.evaluate)
    assert callable(vaeguard.report.write_report)
    assert callable(vaeguard.bulk.score_file)
    assert vaeguard.VAEAnomalyDetector is vaeguard.estimator.VAEAnomalyDetector


def _modules_after(code: str) -> set[str]:
    listing = f"{code}\nimport sys\nprint(' '.join(sys.modules), file=sys.stderr)"
    return set(subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True, check=True).stderr.split())


def test_help_and_info_start_without_torch(tmp_path):
    X = np.random.default_rng(0).normal(size=(60, 3))
    path = vaeguard.VAEAnomalyDetector(latent_dim=2, hidden_dims=(4,), epochs=1, random_state=0, device="cpu").fit(X).save(tmp_path / "m.vgm")
    run = "from vaeguard.cli import app\ntry:\n    app({args!r})\nexcept SystemExit:\n    pass"
    for args in (["--help"], ["info", str(path)]):
        loaded = _modules_after(run.format(args=args))
        assert "vaeguard.cli" in loaded
        assert "torch" not in loaded and "pandas" not in loaded and "sklearn" not in loaded, args


def test_a_bad_memory_budget_is_one_error_line_where_it_is_used_and_help_still_works(tmp_path):
    import os

    env = dict(os.environ, VAEGUARD_MEMORY_BUDGET_GB="lots")
    cli = [sys.executable, "-m", "vaeguard"]
    assert subprocess.run([*cli, "--help"], env=env, capture_output=True, text=True).returncode == 0
    (tmp_path / "d.csv").write_text("a,b\n" + "".join(f"{i % 7},{i % 5}\n" for i in range(30)))
    done = subprocess.run([*cli, "-q", "train", str(tmp_path / "d.csv"), "-o", str(tmp_path / "m.vgm")], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == "error: VAEGUARD_MEMORY_BUDGET_GB must be a number of gigabytes, got 'lots'", done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m.vgm").exists()
