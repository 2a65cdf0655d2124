"""PyTorch's CIFAR-10 tutorial and the training loop of its ImageNet example, changed only in their
imports and data sources (tests/compat/cifar_tutorial.py, imagenet_loop.py), run for a few steps on
every CPU backend; the ImageNet checkpoint dict resumes as the example resumes it."""

from __future__ import annotations

import os
import re

import cifar_tutorial  # tests/compat is on sys.path under pytest
import imagenet_loop
import xpnet


def test_cifar_tutorial_runs(backend, tmp_path, capsys):
    correct, total, correct_pred, total_pred = cifar_tutorial.run(str(tmp_path / "cifar_net.pth"))
    out = capsys.readouterr().out
    assert "Finished Training" in out and "GroundTruth: " in out and "Predicted: " in out
    assert total == 40 and 0 <= correct <= total
    assert sum(total_pred.values()) == 40 and sum(correct_pred.values()) == correct
    assert "Accuracy for class: plane" in out


def test_imagenet_loop_runs_and_its_checkpoint_resumes(backend, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model, best = imagenet_loop.run(imagenet_loop.Args())
    out = capsys.readouterr().out
    assert "Epoch: [0][1/4]" in out and "Acc@1" in out
    assert re.search(r"^ \*\s+Acc@1 \d+\.\d{3} Acc@5 \d+\.\d{3}$", out, re.M), out
    assert 0 <= float(best) <= 100
    assert os.path.exists("checkpoint.pth.tar") and os.path.exists("model_best.pth.tar")

    # the example's --resume branch
    checkpoint = xpnet.load("checkpoint.pth.tar", map_location="cpu")
    assert checkpoint["epoch"] == 2 and checkpoint["arch"] == "vgg_small"
    again = xpnet.models.create("vgg_small", num_classes=10, in_channels=3, input_size=32)
    again.load_state_dict(checkpoint["state_dict"])
    optimizer = xpnet.optim.SGD(again.parameters(), 0.01, momentum=0.9, weight_decay=1e-4)
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler = xpnet.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    scheduler.load_state_dict(checkpoint["scheduler"])
    for name, value in model.state_dict().items():
        assert xpnet.to_numpy(again.state_dict()[name]).tolist() == xpnet.to_numpy(value).tolist()
    assert float(checkpoint["best_acc1"]) == float(best)
