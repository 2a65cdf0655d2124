"""``mpiexec -n 2 xpnet train`` (one model, data-parallel) and ``fit`` under a process group.

The equality test trains in float32 (``xpnet train`` has no dtype option): the two ranks sum their
half-batch gradients in another order than one process sums the whole batch, so the weights after
two steps agree to rounding only (rtol 1e-4, atol 1e-6), not bit for bit.
"""

from __future__ import annotations

import numpy as np
from mpi_runner import mpirun  # noqa: F401  -- the fixture

from xpnet.cli import main
from xpnet.train.checkpoint import read_checkpoint

TRAIN = ["train", "--model", "lenet5", "--dataset", "synthetic"]


def cli_script(argv):
    return f"""
import sys
from xpnet.cli import main
raise SystemExit(main({argv!r}))
"""


def test_two_ranks_train_one_model_and_rank0_alone_reports(mpirun, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    rc, stdout, stderr = mpirun(cli_script(TRAIN + ["--epochs", "1", "--batch-size", "32", "--limit-batches", "4",
                                                    "--out", str(out)]), timeout=60)
    assert rc == 0, stderr
    assert stdout.count("epoch 1/1") == 1 and "epoch 1/1" not in stderr
    assert stdout.count("xpnet train: lenet5") == 1 and "2 processes x 16" in stdout
    assert stdout.count("checkpoint: ") == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.safetensors", "curves.png", "history.csv"]
    assert len((out / "history.csv").read_text().splitlines()) == 2
    assert not (tmp_path / "run-2").exists()
    # the unwrapped model's checkpoint resumes in one process
    capsys.readouterr()
    assert main(TRAIN + ["--resume", str(out / "checkpoint.safetensors"), "--epochs", "2", "--batch-size", "32",
                         "--limit-batches", "4"]) == 0
    assert "epoch 2/2" in capsys.readouterr().out
    assert len((out / "history.csv").read_text().splitlines()) == 3


def test_two_ranks_equal_one_process_with_the_same_global_batch(mpirun, tmp_path):  # noqa: F811
    # one batch of 32 per epoch holds the whole training split, so both runs see the same images
    args = TRAIN + ["--synthetic-size", "32", "--batch-size", "32", "--epochs", "2", "--workers", "0"]
    rc, _, stderr = mpirun(cli_script(args + ["--out", str(tmp_path / "two")]), timeout=60)
    assert rc == 0, stderr
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    _, two = read_checkpoint(tmp_path / "two" / "checkpoint.safetensors")
    _, one = read_checkpoint(tmp_path / "one" / "checkpoint.safetensors")
    weights = [k for k in one if k.startswith("model.")]
    assert weights and set(weights) == {k for k in two if k.startswith("model.")}
    for key in weights:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_global_batch_not_divisible_by_ranks_is_a_usage_error(mpirun, tmp_path):  # noqa: F811
    rc, stdout, stderr = mpirun(cli_script(TRAIN + ["--batch-size", "33", "--out", str(tmp_path / "run")]),
                                timeout=30)
    assert rc == 2
    assert "--batch-size 33" in stderr and "divisible by 2" in stderr
    assert stderr.count("divisible by 2") == 1  # rank 0 alone says it
    assert not (tmp_path / "run").exists()


def test_runtime_error_on_rank0_ends_every_rank(mpirun, tmp_path):  # noqa: F811
    # rank 0 cannot create the run folder while rank 1 waits for its name: the job ends, no hang
    (tmp_path / "afile").write_text("")
    rc, _, stderr = mpirun(cli_script(TRAIN + ["--batch-size", "32", "--out", str(tmp_path / "afile" / "x")]),
                           timeout=30)
    assert rc == 2
    assert "rank 0 of 2" in stderr and "cannot be created" in stderr


def test_fit_under_a_process_group_and_a_failing_rank(mpirun, tmp_path):  # noqa: F811
    source = """
    import numpy as np
    import xpnet
    import xpnet.distributed as dist
    from xpnet import data, nn, optim
    from xpnet.train import fit
    from xpnet.train.callbacks import Callback

    dist.init_process_group(backend="mpi")
    r = dist.get_rank()
    gen = np.random.default_rng(0)
    train = data.TensorDataset(gen.normal(size=(64, 4)).astype("float32"), gen.integers(0, 3, 64))
    sampler = data.DistributedSampler(train, shuffle=True, seed=0, drop_last=True)
    loader = data.DataLoader(train, batch_size=8, sampler=sampler, drop_last=True)
    xpnet.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)

    class Fail(Callback):
        def on_epoch_end(self, trainer, epoch, record):
            if FAIL and r == 1 and epoch == 0:
                raise RuntimeError("injected failure on rank 1")

    history = fit(model, loader, loader, opt, nn.CrossEntropyLoss(), epochs=3, callbacks=[Fail()],
                  checkpoint_dir="ckpt-%d" % r, stream=__import__("sys").stdout, progress=False)
    assert len(history["epoch"]) == 3
    import os
    assert os.path.exists("ckpt-0/checkpoint.safetensors") and not os.path.exists("ckpt-1")
    mine = (history["train_loss"], history["train_acc"], history["val_loss"], history["val_acc"])
    both = [None, None]
    dist.all_gather_object(both, mine)
    assert both[0] == both[1], both  # the reduced metrics agree on every rank
    if r == 0:
        print("fit ok", flush=True)
    """
    rc, out, err = mpirun("FAIL = False\n" + source.replace("\n    ", "\n"), timeout=60)
    assert rc == 0, err
    assert "fit ok" in out
    assert out.count("epoch 3/3") == 1  # rank 0 alone prints
    rc, out, err = mpirun("FAIL = True\n" + source.replace("\n    ", "\n"), timeout=30)
    assert rc != 0
    assert "injected failure on rank 1" in err
