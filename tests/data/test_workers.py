"""DataLoader worker processes: same batches for every num_workers, failures, clean shutdown, streams."""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import xpnet
from xpnet.data import DataLoader, DataLoaderWorkerError, TensorDataset, get_worker_info, transforms

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def never_hang():
    """A hung worker protocol must fail the run, not stall it: dump the stacks and exit after 60 s."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def to_np(x):
    return xpnet.to_numpy(x)


def batches_of(loader):
    return [tuple(to_np(f) for f in batch) for batch in loader]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert len(a) == len(b)
        for fa, fb in zip(a, b):
            assert fa.dtype == fb.dtype and fa.shape == fb.shape
            np.testing.assert_array_equal(fa, fb)


def no_children(timeout=5.0):
    deadline = time.monotonic() + timeout
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.02)
    return multiprocessing.active_children() == []


# module level, so that the spawn start method can pickle them
class Images:
    """uint8 (1, 6, 6) images whose pixels encode the index; label = index."""

    def __init__(self, n=29, fail_at=None, delay=0.0):
        self.n, self.fail_at, self.delay = n, fail_at, delay

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if self.delay:
            time.sleep(self.delay)
        if index == self.fail_at:
            raise ValueError(f"cannot decode /data/images/{index:05d}.jpg (sample {index} is broken)")
        image = (np.arange(36, dtype=np.uint8).reshape(1, 6, 6) + index) % 251
        return image.astype(np.uint8), index


class AugmentedImages(Images):
    """Per-sample randomness through ``sample(index, rng)`` (the contract with the readers)."""

    def sample(self, index, rng):
        image, label = self[index]
        noise = rng.integers(0, 5, size=image.shape, dtype=np.uint8)
        return image + noise, label


class WhoAmI(Images):
    """Field 2: the worker id (-1 in the main process); field 3: the process id; field 4: a draw
    from NumPy's global generator."""

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        info = get_worker_info()
        return image, label, -1 if info is None else info.id, os.getpid(), np.random.randint(0, 2**30)


class Numbers:
    """A stream dataset: part p of P yields the samples p, p + P, ..."""

    def __init__(self, n=23):
        self.n = n

    def __len__(self):
        return self.n

    def stream(self, seed, epoch, part, parts):
        for i in range(part, self.n, parts):
            yield np.full((2,), i, np.float32), i, part


class Unpicklable(Exception):
    def __init__(self, code, detail):
        super().__init__(f"code {code}: {detail}")


class RaisesUnpicklable(Images):
    def __getitem__(self, index):
        raise Unpicklable(7, f"sample {index}")


def crop_transform():
    return transforms.Compose([transforms.ToFloat(), transforms.RandomCrop(6, padding=2),
                               transforms.GaussianNoise(0.1)])


# -- the same batches whatever the number of workers ----------------------------------------------
@pytest.mark.parametrize("dataset", [Images(), AugmentedImages()], ids=["getitem", "sample"])
def test_batches_are_identical_for_0_and_2_workers(backend, dataset):
    def run(workers):
        loader = DataLoader(dataset, batch_size=4, shuffle=True, seed=5, transform=crop_transform(),
                            num_workers=workers)
        return batches_of(loader) + batches_of(loader)  # two epochs

    inline, workers = run(0), run(2)
    assert len(inline) == 16
    assert_same_batches(inline, workers)
    assert no_children()


def test_sample_gets_the_documented_generator():
    loader = DataLoader(AugmentedImages(5), batch_size=5, seed=9, num_workers=1)
    xb, _ = next(iter(loader))
    for index in range(5):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([9, 0, index])))
        image = (np.arange(36, dtype=np.uint8).reshape(1, 6, 6) + index) % 251
        expected = image + rng.integers(0, 5, size=image.shape, dtype=np.uint8)
        np.testing.assert_array_equal(to_np(xb)[index], expected.astype(np.float32))


def test_batch_b_is_built_by_worker_b_mod_n_with_seeded_global_generators():
    loader = DataLoader(WhoAmI(24), batch_size=3, num_workers=2, seed=1)
    got = batches_of(loader)
    assert [int(b[2][0]) for b in got] == [0, 1] * 4
    assert all(len(set(b[2].tolist())) == 1 for b in got)
    first, second = got[0][4], got[1][4]
    assert not np.array_equal(first, second)  # each worker's NumPy generator is its own


def test_persistent_workers_survive_epochs_and_give_the_same_batches():
    dataset = WhoAmI(20)
    persistent = DataLoader(dataset, batch_size=4, shuffle=True, seed=2, num_workers=2, persistent_workers=True)
    fresh = DataLoader(dataset, batch_size=4, shuffle=True, seed=2, num_workers=2)
    epochs_p = [batches_of(persistent) for _ in range(2)]
    epochs_f = [batches_of(fresh) for _ in range(2)]
    pids_p = [set(np.concatenate([b[3] for b in e]).tolist()) for e in epochs_p]
    pids_f = [set(np.concatenate([b[3] for b in e]).tolist()) for e in epochs_f]
    assert pids_p[0] == pids_p[1] and len(pids_p[0]) == 2
    assert not pids_f[0] & pids_f[1]
    for ep, ef in zip(epochs_p, epochs_f):
        assert_same_batches([b[:2] for b in ep], [b[:2] for b in ef])
    # the persistent loader's workers are alive between epochs, and close() ends them
    assert len(multiprocessing.active_children()) == 2
    # breaking out of an epoch and starting the next one on the same workers
    for _ in persistent:
        break
    assert_same_batches([b[:2] for b in batches_of(persistent)], [b[:2] for b in batches_of(_epoch(dataset, 3))])
    # an iterator superseded by a newer one says so, and leaves the workers to the newer one
    old = iter(persistent)
    next(old)
    new = iter(persistent)
    with pytest.raises(RuntimeError, match="superseded by a newer iteration"):
        next(old)
    assert len(batches_of(new)) == 5  # a whole epoch of its own, on the same workers
    persistent.close()
    assert no_children()


def _epoch(dataset, epoch):
    loader = DataLoader(dataset, batch_size=4, shuffle=True, seed=2)
    loader.set_epoch(epoch)
    return loader


def test_in_memory_arrays_keep_the_thread():
    data = TensorDataset(np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20))
    loader = DataLoader(data, batch_size=6, shuffle=True, seed=0, num_workers=2)
    assert not loader.uses_workers and DataLoader(Images(), num_workers=2).uses_workers
    assert_same_batches(batches_of(loader), batches_of(DataLoader(data, batch_size=6, shuffle=True, seed=0)))
    assert multiprocessing.active_children() == []


def test_uint8_inputs_stay_uint8_with_a_device_transform(backend):
    seen = []

    def on_device(x):
        seen.append(x.dtype)
        return x

    loader = DataLoader(Images(8), batch_size=4, num_workers=2, device_transform=on_device)
    xb, yb = next(iter(loader))
    assert str(seen[0]).endswith("uint8")
    assert str(xb.dtype).endswith("uint8") and xpnet.int64 == yb.dtype
    np.testing.assert_array_equal(to_np(xb)[1], Images()[1][0])
    plain, _ = next(iter(DataLoader(Images(8), batch_size=4)))
    assert xpnet.float32 == plain.dtype


def test_normalize_on_device_after_a_uint8_upload(backend):
    device_transforms = pytest.importorskip("xpnet.data.device_transforms")
    normalize = device_transforms.NormalizeOnDevice(mean=0.5, std=0.25)
    loader = DataLoader(Images(8), batch_size=8, num_workers=2, device_transform=normalize)
    xb, _ = next(iter(loader))
    expected = (np.stack([Images()[i][0] for i in range(8)]).astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(to_np(xb), expected, rtol=1e-5, atol=1e-5)


# -- failures ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 2])
def test_an_exception_in_getitem_names_the_sample_and_comes_after_the_batches_before_it(workers):
    loader = DataLoader(Images(30, fail_at=13), batch_size=4, num_workers=workers)
    seen = []
    with pytest.raises(ValueError, match=r"/data/images/00013\.jpg \(sample 13 is broken\)") as info:
        for _, yb in loader:
            seen.append(to_np(yb).tolist())
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "sample 13 (batch 3)" in notes
    if workers:
        assert "DataLoader worker 1" in notes
        cause = str(info.value.__cause__)
        assert "Traceback" in cause and "__getitem__" in cause and "00013.jpg" in cause
    assert no_children()


def test_an_exception_that_cannot_be_pickled_is_described():
    loader = DataLoader(RaisesUnpicklable(8), batch_size=4, num_workers=1)
    with pytest.raises(DataLoaderWorkerError, match=r"Unpicklable: code 7: sample 0 .*worker 0"):
        next(iter(loader))
    assert no_children()


def test_a_killed_worker_is_an_error_within_seconds():
    loader = DataLoader(Images(400, delay=0.005), batch_size=4, num_workers=2)
    iterator = iter(loader)
    next(iterator)
    victim = sorted(multiprocessing.active_children(), key=lambda p: p.name)[1]
    os.kill(victim.pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(DataLoaderWorkerError, match=r"worker 1 \(pid \d+\) was killed by signal SIGKILL"):
        for _ in iterator:
            pass
    assert time.monotonic() - start < 5.0
    assert no_children()


def test_a_slow_batch_times_out():
    loader = DataLoader(Images(8, delay=1.0), batch_size=4, num_workers=1, timeout=0.2)
    start = time.monotonic()
    with pytest.raises(DataLoaderWorkerError, match=r"timed out after 0.2 s waiting for batch 0"):
        next(iter(loader))
    assert time.monotonic() - start < 3.0
    assert no_children()


def test_worker_init_fn_runs_in_each_worker_and_its_error_is_raised():
    def failing(worker_id):
        if worker_id == 1:
            raise RuntimeError(f"no GPU for worker {worker_id}")

    with pytest.raises(RuntimeError, match="no GPU for worker 1"):
        list(DataLoader(Images(16), batch_size=2, num_workers=2, worker_init_fn=failing))
    assert no_children()


# -- shutdown ---------------------------------------------------------------------------------------
def test_break_interrupt_and_the_end_stop_every_worker():
    loader = DataLoader(Images(200), batch_size=2, num_workers=2)
    for _ in loader:
        break
    assert no_children()
    with pytest.raises(KeyboardInterrupt):
        for _ in loader:
            raise KeyboardInterrupt
    assert no_children()
    assert len(batches_of(loader)) == 100
    assert no_children()
    iterator = iter(loader)
    next(iterator)
    assert len(multiprocessing.active_children()) == 2
    iterator.close()
    assert no_children(timeout=0.5)


SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{root!r}, {tests!r}]
    from test_workers import Images
    from xpnet.data import DataLoader
    import multiprocessing
    loader = DataLoader(Images(100000, delay=0.001), batch_size=4, num_workers=2)
    iterator = iter(loader)
    next(iterator)
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
    for _ in iterator:
        time.sleep(0.01)
""")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "main-killed"])
def test_workers_do_not_outlive_the_main_process(sig):
    script = SCRIPT.format(root=ROOT, tests=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2, proc.stderr.read()
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole foreground group, workers included
        else:
            os.kill(proc.pid, sig)  # the main process alone dies: its workers must notice
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids)
        leftovers = [n for n in os.listdir("/dev/shm") if n.startswith(f"xpn{proc.pid}_")]
        assert leftovers == []  # every worker unlinked its shared-memory slots
        if sig == signal.SIGINT:
            assert "KeyboardInterrupt" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- start methods, streams, arguments ------------------------------------------------------------
def test_spawn_start_method():
    loader = DataLoader(AugmentedImages(12), batch_size=4, shuffle=True, seed=3, transform=crop_transform(),
                        num_workers=2, multiprocessing_context="spawn")
    assert_same_batches(batches_of(loader),
                        batches_of(DataLoader(AugmentedImages(12), batch_size=4, shuffle=True, seed=3,
                                              transform=crop_transform())))
    assert no_children()

    class Local(Images):  # not importable from a spawned process
        pass

    with pytest.raises(TypeError, match="'spawn' start method, which pickles the dataset"):
        next(iter(DataLoader(Local(), batch_size=2, num_workers=1, multiprocessing_context="spawn")))
    assert no_children()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_is_split_over_the_workers_and_read_once(backend, workers):
    loader = DataLoader(Numbers(23), batch_size=4, num_workers=workers, seed=0)
    got = batches_of(loader)
    labels = np.concatenate([b[1] for b in got])
    assert sorted(labels.tolist()) == list(range(23))
    parts = np.concatenate([b[2] for b in got])
    assert set(parts.tolist()) == ({0, 1} if workers else {0})
    assert len(loader) == len(got)
    if workers:  # round-robin over the workers: worker 0's batch, worker 1's, ...
        assert [int(b[2][0]) for b in got[:4]] == [0, 1, 0, 1]
    dropped = DataLoader(Numbers(23), batch_size=4, num_workers=workers, drop_last=True)
    assert all(len(b[1]) == 4 for b in batches_of(dropped))
    assert no_children()


def test_bad_worker_arguments():
    with pytest.raises(ValueError, match="num_workers must be a non-negative integer"):
        DataLoader(Images(), num_workers=-1)
    with pytest.raises(ValueError, match="prefetch_factor=4 needs worker processes"):
        DataLoader(Images(), prefetch_factor=4)
    with pytest.raises(ValueError, match="persistent_workers=True needs worker processes"):
        DataLoader(Images(), persistent_workers=True)
    with pytest.raises(ValueError, match="timeout must be a non-negative number"):
        DataLoader(Images(), num_workers=1, timeout=-1)
    with pytest.raises(ValueError, match="multiprocessing_context must be one of"):
        DataLoader(Images(), num_workers=1, multiprocessing_context="telepathy")
    with pytest.raises(ValueError, match="prefetch_factor must be a positive integer"):
        DataLoader(Images(), num_workers=1, prefetch_factor=0)
    assert DataLoader(Images(), num_workers=2).prefetch_factor == 2
    assert DataLoader(Images()).prefetch_factor is None


def test_cli_negative_workers_is_a_usage_error(tmp_path, capsys):
    from xpnet.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--workers", "-1", "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    assert "argument --workers" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# -- CuPy: page-locked staging and a side stream ---------------------------------------------------
@pytest.mark.gpu
def test_pinned_uploads_on_cupy_equal_plain_ones():
    from xpnet.data.device_transforms import NormalizeOnDevice

    normalize = NormalizeOnDevice(mean=0.5, std=0.25)
    with xpnet.use_backend("cupy"):
        for workers in (0, 2):
            pinned = DataLoader(AugmentedImages(40), batch_size=8, shuffle=True, seed=4, num_workers=workers,
                                pin_memory=True, device_transform=normalize)
            plain = DataLoader(AugmentedImages(40), batch_size=8, shuffle=True, seed=4)
            got = batches_of(pinned)
            want = batches_of(plain)
            for (x, y), (xw, yw) in zip(got, want):
                np.testing.assert_allclose(x, (xw / 255 - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
                np.testing.assert_array_equal(y, yw)
            raw = DataLoader(AugmentedImages(40), batch_size=8, num_workers=workers, pin_memory=True,
                             device_transform=lambda x: x)
            xb, _ = next(iter(raw))
            assert str(xb.dtype).endswith("uint8") and xb.data.__class__.__module__.startswith("cupy")
    assert no_children()
