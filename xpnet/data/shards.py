"""Sharded tar datasets in the webdataset layout, streamed: ``ShardDataset`` and ``expand_urls``.

Host-side module: it imports NumPy. A shard is a tar file whose members, grouped by basename, are
the samples: ``000123.jpg`` + ``000123.cls`` is one sample, its key ``000123`` being the member
name up to the first dot of its last path component and ``jpg`` / ``cls`` its fields. The image is
the first field among ``IMAGE_FIELDS`` (decoded by ``xpnet.data.decode``: simplejpeg for JPEGs
when installed, else Pillow), the label the first among ``LABEL_FIELDS`` (a decimal integer as
ASCII text). Members of a sample follow each other in the tar, as webdataset writes them; other
fields (``.json``, ``.txt``, ...) are skipped unread.

Reading is sequential (``tarfile`` in stream mode: a shard is read once, front to back, never
seeked, so a shard on a network file system costs one pass), which is why these datasets are
streams rather than indexable datasets: ``stream(seed, epoch, part, parts)`` yields the samples
of one reader; the DataLoader gives each of its ``parts = world_size * num_workers`` readers its
own ``part`` (``rank * num_workers + worker_id``), so two readers never read the same shard.

Order and randomness, all from ``seed`` and ``epoch`` (the same on every rank and worker):

* the shard list is permuted with ``SeedSequence([seed, epoch])`` (not when ``shuffle_buffer=0``)
  and shard ``i`` of the permuted list goes to part ``i % parts``;
* a part's samples pass through a shuffle buffer of ``shuffle_buffer`` samples drawing from
  ``SeedSequence([seed, epoch, part])``: once the buffer is full, each new sample replaces a
  uniformly chosen one, which is emitted; at the end the rest comes out in a random order;
* the ``k``-th sample a part emits is augmented with a generator from
  ``SeedSequence([seed, epoch, part, k])``.

Shards are hostile input: every shard must be a regular file; a member larger than
``max_member_bytes`` is refused before it is read; pax and GNU long-name headers above
``MAX_HEADER_BYTES`` are refused (tarfile would read them whole); directories, links, devices
and sparse members are skipped (nothing is ever extracted, so member paths do not matter); a
truncated or corrupt tar, including one that ends without its end-of-archive block, is a
ValueError naming the shard; a sample with an image but no label (or the reverse), a repeated
field or a malformed label is a ValueError naming the shard and the sample.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
import zlib

import numpy as np

from .augment import to_chw
from .decode import DECODERS, decode_image
from .readers.folder import size_pair
from ..safe_io import open_regular, read_bounded, regular_size

IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "ppm", "pgm", "bmp", "gif", "tif", "tiff")
LABEL_FIELDS = ("cls", "cls.txt", "label", "target")
MAX_MEMBER_BYTES = 64 << 20   # one encoded image at most; far above any photograph
MAX_HEADER_BYTES = 1 << 20    # a pax / GNU long-name header at most
MAX_LABEL_BYTES = 32          # a decimal label, with whitespace
MAX_SHARDS = 1_000_000        # the most shards a pattern may expand to
MAX_METADATA_BYTES = 16 << 20  # classes.txt, sizes.json
_HEADER_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                 tarfile.GNUTYPE_LONGLINK)
_NUMBER = re.compile(r"[+-]?[0-9]+")


# ------------------------------------------------------------------------------------ patterns
def _brace_group(text):
    """(start, end) of the first top-level ``{...}`` of ``text``, or None."""
    depth, start = 0, None
    for position, char in enumerate(text):
        if char == "{":
            if depth == 0:
                start = position
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                return start, position
    return None


def _split_top(body):
    parts, depth, current = [], 0, []
    for char in body:
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += (char == "{") - (char == "}")
        current.append(char)
    parts.append("".join(current))
    return parts


def _alternatives(body, pattern):
    match = re.fullmatch(r"([0-9]+)\.\.([0-9]+)", body)
    if match:
        first, last = match.groups()
        low, high = int(first), int(last)
        if abs(high - low) + 1 > MAX_SHARDS:
            raise ValueError(f"shard pattern {pattern!r}: the range {{{body}}} has {abs(high - low) + 1} values, "
                             f"more than the {MAX_SHARDS} accepted (MAX_SHARDS)")
        padded = (len(first) > 1 and first[0] == "0") or (len(last) > 1 and last[0] == "0")
        width = max(len(first), len(last)) if padded else 0
        step = 1 if high >= low else -1
        return [str(v).zfill(width) for v in range(low, high + step, step)]
    if "," in body:
        return _split_top(body)
    return None  # not an expansion: the braces are literal


def expand_braces(pattern):
    """``'train-{000..002}.tar'`` -> ``['train-000.tar', 'train-001.tar', 'train-002.tar']``.

    ``{a..b}`` is a decimal range (ascending or descending; zero-padded to the longer bound when
    a bound has a leading zero), ``{x,y}`` a list of alternatives (each may hold braces again);
    other braces are kept as they are. More than ``MAX_SHARDS`` results is a ValueError."""
    results, pending = [], [pattern]
    while pending:
        text = pending.pop(0)
        found, offset = None, 0
        while True:
            group = _brace_group(text[offset:])
            if group is None:
                break
            start, end = group[0] + offset, group[1] + offset
            choices = _alternatives(text[start + 1:end], pattern)
            if choices is not None:
                found = (start, end, choices)
                break
            offset = start + 1
        if found is None:
            results.append(text)
        else:
            start, end, choices = found
            pending[:0] = [text[:start] + choice + text[end + 1:] for choice in choices]
        if len(results) + len(pending) > MAX_SHARDS:
            raise ValueError(f"shard pattern {pattern!r} expands to more than {MAX_SHARDS} names (MAX_SHARDS)")
    return results


def expand_urls(urls):
    """The shard paths of a pattern or a list of patterns: braces expanded (``expand_braces``), then
    ``*``, ``?`` and ``[...]`` globbed (sorted matches), ``~`` expanded, duplicates dropped. Every
    path must be a regular file; a glob matching nothing, or a missing or non-regular file, is an
    error naming it."""
    patterns = [urls] if isinstance(urls, (str, os.PathLike)) else list(urls)
    if not patterns:
        raise ValueError("ShardDataset: no shard pattern given")
    found, seen = [], set()
    for pattern in patterns:
        pattern = os.fspath(pattern)
        for name in expand_braces(pattern):
            name = os.path.expanduser(name)
            if glob.has_magic(name):
                matches = sorted(glob.glob(name))
                if not matches:
                    raise FileNotFoundError(f"ShardDataset: no shard matches {name!r} (from the pattern {pattern!r})")
            else:
                matches = [name]
            for path in matches:
                if path not in seen:
                    regular_size(path, "a tar shard")
                    seen.add(path)
                    found.append(path)
        if len(found) > MAX_SHARDS:
            raise ValueError(f"ShardDataset: more than {MAX_SHARDS} shards (MAX_SHARDS)")
    return found


# ------------------------------------------------------------------------------------- reading
class _OversizedHeader(Exception):
    pass


def _recording_tarinfo():
    """A TarInfo class that remembers how the archive ended (tarfile itself ends silently on a
    missing or partial header) and refuses oversized pax / long-name headers before tarfile
    reads them whole. One class per archive, so concurrent readers never share the record."""

    class RecordingTarInfo(tarfile.TarInfo):
        end = None

        @classmethod
        def fromtarfile(cls, archive):
            try:
                member = super().fromtarfile(archive)
            except tarfile.HeaderError as exc:
                cls.end = exc
                raise
            cls.end = None
            return member

        @classmethod
        def frombuf(cls, buf, encoding, errors):
            member = super().frombuf(buf, encoding, errors)
            if member.type in _HEADER_TYPES and member.size > MAX_HEADER_BYTES:
                raise _OversizedHeader(f"a pax or long-name header of {member.size} bytes, more than the "
                                       f"{MAX_HEADER_BYTES} accepted (MAX_HEADER_BYTES)")
            return member

    return RecordingTarInfo


def split_member_name(name):
    """``('dir/000123', 'jpg')`` for ``'dir/000123.jpg'``: the key is the name up to the first dot
    of its last component, the field the rest, lower-cased; ``(None, None)`` without a dot."""
    folder, _, base = name.rpartition("/")
    stem, dot, field = base.partition(".")
    if not dot or not stem or not field:
        return None, None
    return (f"{folder}/{stem}" if folder else stem), field.lower()


def read_shard(path, max_member_bytes=MAX_MEMBER_BYTES, read_images=True):
    """Yield ``(key, {field: bytes})`` for each sample of the tar shard ``path`` holding an image or
    a label field (image bytes are None with ``read_images=False``). Errors name the shard."""
    wanted = set(IMAGE_FIELDS) | set(LABEL_FIELDS)
    with open_regular(path, "a tar shard") as (handle, _):
        recorder = _recording_tarinfo()
        try:
            with tarfile.open(fileobj=handle, mode="r|*", tarinfo=recorder) as archive:
                key, fields = None, {}
                for member in archive:
                    if not member.isreg() or member.issparse():
                        continue
                    member_key, field = split_member_name(member.name)
                    if field not in wanted:
                        continue
                    if member.size > max_member_bytes:
                        raise ValueError(f"ShardDataset: {path}: member {member.name!r} of {member.size} bytes is "
                                         f"larger than the {max_member_bytes} bytes accepted (max_member_bytes)")
                    if member_key != key:
                        if fields:
                            yield key, fields
                        key, fields = member_key, {}
                    if field in fields:
                        raise ValueError(f"ShardDataset: {path}: sample {key!r} has the field {field!r} twice")
                    if field in LABEL_FIELDS or read_images:
                        fields[field] = archive.extractfile(member).read()
                    else:
                        fields[field] = None
                if not isinstance(recorder.end, tarfile.EOFHeaderError):  # checked before the last sample:
                    reason = f" ({recorder.end})" if recorder.end is not None else ""  # it may be cut short
                    raise ValueError(f"ShardDataset: {path}: truncated tar: it ends without the end-of-archive "
                                     f"block{reason}")
                if fields:
                    yield key, fields
        except (tarfile.TarError, EOFError, zlib.error, _OversizedHeader) as exc:
            raise ValueError(f"ShardDataset: {path}: truncated or corrupt tar: {type(exc).__name__}: {exc}") from None


def parse_label(data, where):
    """A non-negative int from the ASCII text ``data``; anything else is a ValueError naming
    ``where``."""
    text = data.decode("ascii", errors="replace").strip() if len(data) <= MAX_LABEL_BYTES else None
    if text is None or not _NUMBER.fullmatch(text) or int(text) < 0:
        shown = data[:MAX_LABEL_BYTES]
        raise ValueError(f"ShardDataset: {where}: the label must be a non-negative decimal integer of at most "
                         f"{MAX_LABEL_BYTES} bytes, found {shown!r}{'...' if len(data) > MAX_LABEL_BYTES else ''}")
    return int(text)


def _split_sample(path, key, fields, num_classes):
    """(image field or None, label) of one sample, or None for a group with neither (metadata)."""
    image = next((f for f in IMAGE_FIELDS if f in fields), None)
    label_field = next((f for f in LABEL_FIELDS if f in fields), None)
    if image is None and label_field is None:
        return None
    where = f"{path}: sample {key!r}"
    if image is None or label_field is None:
        missing = f"image ({', '.join(IMAGE_FIELDS)})" if image is None else f"label ({', '.join(LABEL_FIELDS)})"
        raise ValueError(f"ShardDataset: {where} has no {missing}; found the fields {sorted(fields)}")
    label = parse_label(fields[label_field], where)
    if num_classes is not None and label >= num_classes:
        raise ValueError(f"ShardDataset: {where}: label {label} is outside 0..{num_classes - 1} "
                         f"({num_classes} classes)")
    return image, label


def buffer_shuffle(items, size, rng):
    """``items`` reordered through a buffer of ``size``: once it is full, each new item takes the
    place of a uniformly chosen one, which is emitted; the rest comes out shuffled at the end."""
    buffer = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        chosen = int(rng.integers(size))
        yield buffer[chosen]
        buffer[chosen] = item
    rng.shuffle(buffer)
    yield from buffer


def _generator(*entropy):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(v) for v in entropy])))


def _whole(value, name, low=0):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"ShardDataset: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------- dataset
class ShardDataset:
    """A stream of ``(image uint8 (C, H, W), label int)`` samples from webdataset tar shards.

    urls            a pattern (``'/data/train-{000000..000146}.tar'``, globs allowed) or a list
                    of patterns / paths (``expand_urls``)
    transform       a per-sample augmentation ``t(img, rng)`` on uint8 (H, W, C) (see
                    ``xpnet.data.augment``); its result is converted to (C, H, W)
    shuffle_buffer  samples held for shuffling (default 1000); 0 reads shards and samples in
                    their stored order (evaluation); 1 permutes the shards only
    image_size      int or (height, width) every image is resized to before the transform (None
                    keeps the stored size, which must then be uniform after the transform)
    decode          ``'auto'``, ``'simplejpeg'`` or ``'pillow'`` (see ``decode.decode_image``), or
                    a function ``decode(data: bytes, name: str) -> uint8 (H, W, C)``
    mode            ``'RGB'`` or ``'L'``
    length          the number of samples, when known (``len()`` needs it, or ``scan()``)
    num_classes     when known: labels at or above it are an error naming the shard
    max_member_bytes  the largest member read (default ``MAX_MEMBER_BYTES``)
    """

    def __init__(self, urls, transform=None, shuffle_buffer=1000, image_size=None, decode="auto", mode="RGB",
                 length=None, num_classes=None, max_member_bytes=MAX_MEMBER_BYTES):
        if transform is not None and not callable(transform):
            raise TypeError(f"ShardDataset: transform must be callable as transform(img, rng), got {transform!r}")
        if not callable(decode) and decode not in DECODERS:
            raise ValueError(f"ShardDataset: decode must be one of {DECODERS} or a function, got {decode!r}")
        if mode not in ("RGB", "L"):
            raise ValueError(f"ShardDataset: mode must be 'RGB' or 'L', got {mode!r}")
        self.urls = expand_urls(urls)
        self.transform = transform
        self.shuffle_buffer = _whole(shuffle_buffer, "shuffle_buffer")
        self.image_size = size_pair(image_size, "ShardDataset: image_size")
        self.decode = decode
        self.mode = mode
        self.length = None if length is None else _whole(length, "length")
        self.num_classes = None if num_classes is None else _whole(num_classes, "num_classes", 1)
        self.max_member_bytes = _whole(max_member_bytes, "max_member_bytes", 1)
        self.shard_lengths = None  # {path: samples}, from scan() or a sizes.json
        self.max_label = None  # the largest label, from scan()

    @property
    def num_shards(self) -> int:
        return len(self.urls)

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError(f"ShardDataset: the number of samples of {self.num_shards} shards is unknown; pass "
                            f"length= or call scan() (one pass over the shards)")
        return self.length

    # -- order ----------------------------------------------------------------------------------
    def part_shards(self, seed, epoch, part=0, parts=1) -> list:
        """The shards reader ``part`` of ``parts`` reads in ``epoch``, in reading order."""
        seed, epoch = _whole(seed, "seed"), _whole(epoch, "epoch")
        parts = _whole(parts, "parts", 1)
        part = _whole(part, "part")
        if part >= parts:
            raise ValueError(f"ShardDataset: part must be in 0..{parts - 1} for {parts} parts, got {part}")
        if parts > self.num_shards:
            raise ValueError(f"ShardDataset: {parts} readers (parts = world_size * num_workers) but only "
                             f"{self.num_shards} shards; every reader needs a shard of its own: use at most "
                             f"{self.num_shards} readers, or split the data into more shards")
        order = list(self.urls)
        if self.shuffle_buffer > 0:
            order = [order[i] for i in _generator(seed, epoch).permutation(len(order))]
        return order[part::parts]

    def part_length(self, seed, epoch, part=0, parts=1):
        """Samples reader ``part`` emits in ``epoch``, when the shard lengths are known, else None."""
        if self.shard_lengths is None:
            return None
        return sum(self.shard_lengths[p] for p in self.part_shards(seed, epoch, part, parts))

    # -- reading --------------------------------------------------------------------------------
    def _raw(self, shards, read_images=True):
        """(name, image bytes, label) of each sample of ``shards``, in stored order."""
        for path in shards:
            for key, fields in read_shard(path, self.max_member_bytes, read_images):
                split = _split_sample(path, key, fields, self.num_classes)
                if split is not None:
                    image, label = split
                    yield f"{path}:{key}.{image}", fields[image], label

    def _finish(self, raw, rng):
        name, data, label = raw
        try:
            if callable(self.decode):
                img = np.asarray(self.decode(data, name))
            else:
                hint = getattr(self.transform, "decode_hint", None) if self.image_size is None else None
                img = decode_image(data, name, mode=self.mode, size=self.image_size, min_size=hint,
                                   decoder=self.decode, owner="ShardDataset")
        except MemoryError:
            raise MemoryError(f"{name}: out of memory while decoding an image ({len(data)} bytes)") from None
        if self.transform is not None:
            img = self.transform(img, rng)
        return to_chw(img, self.transform), label

    def stream(self, seed, epoch, part=0, parts=1):
        """Yield the ``(image uint8 (C, H, W), label int)`` samples of reader ``part`` of ``parts``
        in ``epoch``: its shards (``part_shards``), through the shuffle buffer, each augmented with
        its own generator (see the module docstring)."""
        for item, rng in self.encoded_stream(seed, epoch, part, parts):
            yield self._finish(item, rng)

    def encoded_stream(self, seed, epoch, part=0, parts=1):
        """What ``stream`` decodes, in its order: ``((name, image bytes, label), rng)`` per sample,
        ``rng`` the sample's own generator (None without a transform); ``decode_on_device`` reads this."""
        shards = self.part_shards(seed, epoch, part, parts)
        raw = self._raw(shards)
        if self.shuffle_buffer > 1:
            raw = buffer_shuffle(raw, self.shuffle_buffer, _generator(seed, epoch, part))
        for k, item in enumerate(raw):
            yield item, (_generator(seed, epoch, part, k) if self.transform is not None else None)

    def __iter__(self):
        """All samples of epoch 0 with seed 0, one reader."""
        return self.stream(0, 0)

    def __getitem__(self, index):
        """Sample ``index`` in stored order (shards as listed, no shuffling), the transform driven
        by ``np.random.default_rng(index)``. It reads the shards from the start up to that sample:
        meant for inspecting the first samples (a sample shape), not for training (use
        ``stream``)."""
        index = _whole(index, "index")
        count = 0
        for count, raw in enumerate(self._raw(self.urls), start=1):
            if count - 1 == index:
                return self._finish(raw, np.random.default_rng(index))
        raise IndexError(f"ShardDataset: index {index} out of range for {count} samples")

    def scan(self) -> dict:
        """Read every shard once (labels only; image members are skipped unread) to count its
        samples and check its labels: sets ``shard_lengths``, ``length`` and ``max_label`` and
        returns ``shard_lengths``."""
        lengths, top = {}, -1
        for path in self.urls:
            count = 0
            for _, _, label in self._raw([path], read_images=False):
                count += 1
                top = max(top, label)
            lengths[path] = count
        self.shard_lengths, self.length, self.max_label = lengths, sum(lengths.values()), top
        return lengths

    def read_sizes(self, path):
        """Take the shard lengths from a JSON file ``{"shard file name": samples, ...}`` (the
        ``sizes.json`` webdataset writers leave beside the shards); True when it covers every
        shard (then ``length`` and ``shard_lengths`` are set), else False."""
        content = read_bounded(path, "a shard sizes file", MAX_METADATA_BYTES, "MAX_METADATA_BYTES")
        try:
            sizes = json.loads(content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"ShardDataset: {path}: not a JSON object of shard sizes ({exc})") from None
        if not isinstance(sizes, dict):
            raise ValueError(f"ShardDataset: {path}: expected a JSON object {{shard: samples}}, got "
                             f"{type(sizes).__name__}")
        lengths = {}
        for url in self.urls:
            count = sizes.get(os.path.basename(url), sizes.get(url))
            if count is None:
                return False
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"ShardDataset: {path}: the size of {os.path.basename(url)} must be a "
                                 f"non-negative integer, got {count!r}")
            lengths[url] = count
        self.shard_lengths, self.length = lengths, sum(lengths.values())
        return True

    def __repr__(self):
        size = "unknown" if self.length is None else self.length
        return (f"ShardDataset({self.num_shards} shards, {size} samples, shuffle_buffer={self.shuffle_buffer}, "
                f"image_size={self.image_size}, transform={self.transform!r})")
