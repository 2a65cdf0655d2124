"""xpnet.save / xpnet.load: round trips on every backend, state dicts, map_location, atomic writes,
hostile files (refused before their body is read), PyTorch files through torch.load(weights_only=True).
"""

import errno
import json
import math
import os
import pickle
import struct
import sys

import numpy as np
import pytest

import xpnet
from xpnet import nn, optim
from xpnet.backends import backend_name_of, backend_of
from xpnet.serialization import METADATA_KEY, SerializationError

from conftest import to_np


def _write_safetensors(path, header: dict, body: bytes = b"", length=None):
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if length is None else length) + raw + body)
    return str(path)


def _structure_file(path, root, tensors):
    """A safetensors file whose xpnet structure is ``root``, holding ``tensors`` ({name: float64 array})."""
    header, body, offset = {}, b"", 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(np.shape(array)), "data_offsets": [offset, offset + len(data)]}
        body += data
        offset += len(data)
    header["__metadata__"] = {METADATA_KEY: json.dumps({"format": "xpnet-save", "version": 1, "root": root})}
    return _write_safetensors(path, header, body)


# ------------------------------------------------------------------------------------------ round trips
def test_nested_round_trip_keeps_types_values_and_dtypes(backend, tmp_path):
    xp = backend.xp
    weight = xpnet.tensor(np.arange(12, dtype=np.float64).reshape(3, 4))
    obj = {
        "tensor32": xpnet.tensor(np.linspace(-1, 1, 5, dtype=np.float32)),
        "tensor64": weight,
        "again": weight,  # one object in two places
        "ints": xpnet.tensor(np.array([[1, -2], [3, 2**40]], dtype=np.int64)),
        "mask": xpnet.tensor(np.array([True, False, True])),
        "scalar_tensor": xpnet.tensor(np.float64(2.5)),
        "empty": xpnet.tensor(np.zeros((0, 3), dtype=np.float32)),
        "raw": xp.asarray(np.array([1.5, 2.5], dtype=np.float32), device=backend.device),
        "host": np.array([[7, 8, 9]], dtype=np.uint8),
        "half": np.array([0.5, -2.0], dtype=np.float16),
        "np_scalar": np.float32(1.25),
        "np_int": np.int64(-3),
        7: {-1: "negative key", 0: None},
        "list": [1, 2.0, "three", None, True, False],
        "tuple": (1, (2, [3]), ()),
        "floats": [float("nan"), float("inf"), float("-inf"), -0.0, 1e-300, 0.1],
        "big": 2**70,
        "text": "ünïcödé \n\"quoted\"",
        "empty_containers": [[], {}, ()],
    }
    path = tmp_path / "obj.safetensors"
    xpnet.save(obj, path)
    got = xpnet.load(path)

    assert list(got) == list(obj)
    for key in ("tensor32", "tensor64", "ints", "mask", "scalar_tensor", "empty"):
        assert isinstance(got[key], xpnet.Tensor), key
        assert backend_of(got[key].data) is backend, key
        want = to_np(obj[key])
        assert to_np(got[key]).dtype == want.dtype and to_np(got[key]).shape == want.shape, key
        np.testing.assert_array_equal(to_np(got[key]), want)
    assert got["again"] is got["tensor64"]
    assert not isinstance(got["raw"], xpnet.Tensor) and backend_name_of(got["raw"]) == backend.name
    np.testing.assert_array_equal(to_np(got["raw"]), np.array([1.5, 2.5], dtype=np.float32))
    assert type(got["host"]) is np.ndarray and got["host"].dtype == np.uint8
    np.testing.assert_array_equal(got["host"], obj["host"])
    assert got["half"].dtype == np.float16
    assert type(got["np_scalar"]) is np.float32 and got["np_scalar"] == np.float32(1.25)
    assert type(got["np_int"]) is np.int64 and got["np_int"] == -3
    assert got[7] == {-1: "negative key", 0: None} and list(got[7]) == [-1, 0]
    assert got["list"] == [1, 2.0, "three", None, True, False]
    assert [type(v) for v in got["list"]] == [int, float, str, type(None), bool, bool]
    assert got["tuple"] == (1, (2, [3]), ()) and isinstance(got["tuple"][1], tuple)
    assert isinstance(got["tuple"][1][1], list)
    nan, inf, ninf, nzero, tiny, tenth = got["floats"]
    assert math.isnan(nan) and inf == math.inf and ninf == -math.inf
    assert nzero == 0.0 and math.copysign(1, nzero) == -1 and tiny == 1e-300 and tenth == 0.1
    assert got["big"] == 2**70 and got["text"] == obj["text"]
    assert got["empty_containers"] == [[], {}, ()] and isinstance(got["empty_containers"][2], tuple)


def test_requires_grad_and_parameters_come_back(tmp_path):
    p = nn.Parameter(xpnet.tensor(np.ones((2, 2), dtype=np.float32)))
    t = xpnet.tensor(np.zeros(3, dtype=np.float64), requires_grad=True)
    xpnet.save({"p": p, "t": t, "plain": xpnet.tensor([1.0])}, tmp_path / "g.st")
    got = xpnet.load(tmp_path / "g.st")
    assert isinstance(got["p"], nn.Parameter) and got["p"].requires_grad
    assert type(got["t"]) is xpnet.Tensor and got["t"].requires_grad and got["t"].is_leaf
    assert not got["plain"].requires_grad


def test_model_state_dict_round_trip(backend, tmp_path):
    def build():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * 5 * 5, 3))

    xpnet.manual_seed(1)
    model = build()
    model(xpnet.randn(2, 3, 5, 5))  # training mode: the running statistics move
    path = tmp_path / "model.safetensors"
    xpnet.save(model.state_dict(), path)

    xpnet.manual_seed(2)
    other = build()
    other.load_state_dict(xpnet.load(path))
    for (k, a), (k2, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k == k2
        assert to_np(a).dtype == to_np(b).dtype
        np.testing.assert_array_equal(to_np(a), to_np(b))
    model.eval(), other.eval()
    x = xpnet.randn(2, 3, 5, 5)
    np.testing.assert_array_equal(to_np(model(x)), to_np(other(x)))

    # the file is a plain safetensors state dict to any other reader
    from safetensors.numpy import load_file

    plain = load_file(str(path))
    assert set(plain) == set(model.state_dict())
    np.testing.assert_array_equal(plain["0.weight"], to_np(model.state_dict()["0.weight"]))


def test_optimizer_state_dict_round_trip(backend, tmp_path):
    xpnet.manual_seed(3)
    model = nn.Linear(4, 2)
    opt = optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99))
    x = xpnet.randn(5, 4)
    for _ in range(3):
        opt.zero_grad()
        (model(x) ** 2).sum().backward()
        opt.step()
    path = tmp_path / "opt.safetensors"
    xpnet.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, path)

    loaded = xpnet.load(path)
    assert loaded["epoch"] == 3
    assert sorted(loaded["optimizer"]["state"]) == [0, 1]  # int keys stay ints
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.99)  # a tuple stays a tuple
    clone = nn.Linear(4, 2)
    clone.load_state_dict(loaded["model"])
    clone_opt = optim.Adam(clone.parameters(), lr=0.5)
    clone_opt.load_state_dict(loaded["optimizer"])
    assert clone_opt.param_groups[0]["lr"] == 0.01
    for m, o in ((model, opt), (clone, clone_opt)):
        o.zero_grad()
        (m(x) ** 2).sum().backward()
        o.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        np.testing.assert_array_equal(to_np(a), to_np(b))


@pytest.mark.parametrize("header_len", [0x0280, 0x0480, 0x0580])
def test_header_lengths_that_begin_like_a_pickle(tmp_path, header_len):
    # the little-endian length 0x0480 starts b"\x80\x04", as a protocol-4 pickle does
    root = {"dict": [["w", {"tensor": "w"}]]}
    header = {"w": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
              "__metadata__": {METADATA_KEY: json.dumps({"format": "xpnet-save", "version": 1, "root": root})}}
    raw = json.dumps(header).encode()
    raw += b" " * (header_len - len(raw))
    path = tmp_path / "p.st"
    path.write_bytes(struct.pack("<Q", header_len) + raw + np.array([1.0, 2.0]).tobytes())
    assert path.read_bytes()[0] == 0x80
    np.testing.assert_array_equal(to_np(xpnet.load(path)["w"]), [1.0, 2.0])


def test_plain_safetensors_file_loads_as_a_dict_of_tensors(tmp_path):
    from safetensors.numpy import save_file

    save_file({"b": np.arange(3, dtype=np.int32), "a": np.ones((2, 2), dtype=np.float32)}, str(tmp_path / "p.st"))
    got = xpnet.load(tmp_path / "p.st")
    assert set(got) == {"a", "b"} and all(isinstance(v, xpnet.Tensor) for v in got.values())
    assert to_np(got["b"]).dtype == np.int32


# ------------------------------------------------------------------------------------------ map_location
def test_map_location_forms(tmp_path):
    path = tmp_path / "m.st"
    xpnet.save({"t": xpnet.tensor([1.0, 2.0]), "r": np.float64(1) + np.zeros(2)}, path)
    assert backend_name_of(xpnet.load(path, map_location="cpu")["t"].data) == "numpy"
    strict = xpnet.load(path, map_location="array_api_strict:device1")["t"].data
    assert backend_name_of(strict) == "array_api_strict" and "device1" in str(strict.device)
    with xpnet.use_backend("array_api_strict"):
        assert backend_name_of(xpnet.load(path)["t"].data) == "array_api_strict"
        on_cpu = xpnet.load(path, map_location="cpu")["t"].data
        assert backend_name_of(on_cpu) == "array_api_strict"
        assert "device1" in str(xpnet.load(path, map_location="device1")["t"].data.device)
    assert backend_name_of(xpnet.load(path, map_location=xpnet.get_backend("array_api_strict"))["t"].data) \
        == "array_api_strict"

    class TorchLikeDevice:
        type, index = "cpu", None

    assert backend_name_of(xpnet.load(path, map_location=TorchLikeDevice())["t"].data) == "numpy"
    if hasattr(xpnet, "device"):
        assert backend_name_of(xpnet.load(path, map_location=xpnet.device("cpu"))["t"].data) == "numpy"
    seen = []

    def callback(array, location):
        seen.append((type(array), location))
        return xpnet.get_backend("array_api_strict").from_host(array * 2)

    got = xpnet.load(path, map_location=callback)
    assert seen == [(np.ndarray, "cpu")]
    np.testing.assert_array_equal(to_np(got["t"]), [2.0, 4.0])
    assert type(got["r"]) is np.ndarray  # NumPy arrays stay NumPy arrays
    default = xpnet.load(path, map_location=lambda a, loc: None)["t"].data  # None: the default placement
    assert backend_name_of(default) == xpnet.get_backend().name
    mapped = xpnet.load(path, map_location={"cpu": "array_api_strict"})["t"].data
    assert backend_name_of(mapped) == "array_api_strict"
    with pytest.raises(ValueError, match="map_location 'nowhere'"):
        xpnet.load(path, map_location="nowhere")
    with pytest.raises(ValueError, match="weights_only=False"):
        xpnet.load(path, weights_only=False)


# ------------------------------------------------------------------------------------------ saving
@pytest.mark.parametrize("bad,where", [
    ({"a": {1, 2}}, "root['a']"),
    ({"a": [object()]}, "root['a'][0]"),
    ({(1, 2): 3}, "key (1, 2)"),
    ({True: 1}, "key True"),
    ({"c": np.ones(2, dtype=np.complex128)}, "complex128"),
])
def test_unsavable_values_are_named_and_nothing_is_written(tmp_path, bad, where):
    path = tmp_path / "x.st"
    xpnet.save({"old": 1}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError) as info:
        xpnet.save(bad, path)
    assert where in str(info.value)
    assert path.read_bytes() == before
    cycle = []
    cycle.append(cycle)
    with pytest.raises(TypeError, match="nested more than"):
        xpnet.save(cycle, path)


def test_a_failing_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.safetensors"
    xpnet.save({"v": xpnet.tensor([1.0, 2.0])}, path)
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as info:
        xpnet.save({"v": xpnet.tensor([3.0, 4.0, 5.0])}, path)
    assert info.value.errno == errno.ENOSPC and "keep.safetensors" in str(info.value)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.safetensors"]  # no temporary file left behind
    np.testing.assert_array_equal(to_np(xpnet.load(path)["v"]), [1.0, 2.0])


def test_save_replaces_a_symlink_instead_of_following_it(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched")
    link = tmp_path / "link.st"
    link.symlink_to(target)
    xpnet.save({"a": 1}, link)
    assert target.read_text() == "untouched" and not link.is_symlink()
    assert xpnet.load(link) == {"a": 1}


# ------------------------------------------------------------------------------------------ hostile files
@pytest.fixture
def count_reads(monkeypatch):
    """Total bytes read through os.readv while the test runs (the loader's only way to read)."""
    total = {"bytes": 0}
    real = os.readv

    def counting(fd, buffers):
        got = real(fd, buffers)
        total["bytes"] += got
        return got

    monkeypatch.setattr(os, "readv", counting)
    return total


def _refused(path, *fragments):
    assert issubclass(SerializationError, ValueError)
    with pytest.raises(SerializationError) as info:
        xpnet.load(path)
    text = str(info.value)
    assert str(path) in text, text
    for fragment in fragments:
        assert fragment in text, text
    assert "\n" not in text
    return text


def test_truncated_file(tmp_path):
    path = tmp_path / "t.st"
    xpnet.save({"w": xpnet.tensor(np.ones((10, 10)))}, path)
    data = path.read_bytes()
    path.write_bytes(data[:-9])
    _refused(path, "truncated")
    path.write_bytes(data[:5])
    _refused(path, "too short")
    path.write_bytes(b"")
    _refused(path, "0 bytes")


def test_header_length_beyond_the_limit_or_the_file(tmp_path, count_reads):
    path = tmp_path / "h.st"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    _refused(path, "header length", "more than")
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    _refused(path, "1000 bytes", "truncated")
    assert count_reads["bytes"] < 100


def test_offsets_outside_the_file_are_refused_before_reading(tmp_path, count_reads):
    huge = 10**9
    header = {"w": {"dtype": "F64", "shape": [huge], "data_offsets": [0, 8 * huge]}}
    path = _write_safetensors(tmp_path / "o.st", header, b"\0" * 64)
    _refused(path, "truncated")
    header = {"w": {"dtype": "F64", "shape": [2], "data_offsets": [0, 64]}}
    _refused(_write_safetensors(tmp_path / "o2.st", header, b"\0" * 64), "take 16 bytes")
    header = {"w": {"dtype": "F64", "shape": [2], "data_offsets": [8, 24]}}
    _refused(_write_safetensors(tmp_path / "o3.st", header, b"\0" * 24), "gap")
    header = {"w": {"dtype": "X99", "shape": [1], "data_offsets": [0, 8]}}
    _refused(_write_safetensors(tmp_path / "o4.st", header, b"\0" * 8), "unknown dtype")
    header = {"w": {"dtype": "F64", "shape": [-1], "data_offsets": [0, 8]}}
    _refused(_write_safetensors(tmp_path / "o5.st", header, b"\0" * 8), "shape")
    assert count_reads["bytes"] < 4096


def test_structure_naming_a_missing_tensor(tmp_path, count_reads):
    path = _structure_file(tmp_path / "s.st", {"dict": [["w", {"tensor": "nope"}]]}, {"w": np.zeros(4)})
    _refused(path, "names tensor 'nope'", "root['w']")
    assert count_reads["bytes"] < 1024  # the 32-byte body was never read


@pytest.mark.parametrize("root,fragment", [
    ({"dict": [["w", {"tensor": "w"}]]}, None),  # the valid control case
    ({"list": [{"tensor": "w"}, {"tensor": "w"}, {"numpy": "w"}]}, None),
    ({"dict": [["a", 1]]}, "does not use"),
    ({"dict": [["w", {"tensor": "w", "list": []}]]}, "tags"),
    ({"dict": [["w", {"tensor": "w", "evil": 1}]]}, "tags"),
    ({"dict": [["w", {"tensor": "w"}], ["w", 1]]}, "appears twice"),
    ({"dict": [[1.5, {"tensor": "w"}]]}, "key"),
    ({"dict": {"w": {"tensor": "w"}}}, "pairs"),
    ({"list": [{"tensor": "w"}, {"float": "1e999"}]}, "'nan', 'inf' or '-inf'"),
    ({"list": [{"tensor": "w"}, [1, 2]]}, "JSON list"),
    ({"list": [{"tensor": "w", "requires_grad": "yes"}]}, "true or false"),
    ({"list": [{"numpy": "w", "scalar": True}]}, "shape []"),
])
def test_structure_checks(tmp_path, root, fragment):
    path = _structure_file(tmp_path / "s.st", root, {"w": np.arange(4.0)})
    if fragment is None:
        xpnet.load(path)
    else:
        _refused(path, fragment)


def test_structure_nesting_and_document_checks(tmp_path):
    deep = {"tensor": "w"}
    for _ in range(100):
        deep = {"list": [deep]}
    _refused(_structure_file(tmp_path / "d.st", deep, {"w": np.zeros(1)}), "nested more than")
    header = {"__metadata__": {METADATA_KEY: "{not json"}}
    _refused(_write_safetensors(tmp_path / "j.st", header), "not valid JSON")
    header = {"__metadata__": {METADATA_KEY: json.dumps({"format": "xpnet-save", "version": 99, "root": None})}}
    _refused(_write_safetensors(tmp_path / "v.st", header), "version 99")
    header = {"__metadata__": {METADATA_KEY: json.dumps([1, 2])}}
    _refused(_write_safetensors(tmp_path / "f.st", header), "not an xpnet-save document")


def test_not_a_file_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        xpnet.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        xpnet.load(tmp_path / "nothing-here.st")
    text = tmp_path / "notes.txt"
    text.write_text("just some text, long enough to have eight bytes\n")
    _refused(text, "not a safetensors file")


def test_a_pickle_is_never_unpickled_without_torch(tmp_path, monkeypatch):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    text = _refused(path, "pickle", "pip install torch", "xpnet convert-weights")
    assert "evil.safetensors" in text


# ------------------------------------------------------------------------------------------ PyTorch files
def test_pth_files_load_through_torch(tmp_path):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    obj = {"w": weight, "same": weight, "n": 3, "l": [torch.arange(3), "s"], "t": (1.5, None),
           "half": torch.ones(2, dtype=torch.float16), "p": torch.nn.Parameter(torch.zeros(2))}
    for name, zip_format in (("new.pth", True), ("legacy.pt", False), ("weights.bin", True)):
        path = tmp_path / name
        torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
        got = xpnet.load(path)
        np.testing.assert_array_equal(to_np(got["w"]), weight.numpy())
        assert to_np(got["w"]).dtype == np.float64 and got["same"] is got["w"]
        assert to_np(got["l"][0]).dtype == np.int64 and got["l"][1] == "s"
        assert got["n"] == 3 and got["t"] == (1.5, None) and to_np(got["half"]).dtype == np.float16
        assert isinstance(got["p"], nn.Parameter)
    del obj["half"]
    torch.save(obj, tmp_path / "no-half.pth")
    got = xpnet.load(tmp_path / "no-half.pth", map_location="array_api_strict")
    assert backend_name_of(got["w"].data) == "array_api_strict"
    with pytest.raises(ValueError, match="float16.*cannot be placed"):  # array_api_strict has no float16
        xpnet.load(tmp_path / "new.pth", map_location="array_api_strict")


def test_pth_file_without_torch_says_how_to_convert(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    path = tmp_path / "resnet.pth"
    torch.save({"w": torch.zeros(2)}, path)
    monkeypatch.setitem(sys.modules, "torch", None)
    text = _refused(path, "zip archive", "torch is not installed", "pip install torch",
                    f"xpnet convert-weights {path} {tmp_path / 'resnet.safetensors'}")
    assert "weights_only=True" in text


def test_torch_refuses_a_plain_pickle_and_the_error_says_why(tmp_path):
    pytest.importorskip("torch")

    class Sneaky:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"a": Sneaky()}, protocol=2))
    _refused(path, "torch.load(weights_only=True) refused it", "never unpickles")


def test_safetensors_written_by_xpnet_load_in_torch(tmp_path):
    pytest.importorskip("torch")
    from safetensors.torch import load_file

    state = nn.Linear(3, 2).state_dict()
    xpnet.save(state, tmp_path / "lin.safetensors")
    loaded = load_file(str(tmp_path / "lin.safetensors"))
    assert set(loaded) == {"weight", "bias"}
    np.testing.assert_array_equal(loaded["weight"].numpy(), to_np(state["weight"]))
