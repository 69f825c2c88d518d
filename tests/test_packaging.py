"""Claims about packaging: a regular (non-editable) install puts passes/, lowering/ and kernels/ under
``fp4compile.`` (no generic top-level ``passes`` or ``kernels``), they import from outside the source
tree, and the ``quartet`` backend entry point is declared. (The editable install is what every other
test runs on.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(ROOT)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return target


def test_install_maps_subpackages(installed):
    assert (installed / "fp4compile" / "passes" / "pipeline.py").exists()
    assert (installed / "fp4compile" / "lowering" / "select.py").exists()
    assert (installed / "fp4compile" / "kernels" / "__init__.py").exists()
    assert not (installed / "passes").exists() and not (installed / "kernels").exists()
    entry_points = next(installed.glob("fp4compile-*.dist-info")) / "entry_points.txt"
    assert "[torch_dynamo_backends]" in entry_points.read_text() and "quartet = fp4compile.backend:quartet_backend" in entry_points.read_text()


def test_installed_copy_imports_outside_the_tree(installed, tmp_path):
    code = "import fp4compile, fp4compile.passes, fp4compile.lowering, fp4compile.kernels; print(fp4compile.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(installed), "PATH": ""},
                         check=True, capture_output=True, text=True)
    assert out.stdout.strip().startswith(str(installed))
