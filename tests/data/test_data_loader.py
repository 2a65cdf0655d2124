"""DataLoader: order determinism, backends and devices, sizes, the background thread."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

import xpnet
from xpnet.data import DataLoader, Dataset, TensorDataset
from xpnet.data.transforms import Compose, RandomCrop, ToFloat


def to_np(x):
    return xpnet.to_numpy(x)


def loader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("xpnet-DataLoader") and t.is_alive()]


def wait_for_no_loader_threads(timeout=5.0):
    deadline = time.monotonic() + timeout
    while loader_threads() and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    return loader_threads()


def expected_order(seed, epoch, n):
    """The documented rule: SeedSequence([seed, epoch]) spawns (order, transform) streams."""
    order_seq, _ = np.random.SeedSequence([seed, epoch]).spawn(2)
    return np.random.Generator(np.random.PCG64(order_seq)).permutation(n)


def counting_dataset(n=10):
    x = np.arange(n * 2, dtype=np.uint8).reshape(n, 1, 1, 2)
    return TensorDataset(x, np.arange(n))


def labels_of(loader):
    return np.concatenate([to_np(yb) for _, yb in loader])


def test_seeded_order_is_the_documented_one_on_every_backend(backend):
    loader = DataLoader(counting_dataset(23), batch_size=5, shuffle=True, seed=7)
    for epoch in range(3):
        np.testing.assert_array_equal(labels_of(loader), expected_order(7, epoch, 23))
    assert loader.epoch == 3


def test_orders_differ_between_epochs_and_repeat_for_a_seed(backend):
    first = DataLoader(counting_dataset(50), batch_size=8, shuffle=True, seed=3)
    second = DataLoader(counting_dataset(50), batch_size=8, shuffle=True, seed=3)
    e0, e1 = labels_of(first), labels_of(first)
    assert not np.array_equal(e0, e1)
    assert sorted(e0.tolist()) == list(range(50))
    np.testing.assert_array_equal(labels_of(second), e0)
    np.testing.assert_array_equal(labels_of(second), e1)
    other_seed = DataLoader(counting_dataset(50), batch_size=8, shuffle=True, seed=4)
    assert not np.array_equal(labels_of(other_seed), e0)


def test_without_shuffle_order_is_sequential(backend):
    loader = DataLoader(counting_dataset(7), batch_size=3)
    np.testing.assert_array_equal(labels_of(loader), np.arange(7))


def test_equal_batches_across_numpy_and_strict():
    outputs = {}
    for name in ("numpy", "array_api_strict"):
        with xpnet.use_backend(name):
            loader = DataLoader(counting_dataset(12), batch_size=4, shuffle=True, seed=11,
                                transform=Compose([ToFloat(), RandomCrop((1, 1), padding=1)]))
            outputs[name] = [(to_np(xb), to_np(yb)) for xb, yb in loader]
    for (xa, ya), (xb, yb) in zip(outputs["numpy"], outputs["array_api_strict"]):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_batches_are_tensors_on_the_current_backend_and_device():
    strict = pytest.importorskip("array_api_strict")
    loader = DataLoader(counting_dataset(6), batch_size=4, shuffle=True, seed=0)
    with xpnet.use_backend("array_api_strict", "device1"):
        xb, yb = next(iter(loader))
    assert isinstance(xb, xpnet.Tensor) and isinstance(yb, xpnet.Tensor)
    assert xb.data.device == strict.Device("device1") and yb.data.device == strict.Device("device1")
    assert xpnet.float32 == xb.dtype and xpnet.int64 == yb.dtype
    assert xb.shape == (4, 1, 1, 2) and not xb.requires_grad
    explicit = DataLoader(counting_dataset(6), batch_size=4, backend="array_api_strict", device="device2")
    xb, _ = next(iter(explicit))
    assert xb.data.device == strict.Device("device2")
    with xpnet.use_backend("numpy"):
        xb, _ = next(iter(explicit))  # an explicit backend wins over the context
    assert xb.data.device == strict.Device("device2")


def test_dtypes_follow_the_default_float(backend):
    data = TensorDataset(np.ones((4, 2), np.uint8), np.arange(4, dtype=np.int32), np.ones(4, np.float64))
    xb, yb, wb = next(iter(DataLoader(data, batch_size=4)))
    assert xpnet.float32 == xb.dtype and xpnet.int64 == yb.dtype and xpnet.float32 == wb.dtype
    xpnet.set_default_dtype(xpnet.float64)
    try:
        xb, yb, wb = next(iter(DataLoader(data, batch_size=4)))
    finally:
        xpnet.set_default_dtype(xpnet.float32)
    assert xpnet.float64 == xb.dtype and xpnet.float64 == wb.dtype and xpnet.int64 == yb.dtype
    np.testing.assert_array_equal(to_np(xb), np.ones((4, 2)))


@pytest.mark.parametrize("drop_last,expected_sizes", [(False, [3, 3, 3, 1]), (True, [3, 3, 3])])
def test_len_and_drop_last(backend, drop_last, expected_sizes):
    loader = DataLoader(counting_dataset(10), batch_size=3, shuffle=True, seed=1, drop_last=drop_last)
    assert len(loader) == len(expected_sizes)
    sizes = [xb.shape[0] for xb, _ in loader]
    assert sizes == expected_sizes
    assert len(DataLoader(counting_dataset(9), batch_size=3, drop_last=drop_last)) == 3


def test_array_datasets_are_fetched_one_call_per_batch(backend):
    class CountingDataset(TensorDataset):
        calls = 0

        def __getitem__(self, index):
            raise AssertionError("per-item access: the batch should be assembled by get_batch")

        def get_batch(self, indices):
            CountingDataset.calls += 1
            return super().get_batch(indices)

    data = CountingDataset(np.zeros((25, 3), np.float32), np.arange(25))
    loader = DataLoader(data, batch_size=10, shuffle=True, seed=0)
    labels = labels_of(loader)
    assert CountingDataset.calls == 3 and sorted(labels.tolist()) == list(range(25))


def test_plain_indexable_dataset_is_stacked(backend):
    class Squares:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((2,), i * i, dtype=np.float64), i

    xb, yb = next(iter(DataLoader(Squares(), batch_size=5)))
    np.testing.assert_array_equal(to_np(xb)[:, 0], [0, 1, 4, 9, 16])
    assert xpnet.int64 == yb.dtype and to_np(yb).tolist() == [0, 1, 2, 3, 4]


def test_tensor_dataset_accepts_tensors_and_backend_arrays(backend):
    x = xpnet.tensor(np.arange(6, dtype=np.float32).reshape(3, 2))
    y = backend.asarray([0, 1, 2], dtype="int64")
    data = TensorDataset(x, y)
    assert all(isinstance(a, np.ndarray) for a in data.arrays)
    np.testing.assert_array_equal(data[1][0], [2.0, 3.0])
    with pytest.raises(ValueError, match=r"same length .* lengths \[3, 4\]"):
        TensorDataset(np.zeros(3), np.zeros(4))


def test_state_dict_replays_the_same_epochs(backend):
    original = DataLoader(counting_dataset(30), batch_size=7, shuffle=True, seed=5)
    labels_of(original)
    labels_of(original)
    state = original.state_dict()
    assert state == {"epoch": 2, "seed": 5}
    later = [labels_of(original) for _ in range(2)]

    resumed = DataLoader(counting_dataset(30), batch_size=7, shuffle=True, seed=999)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(labels_of(resumed), later[0])
    np.testing.assert_array_equal(labels_of(resumed), later[1])
    with pytest.raises(KeyError, match="missing keys"):
        resumed.load_state_dict({"epoch": 1})


def test_seed_none_follows_manual_seed(backend):
    xpnet.manual_seed(123)
    a = DataLoader(counting_dataset(40), batch_size=40, shuffle=True)
    xpnet.manual_seed(123)
    b = DataLoader(counting_dataset(40), batch_size=40, shuffle=True)
    assert a.seed == b.seed
    np.testing.assert_array_equal(labels_of(a), labels_of(b))
    # a loader with nothing random leaves the backend's stream where it was
    xpnet.manual_seed(9)
    untouched = xpnet.to_numpy(backend.rng.uniform((3,)))
    xpnet.manual_seed(9)
    DataLoader(counting_dataset(5), batch_size=2)
    np.testing.assert_array_equal(xpnet.to_numpy(backend.rng.uniform((3,))), untouched)


def test_transform_is_repeatable_and_does_not_change_the_order(backend):
    images = np.arange(16 * 2 * 4 * 4, dtype=np.uint8).reshape(16, 2, 4, 4)
    data = TensorDataset(images, np.arange(16))
    crop = Compose([ToFloat(scale=1.0), RandomCrop(4, padding=2)])
    one = DataLoader(data, batch_size=5, shuffle=True, seed=2, transform=crop)
    two = DataLoader(data, batch_size=5, shuffle=True, seed=2, transform=crop)
    plain = DataLoader(data, batch_size=5, shuffle=True, seed=2)
    batches_one = [(to_np(x), to_np(y)) for x, y in one]
    batches_two = [(to_np(x), to_np(y)) for x, y in two]
    for (x1, y1), (x2, y2) in zip(batches_one, batches_two):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches_one]), labels_of(plain))
    cropped = np.concatenate([x for x, _ in batches_one])
    assert not np.array_equal(cropped, images[np.concatenate([y for _, y in batches_one])].astype(np.float32))


def test_prefetch_zero_gives_the_same_batches(backend):
    data = counting_dataset(17)
    threaded = [(to_np(x), to_np(y)) for x, y in DataLoader(data, batch_size=4, shuffle=True, seed=9)]
    inline = [(to_np(x), to_np(y)) for x, y in DataLoader(data, batch_size=4, shuffle=True, seed=9, prefetch=0)]
    assert len(threaded) == len(inline) == 5
    for (xa, ya), (xb, yb) in zip(threaded, inline):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


class FailingDataset(Dataset):
    def __init__(self, fail_at_batch):
        self.fail_at_batch = fail_at_batch
        self.batches = 0

    def __len__(self):
        return 20

    def __getitem__(self, index):
        return np.zeros(2, np.float32), index

    def get_batch(self, indices):
        if self.batches == self.fail_at_batch:
            raise OSError(f"disk vanished at batch {self.batches}")
        self.batches += 1
        return np.zeros((len(indices), 2), np.float32), np.asarray(indices)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_errors_in_batch_preparation_reach_the_consumer(backend, prefetch):
    loader = DataLoader(FailingDataset(fail_at_batch=2), batch_size=4, prefetch=prefetch)
    seen = []
    with pytest.raises(OSError, match="disk vanished at batch 2"):
        for _, yb in loader:
            seen.append(to_np(yb).tolist())
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert wait_for_no_loader_threads() == []


def test_breaking_out_of_the_loop_stops_the_thread(backend):
    loader = DataLoader(counting_dataset(200), batch_size=2, shuffle=True, seed=0, prefetch=2)

    def first_batches(count):
        got = []
        for _, yb in loader:
            got.append(to_np(yb))
            if len(got) == count:
                break
        return got

    assert len(first_batches(3)) == 3
    assert wait_for_no_loader_threads() == []
    # an iterator held open keeps its thread; close() stops it, and dropping it does too
    iterator = iter(loader)
    next(iterator)
    assert len(loader_threads()) == 1
    iterator.close()
    assert loader_threads() == []
    iterator = iter(loader)
    next(iterator)
    del iterator
    assert wait_for_no_loader_threads() == []
    with iter(loader) as iterator:
        next(iterator)
    assert loader_threads() == []


def test_iterator_runs_to_the_end_and_stops(backend):
    loader = DataLoader(counting_dataset(9), batch_size=4)
    iterator = iter(loader)
    assert len(iterator) == 3
    batches = list(iterator)
    assert len(batches) == 3 and len(iterator) == 0
    with pytest.raises(StopIteration):
        next(iterator)
    assert wait_for_no_loader_threads() == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        DataLoader(counting_dataset(3), batch_size=0)
    with pytest.raises(ValueError, match="prefetch must be a non-negative integer"):
        DataLoader(counting_dataset(3), prefetch=-1)
    with pytest.raises(TypeError, match="__len__ and __getitem__"):
        DataLoader(42)


class SlowDataset(Dataset):
    """Each batch takes ``delay`` seconds to prepare (sleeping releases the GIL, like I/O)."""

    def __init__(self, n, delay):
        self.n, self.delay = n, delay

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return np.zeros(1, np.float32), index

    def get_batch(self, indices):
        time.sleep(self.delay)
        return np.zeros((len(indices), 1), np.float32), np.asarray(indices)


def test_preparation_overlaps_with_compute():
    delay, batches = 0.04, 10

    def run(prefetch):
        loader = DataLoader(SlowDataset(batches, delay), batch_size=1, prefetch=prefetch, backend="numpy")
        start = time.perf_counter()
        for _ in loader:
            time.sleep(delay)  # the consumer's "compute"
        return time.perf_counter() - start

    serial, overlapped = run(0), run(2)
    assert serial > 2 * delay * batches * 0.95
    assert overlapped < 0.8 * serial, (serial, overlapped)


def test_producer_sees_the_consumers_backend_context():
    seen = []

    class BackendProbe(SlowDataset):
        def get_batch(self, indices):
            seen.append(xpnet.get_backend().name)
            return super().get_batch(indices)

    with xpnet.use_backend("array_api_strict"):
        list(DataLoader(BackendProbe(3, 0.0), batch_size=1))
    assert seen == ["array_api_strict"] * 3
