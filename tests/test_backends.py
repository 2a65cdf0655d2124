import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import xpnet
from xpnet.backends import check_same_device, describe_device

from conftest import to_np


def test_default_backend_is_numpy_float32():
    b = xpnet.get_backend()
    assert b.name == "numpy"
    assert str(b) == "numpy:cpu"
    assert b.default_dtype == xpnet.float32


def test_available_backends_reasons():
    avail = xpnet.available_backends()
    assert set(avail) == {"numpy", "cupy", "array_api_strict", "torch"}
    assert avail["numpy"] is None and avail["array_api_strict"] is None
    if avail["cupy"] is not None:
        assert "not installed" in avail["cupy"] or "no CUDA device" in avail["cupy"]


def test_unavailable_backend_raises_with_reason():
    if xpnet.available_backends()["cupy"] is None:
        pytest.skip("cupy is usable here")
    with pytest.raises(xpnet.BackendUnavailableError, match="cupy"):
        xpnet.set_backend("cupy")
    assert xpnet.get_backend().name == "numpy"  # nothing changed, nothing fell back


def test_unknown_backend_and_device():
    with pytest.raises(ValueError, match="unknown backend"):
        xpnet.get_backend("jax")
    with pytest.raises(ValueError, match="unknown device"):
        xpnet.get_backend("array_api_strict", "device9")


def test_nested_use_backend_restores():
    assert xpnet.get_backend().name == "numpy"
    with xpnet.use_backend("array_api_strict") as outer:
        assert xpnet.get_backend() is outer
        with xpnet.use_backend("array_api_strict", "device1") as inner:
            assert str(xpnet.get_backend()) == "array_api_strict:device1"
            assert inner.device_label == "device1"
        assert str(xpnet.get_backend()) == "array_api_strict:CPU_DEVICE"
    assert xpnet.get_backend().name == "numpy"


def test_set_backend_process_wide_and_use_backend_thread_local():
    seen = {}

    def worker():
        seen["thread"] = str(xpnet.get_backend())

    try:
        xpnet.set_backend("array_api_strict", "device2")
        assert str(xpnet.get_backend()) == "array_api_strict:device2"
        with xpnet.use_backend("numpy"):
            t = threading.Thread(target=worker)
            t.start()
            t.join()
            assert xpnet.get_backend().name == "numpy"
        # the other thread saw the process-wide choice, not this thread's context
        assert seen["thread"] == "array_api_strict:device2"
    finally:
        xpnet.set_backend("numpy")


def test_use_backend_is_isolated_between_threads():
    barrier = threading.Barrier(2)
    results = {}

    def worker(name, device):
        with xpnet.use_backend(name, device):
            barrier.wait()
            results[device or name] = str(xpnet.get_backend())
            barrier.wait()

    threads = [threading.Thread(target=worker, args=("array_api_strict", "device1")),
               threading.Thread(target=worker, args=("numpy", None))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"device1": "array_api_strict:device1", "numpy": "numpy:cpu"}


@pytest.mark.parametrize("env,expected", [
    ({"XPNET_BACKEND": "array_api_strict"}, "array_api_strict:CPU_DEVICE"),
    ({"XPNET_BACKEND": "array_api_strict", "XPNET_DEVICE": "device1"}, "array_api_strict:device1"),
    ({"XPNET_BACKEND": "numpy"}, "numpy:cpu"),
    ({"XPNET_BACKEND": "auto"}, None),
])
def test_environment_selection(env, expected):
    full = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", "import xpnet; print(xpnet.get_backend())"],
                         capture_output=True, text=True, env=full, check=True).stdout.strip()
    if expected is None:
        expected = "cupy:0" if xpnet.available_backends()["cupy"] is None else "numpy:cpu"
    assert out == expected


def test_environment_unavailable_backend_is_short_error():
    if xpnet.available_backends()["cupy"] is None:
        pytest.skip("cupy is usable here")
    proc = subprocess.run([sys.executable, "-c", "import xpnet"], capture_output=True, text=True,
                          env={**os.environ, "XPNET_BACKEND": "cupy"})
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) <= 2, proc.stderr
    assert "BackendUnavailableError" in proc.stderr and "cupy" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_transfer_round_trip_keeps_values_dtype_device(rng):
    host = rng.standard_normal((3, 4)).astype(np.float64)
    strict = xpnet.to_device(host, "array_api_strict", "device1")
    assert describe_device(strict) == "array_api_strict:device1"
    assert xpnet.device_of(strict) == xpnet.get_backend("array_api_strict", "device1").device
    moved = xpnet.to_device(strict, device="device2")
    assert describe_device(moved) == "array_api_strict:device2"
    back = xpnet.to_device(moved, "numpy")
    assert isinstance(back, np.ndarray) and back.dtype == np.float64
    np.testing.assert_array_equal(back, host)
    ints = xpnet.to_device(np.arange(5), "array_api_strict")
    assert xpnet.to_numpy(ints).dtype == np.int64


def test_transfer_walks_containers(rng):
    host = rng.standard_normal(3).astype(np.float32)
    tree = {"a": [host, (host, 5)], "b": "text"}
    moved = xpnet.to_device(tree, "array_api_strict", "device1")
    assert describe_device(moved["a"][0]) == "array_api_strict:device1"
    assert isinstance(moved["a"][1], tuple) and moved["a"][1][1] == 5 and moved["b"] == "text"
    np.testing.assert_array_equal(to_np(moved["a"][1][0]), host)


def test_transfer_to_current_backend():
    with xpnet.use_backend("array_api_strict", "device1"):
        moved = xpnet.to_device(np.ones(2))
    assert describe_device(moved) == "array_api_strict:device1"


def test_transfer_torch_when_installed(rng):
    torch = pytest.importorskip("torch")
    host = rng.standard_normal((2, 3))
    t = xpnet.to_device(host, "torch")
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    host[0, 0] = 99.0  # the move copies: the tensor does not alias the source
    assert t[0, 0].item() != 99.0
    back = xpnet.to_device(t, "numpy")
    np.testing.assert_array_equal(back[1], host[1])


def test_check_same_device_errors_name_op_and_devices():
    a = xpnet.get_backend("array_api_strict").asarray([1.0])
    b = xpnet.get_backend("array_api_strict", "device1").asarray([1.0])
    check_same_device(a, a, 3.0, None, op="add")
    with pytest.raises(xpnet.DeviceMismatchError) as err:
        check_same_device(a, b, op="add")
    msg = str(err.value)
    assert "add" in msg and "CPU_DEVICE" in msg and "device1" in msg
    with pytest.raises(xpnet.DeviceMismatchError, match="numpy:cpu"):
        check_same_device(np.ones(1), b, op="matmul")


def test_manual_seed_repeats_and_backends_agree():
    s = xpnet.get_backend("array_api_strict")
    n = xpnet.get_backend("numpy")
    xpnet.manual_seed(7)
    first = to_np(s.rng.normal((5,)))
    again_numpy = to_np(n.rng.normal((5,)))
    xpnet.manual_seed(7)
    np.testing.assert_array_equal(first, to_np(s.rng.normal((5,))))
    np.testing.assert_array_equal(first, again_numpy)
    assert first.dtype == np.float32


def test_dtype_names_compare_across_backends():
    import array_api_strict

    assert xpnet.float32 == np.float32
    assert xpnet.float32 == array_api_strict.float32
    assert xpnet.int64 != array_api_strict.float32
    assert xpnet.get_backend("array_api_strict").dtype("float64") == array_api_strict.float64


def test_info_command_lists_backends():
    out = subprocess.run([sys.executable, "-m", "xpnet", "info"], capture_output=True, text=True, check=True).stdout
    for word in ("xpnet:", "Python:", "NumPy:", "array-api-compat:", "CuPy:", "BLAS", "numpy: available",
                 "array_api_strict: available", "selected: numpy:cpu"):
        assert word in out, out


@pytest.mark.gpu
def test_cupy_round_trip_and_mismatch():
    cupy = pytest.importorskip("cupy")
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    dev = xpnet.to_device(host, "cupy", 0)
    assert isinstance(dev, cupy.ndarray) and dev.device.id == 0
    np.testing.assert_array_equal(xpnet.to_numpy(dev), host)
    with pytest.raises(xpnet.DeviceMismatchError, match="cupy:0"):
        check_same_device(host, dev, op="add")
