"""The ``mpirun`` fixture of the distributed tests: ``run(source, n=2, timeout=60, env=None) ->
(returncode, stdout, stderr)`` runs a script under ``mpiexec -n n`` with this checkout on PYTHONPATH,
kills the job's whole process group past the timeout (failing the test), and skips with the reason
where mpiexec or mpi4py is missing. Test modules import it: ``from mpi_runner import mpirun``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def mpiexec():
    """The launcher beside this Python (the mpich wheel's), else the one on PATH, else None."""
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


@pytest.fixture
def mpirun(tmp_path):
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip('mpi4py is not installed (pip install "xpnet[mpi]")')
    launcher = mpiexec()
    if launcher is None:
        pytest.skip("mpiexec is not on PATH (pip install mpich)")

    def run(source, n=2, timeout=60, env=None):
        script = tmp_path / "script.py"
        script.write_text(textwrap.dedent(source))
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                           XPNET_BACKEND="", XPNET_DEVICE="", OMP_NUM_THREADS="1", **(env or {}))
        process = subprocess.Popen([launcher, "-n", str(n), sys.executable, str(script)], cwd=tmp_path,
                                   env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"mpiexec -n {n} did not finish within {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
        return process.returncode, out, err

    return run
