"""``xpnet bench``: the small-model set builds the same model, weights and batch in both frameworks."""

import json

import pytest

torch = pytest.importorskip("torch")

from xpnet import bench  # noqa: E402


def test_small_set_is_separate_from_the_default_sets():
    assert bench.SMALL == ["mlp_64_32_b8", "mlp_64_128_b64", "mlp_64_512_b256", "lenet5_b16", "convnet_16px_b64"]
    assert not set(bench.SMALL) & set(bench.CPU_WORKLOADS)
    assert not set(bench.SMALL) & set(bench.GPU_WORKLOADS)
    assert bench.CPU_WORKLOADS == ["mlp", "lenet5", "vgg_cifar", "vgg_cifar_bn", "alexnet_cifar"]
    assert [bench.WORKLOADS[n][2] for n in bench.SMALL] == [8, 64, 256, 16, 64]


@pytest.mark.parametrize("name", bench.SMALL)
def test_small_workload_same_loss_in_both_frameworks(name):
    runners = {fw: bench._Runner(fw, name, "cpu") for fw in ("xpnet", "torch")}
    xp_params = sum(p.numel() for p in runners["xpnet"].model.parameters())
    assert xp_params == sum(p.numel() for p in runners["torch"].model.parameters())
    for _ in range(2):  # the first step's loss, and the one after an SGD-momentum update
        losses = {fw: float(r.step().item()) for fw, r in runners.items()}
        assert losses["xpnet"] == pytest.approx(losses["torch"], rel=1e-4, abs=1e-5)


def test_lenet5_b16_is_the_model_zoo_lenet5():
    runner = bench._Runner("torch", "lenet5_b16", "cpu")
    kinds = [type(m).__name__ for m in runner.model]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten",
                     "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert tuple(runner.x.shape) == (16, 1, 28, 28)


def test_cli_small_writes_us_per_step(tmp_path, capsys):
    from xpnet.cli import main

    out = tmp_path / "bench.json"
    rc = main(["bench", "--small", "--rounds", "1", "--steps", "1", "--warmup", "0", "--no-memory",
               "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "us/step" in printed and "img/s" not in printed
    results = json.loads(out.read_text())["results"]
    assert [r["workload"] for r in results] == bench.SMALL
    for r in results:
        assert r["xpnet_us_per_step"] > 0 and r["torch_us_per_step"] > 0
        assert r["ratio"] == pytest.approx(r["torch_us_per_step"] / r["xpnet_us_per_step"])


def test_small_and_workloads_together_is_a_usage_error(tmp_path):
    assert bench.main(["--small", "--workloads", "mlp", "--json", str(tmp_path / "b.json")]) == 2
