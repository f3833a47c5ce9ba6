"""The import architecture (issue #37): import-linter's contracts in pyproject.toml hold.

merkit's data flows one way (formats → corpus → store → batch → model → output →
evaluation/inference → recording/live → serve/cli); the contracts say which package may import
which, imports inside functions included. A broken contract fails here with the offending imports
named (``merkit.a -> merkit.b (l.N)``): move the code to the layer that owns it, do not ignore the import.
"""

import os
import subprocess
import sys
from pathlib import Path

import merkit

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / ("lint-imports.exe" if os.name == "nt" else "lint-imports")
    assert lint.is_file(), f"import-linter is not installed beside {sys.executable}: pip install -e '.[dev]'"
    src = str(Path(merkit.__file__).resolve().parents[1])  # the merkit under test, not another checkout's
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(
        [str(lint), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300,
    )
    report = done.stdout[done.stdout.find("Broken contracts"):] if "Broken contracts" in done.stdout else done.stdout
    assert done.returncode == 0, f"import-linter: a contract is broken\n{report}\n{done.stderr}"
    assert "0 broken" in done.stdout, done.stdout
