"""scripts/bench_feed.py: a training step fed from JPEG files against the same step on a batch on
the device (run tiny here; on a GPU by scripts/gpu_check.sh feed)."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

pytest.importorskip("PIL")  # writes its JPEG folder with Pillow

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_feed.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_feed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_feed_times_both_steps_and_keeps_a_given_folder(backend, tmp_path, capsys):
    folder = tmp_path / "jpegs"
    _load().main(["--dir", str(folder), "--images", "16", "--batch-size", "8", "--model", "lenet5", "--size", "32",
                  "--steps", "2", "--warmup", "1", "--rounds", "1", "--workers", "0"])
    out = capsys.readouterr().out
    assert f"backend {backend}" in out and "16 JPEGs" in out
    rates = re.search(r"best: synthetic ([\d.]+) images/s, fed ([\d.]+) images/s, fed / synthetic ([\d.]+)", out)
    assert rates is not None, out
    synthetic, fed, ratio = (float(v) for v in rates.groups())
    assert synthetic > 0 and fed > 0 and ratio == pytest.approx(fed / synthetic, abs=0.006)
    assert len(list(folder.rglob("*.jpg"))) == 16  # --dir is kept for the next run


@pytest.mark.parametrize("argv, message", [(["--images", "4", "--batch-size", "8"], "at least --batch-size"),
                                           (["--steps", "0"], "--steps must be at least 1"),
                                           (["--workers", "-1"], "non-negative")])
def test_bench_feed_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        _load().main(argv)
    assert message in capsys.readouterr().err
