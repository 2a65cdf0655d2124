"""Hostile dataset files: gzip and pickle bombs, special files, oversized files (issue #13).

Each test is small and fast and allocates little: memory is measured with ``tracemalloc``; what
could hang or allocate gigabytes on a reader without the checks (a FIFO, ``/dev/zero``, a pickle
memo bomb) runs in a child process with an address-space limit and a timeout.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib

import numpy as np
import pytest

import xpnet
from xpnet.data import RestrictedUnpickler, UnsafePickleError, load_cifar10, load_mnist, read_cifar_binary, read_idx
from xpnet.data.readers import NotARegularFileError, read_cifar_python
from xpnet.data.readers.idx import DEFLATE_MAX_RATIO, IDX_MAX_BODY_BYTES
from xpnet.data.readers.safe_pickle import (
    MAX_PICKLE_DEPTH,
    MAX_PICKLE_FILE_BYTES,
    MAX_PICKLE_ITEMS,
    MAX_PICKLE_OPCODES,
)

REPO = pathlib.Path(xpnet.__file__).resolve().parents[1]
needs_posix = pytest.mark.skipif(not hasattr(os, "mkfifo") or sys.platform == "win32",
                                 reason="FIFOs, /dev/zero and resource limits are POSIX")


def idx_bytes(array):
    array = np.asarray(array)
    code = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def peak_while(call, error=ValueError):
    """``(exception info, peak traced bytes)`` of ``call()``, which must raise ``error``."""
    tracemalloc.start()
    try:
        with pytest.raises(error) as info:
            call()
        return info, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run_isolated(code, timeout=60):
    """Run ``code`` in a child Python limited to 1.5 GiB of address space; its stdout as JSON."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


# -- IDX ------------------------------------------------------------------------------------------

def gzip_bomb(prefix: bytes, zero_mib: int) -> bytes:
    """A gzip file of ``prefix`` then ``zero_mib`` MiB of zeros, built without compressing them all:
    one full-flushed deflate block of 1 MiB of zeros is self-contained, so it is repeated."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(bytes(1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.flush()
    size = (len(prefix) + (zero_mib << 20)) & 0xFFFFFFFF
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + head + block * zero_mib + tail
            + struct.pack("<II", 0, size))  # the CRC is not computed: the reader must stop long before it


def test_idx_gzip_bomb_stops_after_the_announced_bytes(tmp_path, rng):
    labels = rng.integers(0, 10, 60, dtype=np.uint8)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip_bomb(idx_bytes(labels), 4096))  # 4 GiB of zeros after the labels
    assert path.stat().st_size < 8 << 20
    info, peak = peak_while(lambda: read_idx(path))
    message = str(info.value)
    assert str(path) in message and "corrupt (extra bytes) IDX file" in message and "needs 68 bytes" in message
    assert peak < 8 << 20, peak


def test_idx_header_announcing_an_absurd_size_is_refused_unread(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + bytes(64))
    with pytest.raises(ValueError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and "(4294967295, 4294967295, 4294967295)" in message
    assert f"more than the {IDX_MAX_BODY_BYTES} bytes accepted" in message


def test_idx_empty_shape_may_not_hide_absurd_dimensions(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 0, 0xFFFFFFFF, 0xFFFFFFFF))
    with pytest.raises(ValueError, match=r"shape \(0, 4294967295, 4294967295\) of uint8 \(0 bytes, with dimensions"):
        read_idx(path)


def test_idx_gzip_announcing_more_than_deflate_can_hold_allocates_nothing(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 1_000_000, 28, 28) + bytes(100)))
    size = path.stat().st_size
    info, peak = peak_while(lambda: read_idx(path))
    assert f"a gzip file of {size} bytes holds at most {DEFLATE_MAX_RATIO * size} bytes" in str(info.value)
    assert peak < 1 << 20, peak


def test_raw_idx_size_is_checked_against_the_header_before_the_body(tmp_path, rng):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)))
    with open(path, "r+b") as handle:
        handle.truncate(256 << 20)  # sparse: no disk used
    info, peak = peak_while(lambda: read_idx(path))
    assert f"needs {16 + 3 * 784} bytes, found {256 << 20} bytes" in str(info.value)
    assert peak < 1 << 20, peak


# -- special files --------------------------------------------------------------------------------

def test_a_directory_where_a_file_is_expected_is_named(tmp_path):
    folder = tmp_path / "train-images-idx3-ubyte"
    folder.mkdir()
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    for reader in (read_idx, read_cifar_binary, read_cifar_python):
        with pytest.raises(NotARegularFileError, match=re.escape(str(folder)) + ": expected .* as a regular file, "
                                                       "found a directory"):
            reader(folder)
    with pytest.raises(NotARegularFileError, match="train-images-idx3-ubyte: .* found a directory"):
        load_mnist(tmp_path)


@needs_posix
def test_fifo_and_dev_zero_are_refused_by_every_reader_without_blocking(tmp_path):
    fifo = tmp_path / "data_batch_1"
    os.mkfifo(fifo)
    results = run_isolated(f"""
        import json
        from xpnet.data.readers import read_cifar_binary, read_cifar_python, read_idx
        from xpnet.data.readers.cifar import read_label_names
        out = []
        for path in ({str(fifo)!r}, "/dev/zero"):
            for reader in (read_idx, read_cifar_binary, read_cifar_python, read_label_names):
                try:
                    reader(path)
                    out.append("accepted")
                except Exception as exc:
                    out.append(type(exc).__name__ + ": " + str(exc))
        print(json.dumps(out))
    """)
    assert len(results) == 8
    for result in results[:4]:
        assert result.startswith(f"NotARegularFileError: {fifo}: expected a")
        assert result.endswith("as a regular file, found a FIFO (named pipe); only regular files are read")
    for result in results[4:]:
        assert result.startswith("NotARegularFileError: /dev/zero: expected a") and "found a character device" in result


@needs_posix
def test_mnist_and_cifar_folders_refuse_a_fifo_instead_of_skipping_it(tmp_path, rng):
    os.mkfifo(tmp_path / "train-images-idx3-ubyte")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(NotARegularFileError, match="train-images-idx3-ubyte: .* found a FIFO"):
        load_mnist(tmp_path)
    cifar = tmp_path / "cifar-10-batches-bin"
    cifar.mkdir()
    (cifar / "data_batch_1.bin").write_bytes(bytes(3073))
    os.mkfifo(cifar / "data_batch_2.bin")  # skipped silently before: training on part of the data
    with pytest.raises(NotARegularFileError, match="data_batch_2.bin: .* found a FIFO"):
        load_cifar10(tmp_path)


@needs_posix
def test_image_folder_never_blocks_on_a_fifo_swapped_in_after_the_scan(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "x.png")
    results = run_isolated(f"""
        import json, os
        from xpnet.data import ImageFolder
        folder = ImageFolder({str(tmp_path)!r}, size=4)
        os.remove(folder.paths[0]); os.mkfifo(folder.paths[0])
        try:
            folder[0]
            print(json.dumps("accepted"))
        except Exception as exc:
            print(json.dumps(type(exc).__name__ + ": " + str(exc)))
    """)
    assert results.startswith(f"NotARegularFileError: {tmp_path / 'a' / 'x.png'}: expected an image as a regular "
                              f"file, found a FIFO")


# -- CIFAR files ----------------------------------------------------------------------------------

def test_cifar_files_larger_than_the_bound_are_refused_unread(tmp_path):
    binary = tmp_path / "data_batch_1.bin"
    with open(binary, "wb") as handle:
        handle.truncate(60_001 * 3073)  # sparse
    info, peak = peak_while(lambda: read_cifar_binary(binary))
    assert f"{binary}: a CIFAR binary file of {60_001 * 3073} bytes is larger than the {60_000 * 3073}" in str(info.value)
    assert peak < 1 << 20, peak
    python = tmp_path / "data_batch_1"
    with open(python, "wb") as handle:
        handle.truncate(MAX_PICKLE_FILE_BYTES + 1)
    info, peak = peak_while(lambda: read_cifar_python(python))
    assert f"{python}: a CIFAR python file of {MAX_PICKLE_FILE_BYTES + 1} bytes is larger than the" in str(info.value)
    assert peak < 1 << 20, peak


def doubling_pickle(levels, key=b"labels"):
    """A protocol-2 pickle of ``{b'data': <empty array-free stand-in>, key: L}`` where L nests
    ``levels`` lists, each ``[inner, inner]`` holding the same inner list twice: 9 bytes a level,
    2**levels leaves once expanded. Written opcode by opcode; nothing here is expanded."""
    out = bytearray(b"\x80\x02}")                      # PROTO 2, EMPTY_DICT
    out += b"U" + bytes([len(key)]) + key              # SHORT_BINSTRING key
    out += b"K\x00"                                    # BININT1 0: the innermost item
    for level in range(levels):
        index = level % 250
        out += b"q" + bytes([index]) + b"0"            # BINPUT index, POP
        out += b"](h" + bytes([index]) + b"2e"         # EMPTY_LIST, MARK, BINGET index, DUP, APPENDS
    out += b"s."                                       # SETITEM, STOP
    return bytes(out)


def test_shared_reference_pickle_is_refused_before_anything_expands_it(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(doubling_pickle(22))  # 4 million labels once expanded, in 205 bytes
    assert path.stat().st_size < 256
    info, peak = peak_while(lambda: read_cifar_python(path), UnsafePickleError)
    message = str(info.value)
    assert message.startswith(f"{path}: refusing pickle: ") and "deep" in message
    assert peak < 4 << 20, peak


def test_restricted_unpickler_bounds_entries_depth_and_cycles():
    import io

    def load(payload):
        return RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()

    with pytest.raises(UnsafePickleError, match=f"containers nested more than {MAX_PICKLE_DEPTH} deep"):
        load(doubling_pickle(60))  # 2**60 leaves: must be refused, never walked
    # a 3-item list, then a list holding it MAX_PICKLE_ITEMS // 3 times: 4/3 of the bound once expanded
    shared = b"\x80\x02]q\x00(K\x01K\x02K\x03e0](" + b"h\x00" * (MAX_PICKLE_ITEMS // 3) + b"e."
    with pytest.raises(UnsafePickleError, match=f"more than {MAX_PICKLE_ITEMS} container entries"):
        load(shared)
    with pytest.raises(UnsafePickleError, match="a list that contains itself"):
        load(b"\x80\x02]q\x00(h\x00e.")


def test_restricted_unpickler_bounds_opcodes_and_memo_indices():
    import io

    with pytest.raises(UnsafePickleError, match=f"more than {MAX_PICKLE_OPCODES} opcodes"):
        RestrictedUnpickler(io.BytesIO(b"\x80\x02" + b"]" * (MAX_PICKLE_OPCODES + 1) + b"."), encoding="bytes").load()
    with pytest.raises(UnsafePickleError, match=r"memo index 4294967295 at opcode 3; accepted 0..2"):
        RestrictedUnpickler(io.BytesIO(b"\x80\x02Nr\xff\xff\xff\xff."), encoding="bytes").load()


@needs_posix
def test_memo_index_bomb_is_refused_in_a_small_address_space(tmp_path):
    path = tmp_path / "batches.meta"
    path.write_bytes(b"\x80\x02Nr\xff\xff\xff\x7f.")  # 9 bytes asking the unpickler for a 32 GiB memo
    result = run_isolated(f"""
        import json
        from xpnet.data.readers import read_cifar_python
        try:
            read_cifar_python({str(path)!r})
            print(json.dumps("accepted"))
        except Exception as exc:
            print(json.dumps(type(exc).__name__ + ": " + str(exc)))
    """)
    assert result.startswith(f"UnsafePickleError: {path}: refusing pickle: memo index 2147483647 at opcode 3")


@pytest.mark.parametrize("payload,match", [
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x00\x40\x85U\x01b\x87R.",
     r"_reconstruct is admitted only as _reconstruct\(numpy.ndarray, \(0,\), b'b'\).*shape \(1073741824,\)"),
    (b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x40\x85\x85R.", "numpy.ndarray is admitted only as"),
    (b"\x80\x02cnumpy\ndtype\nU\x02O8\x89\x88\x87R.", r"numpy dtype is admitted only for bool and numeric types.*'O8'"),
    (b"\x80\x02cnumpy\ndtype\nU\x05V9999\x89\x88\x87R.", "numpy dtype is admitted only"),
], ids=["reconstruct-with-a-shape", "ndarray-called", "object-dtype", "void-dtype"])
def test_numpy_names_are_admitted_only_as_numpy_pickles_them(tmp_path, payload, match):
    import io

    with pytest.raises(UnsafePickleError, match=match):
        RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=f"^{re.escape(str(path))}: refusing pickle: .*{match}"):
        read_cifar_python(path)


def test_refusals_are_value_errors_for_the_cli():
    assert issubclass(UnsafePickleError, ValueError) and issubclass(UnsafePickleError, pickle.UnpicklingError)
    assert issubclass(NotARegularFileError, ValueError)
