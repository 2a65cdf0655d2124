"""Sharded tar datasets (xpnet.data.shards): patterns, shard assignment, shuffling, hostile tars
and ``load_dataset('shards:...')``."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image")

from xpnet.data import ShardDataset, augment, expand_urls, load_dataset  # noqa: E402
from xpnet.data.shards import buffer_shuffle, expand_braces, split_member_name  # noqa: E402


def encoded(value, fmt="PNG", size=(6, 5)):
    """An image whose every pixel is (value, 255 - value, 7): a decoded sample tells its number."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, 255 - value, 7)).save(buffer, fmt)
    return buffer.getvalue()


def add_member(archive, name, data, kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_shard(path, numbers, label=lambda n: n % 3, fmt="PNG", mode="w"):
    """A shard with one sample per number: ``{n:06d}.png`` (pixel value n) and ``{n:06d}.cls``."""
    with tarfile.open(path, mode) as archive:
        for n in numbers:
            add_member(archive, f"{n:06d}.{fmt.lower()}", encoded(n, fmt))
            add_member(archive, f"{n:06d}.cls", f"{label(n)}\n".encode())
    return path


def write_shards(folder, count=6, per_shard=5, prefix="train"):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(count):
        numbers = range(s * per_shard, (s + 1) * per_shard)
        paths.append(write_shard(folder / f"{prefix}-{s:04d}.tar", numbers))
    return paths


def number_of(image):
    return int(image[0, 0, 0])


# -- patterns ---------------------------------------------------------------------------------------

def test_brace_expansion():
    assert expand_braces("train-{000..003}.tar") == [f"train-{i:03d}.tar" for i in range(4)]
    assert expand_braces("s{8..11}.tar") == ["s8.tar", "s9.tar", "s10.tar", "s11.tar"]
    assert expand_braces("s{3..1}") == ["s3", "s2", "s1"]
    assert expand_braces("{a,b}/x-{0..1}.tar") == ["a/x-0.tar", "a/x-1.tar", "b/x-0.tar", "b/x-1.tar"]
    assert expand_braces("{a,b{1..2}}.tar") == ["a.tar", "b1.tar", "b2.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"] and expand_braces("odd{}{x}.tar") == ["odd{}{x}.tar"]
    with pytest.raises(ValueError, match="more than the 1000000 accepted"):
        expand_braces("x-{0..99999999}.tar")


def test_expand_urls_globs_and_names_missing_shards(tmp_path):
    paths = [str(p) for p in write_shards(tmp_path, count=3)]
    assert expand_urls(str(tmp_path / "train-{0000..0002}.tar")) == paths
    assert expand_urls(str(tmp_path / "train-*.tar")) == paths
    assert expand_urls([paths[2], str(tmp_path / "train-000[01].tar"), paths[0]]) == [paths[2], paths[0], paths[1]]
    with pytest.raises(FileNotFoundError, match="train-0003.tar: a tar shard does not exist"):
        expand_urls(str(tmp_path / "train-{0000..0003}.tar"))
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        expand_urls(str(tmp_path / "val-*.tar"))
    (tmp_path / "dir.tar").mkdir()
    with pytest.raises(ValueError, match="dir.tar: expected a tar shard as a regular file, found a directory"):
        ShardDataset(str(tmp_path / "dir.tar"))


def test_member_names_split_at_the_first_dot_of_the_basename():
    assert split_member_name("000123.jpg") == ("000123", "jpg")
    assert split_member_name("a.b/dir/000123.CLS.txt") == ("a.b/dir/000123", "cls.txt")
    assert split_member_name("README") == (None, None) and split_member_name("dir/.hidden") == (None, None)


# -- assignment and order ---------------------------------------------------------------------------

def test_shards_are_assigned_round_robin_disjoint_and_covering(tmp_path):
    paths = [str(p) for p in write_shards(tmp_path, count=7, per_shard=1)]
    data = ShardDataset(str(tmp_path / "train-*.tar"))
    assert data.num_shards == 7
    for parts in range(1, 8):
        assigned = [data.part_shards(3, 1, part, parts) for part in range(parts)]
        flat = [p for shards in assigned for p in shards]
        assert sorted(flat) == sorted(paths) and len(flat) == len(set(flat))
        shard_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([3, 1])))
        permuted = [paths[i] for i in shard_rng.permutation(7)]
        assert assigned == [permuted[part::parts] for part in range(parts)]
    assert data.part_shards(3, 1, 0, 2) == data.part_shards(3, 1, 0, 2) != data.part_shards(3, 2, 0, 2)
    ordered = ShardDataset(str(tmp_path / "train-*.tar"), shuffle_buffer=0)
    assert ordered.part_shards(3, 1, 1, 3) == paths[1::3]


def test_more_parts_than_shards_is_a_clear_error(tmp_path):
    write_shards(tmp_path, count=3)
    data = ShardDataset(str(tmp_path / "train-*.tar"))
    with pytest.raises(ValueError, match=r"ShardDataset: 4 readers \(parts = world_size \* num_workers\) but only 3 "
                                         r"shards; every reader needs a shard of its own"):
        list(data.stream(0, 0, 0, 4))
    with pytest.raises(ValueError, match="part must be in 0..2 for 3 parts, got 3"):
        data.part_shards(0, 0, 3, 3)


def test_every_sample_comes_once_per_epoch_across_parts(tmp_path):
    write_shards(tmp_path, count=6, per_shard=5)
    data = ShardDataset(str(tmp_path / "train-*.tar"), shuffle_buffer=4, length=30)
    for parts in (1, 2, 3, 6):
        seen = []
        for part in range(parts):
            for image, label in data.stream(5, 2, part, parts):
                assert image.shape == (3, 5, 6) and image.dtype == np.uint8 and isinstance(label, int)
                assert label == number_of(image) % 3
                seen.append(number_of(image))
        assert sorted(seen) == list(range(30)) == sorted(set(seen))
    assert len(data) == 30 and sorted(number_of(x) for x, _ in data) == list(range(30))  # iter: epoch 0, seed 0


def test_buffer_shuffle_is_deterministic_per_seed_and_epoch(tmp_path):
    write_shards(tmp_path, count=2, per_shard=10)
    data = ShardDataset(str(tmp_path / "train-*.tar"), shuffle_buffer=8)

    def order(seed, epoch, part=0, parts=1):
        return [number_of(x) for x, _ in data.stream(seed, epoch, part, parts)]

    assert order(0, 0) == order(0, 0) and sorted(order(0, 0)) == list(range(20))
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    assert order(0, 0) != list(range(20))
    ordered = ShardDataset(str(tmp_path / "train-*.tar"), shuffle_buffer=0)
    assert [number_of(x) for x, _ in ordered.stream(9, 9)] == list(range(20))
    # the buffer itself: every item once, and the generator decides
    items = list(range(50))
    first = list(buffer_shuffle(items, 10, np.random.default_rng(1)))
    assert sorted(first) == items and first == list(buffer_shuffle(items, 10, np.random.default_rng(1)))
    assert sorted(buffer_shuffle(items[:3], 10, np.random.default_rng(1))) == items[:3] and first != items


def test_each_sample_is_augmented_with_its_own_generator(tmp_path):
    write_shards(tmp_path, count=2, per_shard=4)
    transform = augment.Compose([augment.RandomResizedCrop(4, scale=(0.3, 1.0)), augment.ColorJitter(0.5, 0.5)])
    data = ShardDataset(str(tmp_path / "train-*.tar"), transform=transform, shuffle_buffer=3)
    plain = ShardDataset(str(tmp_path / "train-*.tar"), shuffle_buffer=3)
    augmented = list(data.stream(4, 1, 1, 2))
    originals = list(plain.stream(4, 1, 1, 2))
    assert len(augmented) == len(originals) == 4
    for k, ((image, label), (original, same_label)) in enumerate(zip(augmented, originals)):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([4, 1, 1, k])))
        expected = transform(original.transpose(1, 2, 0), rng).transpose(2, 0, 1)
        np.testing.assert_array_equal(image, expected)
        assert label == same_label
    again = list(data.stream(4, 1, 1, 2))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(augmented, again))


def test_length_scan_and_part_lengths(tmp_path):
    write_shards(tmp_path, count=4, per_shard=3)
    (tmp_path / "train-0004.tar").unlink(missing_ok=True)
    write_shard(tmp_path / "train-0004.tar", range(12, 17))  # 5 samples
    data = ShardDataset(str(tmp_path / "train-*.tar"))
    with pytest.raises(TypeError, match="the number of samples of 5 shards is unknown; pass length= or call scan"):
        len(data)
    assert data.part_length(0, 0) is None
    lengths = data.scan()
    assert list(lengths.values()) == [3, 3, 3, 3, 5] and len(data) == 17 and data.max_label == 2
    for parts in (1, 2, 5):
        counts = [data.part_length(7, 3, part, parts) for part in range(parts)]
        assert sum(counts) == 17
        assert counts == [sum(1 for _ in data.stream(7, 3, part, parts)) for part in range(parts)]
    assert len(ShardDataset(str(tmp_path / "train-*.tar"), length=17)) == 17


def test_indexing_reads_in_stored_order(tmp_path):
    write_shards(tmp_path, count=2, per_shard=3)
    data = ShardDataset(str(tmp_path / "train-*.tar"), image_size=(4, 4))
    image, label = data[4]
    assert image.shape == (3, 4, 4) and label == 4 % 3 and number_of(image) == 4
    with pytest.raises(IndexError, match="index 6 out of range for 6 samples"):
        data[6]


# -- hostile tars -----------------------------------------------------------------------------------

def test_a_truncated_shard_names_the_shard(tmp_path):
    path = write_shard(tmp_path / "good.tar", range(4))
    content = path.read_bytes()
    member_ends = []
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            member_ends.append(member.offset_data + -(-member.size // 512) * 512)
    cuts = {"inside a header": 100, "inside a member": member_ends[0] - 100,
            "inside a later header": member_ends[1] + 300,
            "after a member, no end block": member_ends[3], "half a header": member_ends[3] + 200}
    for where, cut in cuts.items():
        bad = tmp_path / f"cut-{cut}.tar"
        bad.write_bytes(content[:cut])
        with pytest.raises(ValueError) as info:
            list(ShardDataset(str(bad), shuffle_buffer=0).stream(0, 0))
        assert str(info.value).startswith(f"ShardDataset: {bad}: truncated"), (where, str(info.value))
    assert len(list(ShardDataset(str(path), shuffle_buffer=0).stream(0, 0))) == 4


def test_a_compressed_shard_is_read_and_its_truncation_named(tmp_path):
    path = write_shard(tmp_path / "z.tar.gz", range(5), mode="w:gz")
    assert sorted(number_of(x) for x, _ in ShardDataset(str(path)).stream(0, 0)) == list(range(5))
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"ShardDataset: {bad}: truncated"):
        list(ShardDataset(str(bad)).stream(0, 0))


def test_not_a_tar_names_the_shard(tmp_path):
    bad = tmp_path / "noise.tar"
    bad.write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(ValueError, match=f"ShardDataset: {bad}: truncated or corrupt tar"):
        list(ShardDataset(str(bad)).stream(0, 0))
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"ShardDataset: {empty}: truncated or corrupt tar"):
        list(ShardDataset(str(empty)).stream(0, 0))


def test_large_members_are_refused_before_reading(tmp_path):
    path = write_shard(tmp_path / "s.tar", range(2))
    size = len(encoded(0))
    data = ShardDataset(str(path), max_member_bytes=size - 1, shuffle_buffer=0)
    with pytest.raises(ValueError, match=rf"{path}: member '000000.png' of {size} bytes is larger than the "
                                         rf"{size - 1} bytes accepted \(max_member_bytes\)"):
        list(data.stream(0, 0))


def test_an_oversized_pax_header_is_refused(tmp_path):
    path = tmp_path / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("000000.png")
        data = encoded(1)
        info.size = len(data)
        info.pax_headers = {"comment": "x" * (2 << 20)}
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=f"{path}: truncated or corrupt tar: .*pax or long-name header of"):
        list(ShardDataset(str(path)).stream(0, 0))


def test_non_regular_members_and_other_fields_are_skipped(tmp_path):
    path = tmp_path / "mixed.tar"
    with tarfile.open(path, "w") as archive:
        add_member(archive, "../../etc", b"", kind=tarfile.DIRTYPE)
        add_member(archive, "000000.png", encoded(10))
        add_member(archive, "000000.cls", b"1")
        add_member(archive, "000000.json", b'{"caption": "ignored"}')
        link = tarfile.TarInfo("000001.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        add_member(archive, "000001.cls", b"2")  # its image is a link: skipped, so it has no image
        add_member(archive, "/abs/000002.png", encoded(20))
        add_member(archive, "/abs/000002.cls", b" 0 \n")
        add_member(archive, "__meta__.txt", b"no sample")
    data = ShardDataset(str(path), shuffle_buffer=0)
    with pytest.raises(ValueError, match=rf"{path}: sample '000001' has no image \(jpg, jpeg"):
        list(data.stream(0, 0))
    with tarfile.open(path) as archive:  # the same shard without the link sample
        members = [(m, archive.extractfile(m).read() if m.isreg() else None) for m in archive.getmembers()
                   if not m.name.startswith("000001")]
    clean = tmp_path / "clean.tar"
    with tarfile.open(clean, "w") as archive:
        for member, content in members:
            archive.addfile(member, io.BytesIO(content) if content is not None else None)
    samples = list(ShardDataset(str(clean), shuffle_buffer=0).stream(0, 0))
    assert [(number_of(x), y) for x, y in samples] == [(10, 1), (20, 0)]


@pytest.mark.parametrize("label,message", [
    (b"cat", "the label must be a non-negative decimal integer"),
    (b"-1", "the label must be a non-negative decimal integer"),
    (b"9" * 40, "the label must be a non-negative decimal integer of at most 32 bytes"),
])
def test_malformed_labels_name_shard_and_sample(tmp_path, label, message):
    path = tmp_path / "labels.tar"
    with tarfile.open(path, "w") as archive:
        add_member(archive, "k7.png", encoded(1))
        add_member(archive, "k7.cls", label)
    with pytest.raises(ValueError, match=rf"ShardDataset: {path}: sample 'k7': {message}"):
        list(ShardDataset(str(path)).stream(0, 0))


def test_labels_outside_the_classes_and_repeated_fields(tmp_path):
    path = write_shard(tmp_path / "s.tar", range(3), label=lambda n: n * 4)
    with pytest.raises(ValueError, match=rf"{path}: sample '000002': label 8 is outside 0..4 \(5 classes\)"):
        list(ShardDataset(str(path), num_classes=5, shuffle_buffer=0).stream(0, 0))
    twice = tmp_path / "twice.tar"
    with tarfile.open(twice, "w") as archive:
        add_member(archive, "a.png", encoded(1))
        add_member(archive, "a.png", encoded(2))
    with pytest.raises(ValueError, match=f"{twice}: sample 'a' has the field 'png' twice"):
        list(ShardDataset(str(twice)).stream(0, 0))


def test_a_corrupt_image_names_shard_and_member(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as archive:
        add_member(archive, "x1.jpg", b"\xff\xd8\xff\xe0 broken" * 3)
        add_member(archive, "x1.cls", b"0")
    with pytest.raises(ValueError, match=rf"ShardDataset: cannot decode {path}:x1.jpg \(33 bytes\)"):
        list(ShardDataset(str(path)).stream(0, 0))


# -- load_dataset ---------------------------------------------------------------------------------------

def test_load_dataset_shards_finds_the_test_split_and_counts(tmp_path):
    write_shards(tmp_path, count=4, per_shard=3, prefix="train")
    write_shards(tmp_path, count=2, per_shard=2, prefix="val")
    splits = load_dataset(f"shards:{tmp_path}/train-{{0000..0003}}.tar", image_size=8)
    assert isinstance(splits.train, ShardDataset) and splits.train.num_shards == 4 and splits.test.num_shards == 2
    assert len(splits.train) == 12 and len(splits.test) == 4 and splits.num_classes == 3
    assert splits.classes == ["0", "1", "2"] and splits.input_shape == (3, 8, 8)
    assert splits.test.shuffle_buffer == 0 and splits.train.num_classes == 3


def test_load_dataset_shards_reads_classes_and_sizes_beside_the_shards(tmp_path, monkeypatch):
    write_shards(tmp_path / "train", count=2, per_shard=3, prefix="part")
    write_shards(tmp_path / "val", count=1, per_shard=2, prefix="part")
    (tmp_path / "train" / "classes.txt").write_text("cat\ndog\nemu\nfox\n")
    (tmp_path / "train" / "sizes.json").write_text(json.dumps({"part-0000.tar": 3, "part-0001.tar": 3}))

    def no_scan(self):
        raise AssertionError("scanned although the counts were given")

    monkeypatch.setattr(ShardDataset, "scan", no_scan)
    splits = load_dataset(f"shards:{tmp_path}/train/part-*.tar", image_size=4, test_length=2)
    assert splits.classes == ["cat", "dog", "emu", "fox"] and splits.num_classes == 4
    assert len(splits.train) == 6 and splits.train.shard_lengths is not None and len(splits.test) == 2


def test_load_dataset_shards_with_an_explicit_test_pattern_and_errors(tmp_path):
    write_shards(tmp_path, count=2, per_shard=2, prefix="a")
    write_shards(tmp_path, count=1, per_shard=2, prefix="b")
    splits = load_dataset(f"shards:{tmp_path}/a-*.tar", test_shards=str(tmp_path / "b-0000.tar"), image_size=4,
                          num_classes=3)
    assert len(splits.test) == 2 and splits.num_classes == 3
    assert load_dataset(f"shards:{tmp_path}/a-*.tar", image_size=4).test is None  # nothing named train
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        load_dataset(f"shards:{tmp_path}/missing-*.tar")
    with pytest.raises(ValueError, match="needs a file pattern: shards:PATTERN"):
        load_dataset("shards:")


def test_a_shard_dataset_survives_pickling(tmp_path):
    import pickle

    write_shards(tmp_path, count=2, per_shard=3)
    data = ShardDataset(str(tmp_path / "train-*.tar"), transform=augment.RandomResizedCrop(4), shuffle_buffer=2)
    copy = pickle.loads(pickle.dumps(data))
    ours, theirs = list(data.stream(1, 2, 1, 2)), list(copy.stream(1, 2, 1, 2))
    assert len(ours) == 3 and all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(ours, theirs))
