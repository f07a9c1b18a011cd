"""The record stage of the train pipeline: epochs, shard order, shuffle, resume.

Why a stage of its own: resuming a run at batch K must not re-read the
records of the epochs already done. Everything that orders the records is
therefore a pure function of (seed, epoch) and the shards' record counts:

- epoch `e` reads the shards in the order `file_order(seed, e, n)`;
- the shards are interleaved round-robin, `cycle_length` at a time
  (`tf.data` interleave, deterministic; `Interleave` below replays its
  order from the counts alone, no record read);
- records marked bad (`Shards.skip`, see `data/reading/bad_records.py`) are
  dropped from the epoch they were found in on, before anything counts
  them (read around: a corrupt body costs only itself); `Shards.hold`
  ones stay in their place as empty stand-ins;
- with P data-sharded pipelines, pipeline i keeps positions i, i + P, ...;
- the example shuffle is a block shuffle: positions [bS, (b + 1)S) of the
  epoch (S = `shuffle_buffer`) come out in a random order drawn from
  (seed, epoch, b). Unlike a sliding shuffle buffer, whose output at
  position p depends on everything read since the stream began, block b
  needs only its own S records.

Resuming at local example x of epoch e then costs: replay the interleave in
Python up to the first record of x's block, start each open shard at its
own offset (`TFRecordDataset(path).skip(k)`: the reader skips record bodies
without returning them), read that one block (S records) and drop the x mod
S examples before x. That is at most one block plus the open shards'
offsets, whatever e is, and the batches are exactly those of an
uninterrupted run (every random draw is keyed by the example's position).
"""

import dataclasses
import struct

import tensorflow as tf

from klassterfork import files as kf_files
# The writer's checksum (one definition of the framing).
from klassterfork.data.records import _masked_crc as masked_crc

AUTOTUNE = tf.data.AUTOTUNE
# Remote file systems (gs://, s3://, hdfs://) read through TFRecordDataset's
# default buffer: there every unbuffered header read would be a request.
REMOTE_READ_BUFFER = 256 * 1024


def count_records(path, *, verify=False):
    """(records, truncated) of a TFRecord file, from its length headers only.

    Walks the 12-byte headers (8-byte length + CRC), seeking over the record
    bodies, so it reads ~12 bytes per record. `truncated` is True when the
    file ends inside a record (a partial header or body): `records` then
    counts the complete ones before it.

    verify: bool. Also stop (`truncated`) at the first length that fails
        its CRC: the records after it cannot be found, while a record whose
        body alone is corrupt is counted (the reader passes it by its
        header). For the diagnosis; the build does not pay. Defaults to False.
    """
    size = kf_files.getsize(path)
    count, pos = 0, 0
    # Local: unbuffered, 12 bytes a read; remote (gs://, ram://): a GFile.
    opened = (kf_files.open_file(path, "rb") if kf_files.is_remote(path)
              else open(path, "rb", buffering=0))
    with opened as f:
        while pos < size:
            header = f.read(12)
            if len(header) < 12:
                return count, True
            if verify and struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
                return count, True
            (length,) = struct.unpack("<Q", header[:8])
            end = pos + 12 + length + 4
            if end > size:
                return count, True
            count += 1
            pos = end
            f.seek(pos)
    return count, False


def file_order(seed, epoch, num_files):
    """The shard order of `epoch`: int32 [num_files], a permutation.

    Stateless in (seed, epoch): the Python replay and the pipeline agree.
    """
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    draws = tf.random.stateless_uniform([num_files], key, dtype=tf.float32)
    return tf.argsort(draws, stable=True)


class Interleave:
    """Python replay of `Dataset.interleave(cycle_length=c, block_length=1)`.

    tf.data opens a shard when its round-robin turn reaches an empty slot,
    and a slot whose shard ended is emptied on that turn without output
    (checked against `tf.data` with shards of 0-6 records, sequential and
    parallel deterministic). `next()` returns the next (file, record).
    """

    def __init__(self, order, counts, cycle_length):
        self.order, self.counts = list(order), counts
        self.cycle = min(cycle_length, len(self.order))
        self.slots = [None] * self.cycle  # [file, next record] or None
        self.cursor, self.opened, self.open = 0, 0, 0

    def next(self):
        """(file, record), or None at the end of the epoch."""
        while self.opened < len(self.order) or self.open:
            slot = self.slots[self.cursor]
            if slot is not None:
                f, r = slot
                if r < self.counts[f]:
                    slot[1] += 1
                    self.cursor = (self.cursor + 1) % self.cycle
                    return f, r
                self.slots[self.cursor] = None
                self.open -= 1
                self.cursor = (self.cursor + 1) % self.cycle
            elif self.opened < len(self.order):
                self.slots[self.cursor] = [self.order[self.opened], 0]
                self.opened += 1
                self.open += 1
            else:
                self.cursor = (self.cursor + 1) % self.cycle
        return None

    def remaining(self):
        """[(file, first record)]: an interleave of these, same cycle
        length, continues exactly where this replay stands.

        The slots are listed from the cursor on; an empty slot takes the
        next unopened shard (it would open that shard on its turn, before
        any other slot could), and the unopened shards follow.
        """
        out, opened = [], self.opened
        for j in range(self.cycle):
            slot = self.slots[(self.cursor + j) % self.cycle]
            if slot is not None:
                out.append((slot[0], slot[1]))
            elif opened < len(self.order):
                out.append((self.order[opened], 0))
                opened += 1
        out += [(f, 0) for f in self.order[opened:]]
        return out


@dataclasses.dataclass(frozen=True)
class Shards:
    """The shard files of one pipeline and what is known about them.

    Records found bad are dropped from the epoch they were found in on (the
    epochs before it read them, so their positions stay as they were: a
    resume after a later discovery is still exact).

    Attributes:
        paths: tuple of str.
        counts: tuple of int. Readable records per file.
        skip: tuple of (file index, record index, epoch): bad records, read
            around (its header gives the next record's offset).
        cut: tuple of (file index, readable records, epoch): from `epoch` on
            the reader stops after `readable` records (a truncated shard or
            a broken length header: the records after it cannot be found).
        hold: tuple of (file index, record index, epoch): bad records kept in
            their place from `epoch` on as empty stand-ins (not read), for a
            pipeline that drops them later, as the run that found them did.
    """

    paths: tuple
    counts: tuple
    skip: tuple = ()
    cut: tuple = ()
    hold: tuple = ()

    def counts_at(self, epoch):
        counts = list(self.counts)
        for f, readable, since in self.cut:
            if since <= epoch:
                counts[f] = min(counts[f], readable)
        return tuple(counts)

    def skip_at(self, epoch):
        counts = self.counts_at(epoch)
        return frozenset((f, r) for f, r, since in self.skip
                         if since <= epoch and r < counts[f])

    def good_records(self, epoch=0):  # held records keep their positions
        return sum(self.counts_at(epoch)) - len(self.skip_at(epoch))

    def changes(self):
        """The epochs after 0 at which the good records change, sorted."""
        return sorted({e for *_, e in self.skip + self.cut if e > 0})


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the records of an epoch are ordered (see the module docstring).

    Attributes:
        shards: Shards. This pipeline's files ("file" sharding: its own
            subset; "data": all files).
        file_seed: int. Seeds the per-epoch shard order.
        shuffle_seed: int. Seeds the block shuffle.
        cycle_length: int. Shards read at once.
        shuffle_buffer: int. Block size S (0 = no shuffle).
        num_shares, share: int. Keep positions `share`, `share + num_shares`,
            ... of the interleaved good records ("data" sharding); 1, 0
            otherwise.
        parallel_reads: bool. Read the open shards in parallel threads
            (same order). Defaults to True.
        guarded: bool. Read with `read_shard_guarded` (an unreadable record
            is an empty stand-in, not an error): for pipelines that drop bad
            examples themselves (never rebuilt). Defaults to False.
    """

    shards: Shards
    file_seed: int
    shuffle_seed: int
    cycle_length: int
    shuffle_buffer: int
    num_shares: int = 1
    share: int = 0
    parallel_reads: bool = True
    guarded: bool = False

    def records_per_epoch(self, epoch=0):
        """Good records this pipeline reads in `epoch`."""
        total = self.shards.good_records(epoch)
        return len(range(self.share, total, self.num_shares))

    def locate(self, record):
        """(epoch, position in it) of this pipeline's good record `record`,
        counted over epochs (lengths change where records were found bad)."""
        epoch = 0  # walks the changes of the good records, not the epochs
        for change in self.shards.changes() + [None]:
            per_epoch = self.records_per_epoch(epoch)
            if not per_epoch:
                raise ValueError("no readable good records are left in the shards: "
                                 f"{len(self.shards.paths)} file(s), e.g. "
                                 f"{self.shards.paths[0]!r}")
            span = None if change is None else (change - epoch) * per_epoch
            if span is None or record < span:
                return epoch + record // per_epoch, record % per_epoch
            record -= span
            epoch = change
        raise AssertionError("unreachable")


@dataclasses.dataclass(frozen=True)
class Start:
    """Where a resumed epoch starts: shards at offsets, then a skip.

    Attributes:
        epoch: int.
        files: list of (file index, first record), the interleave's input.
        block: int. The block the start lies in.
        drop: int. Records of that block dropped after its shuffle.
        skipped: int. Records the shard readers skip (headers only).
    """

    epoch: int
    files: list
    block: int
    drop: int
    skipped: int


def plan_start(layout, epoch, record):
    """The `Start` of local record position `record` of `epoch`.

    Replays the interleave in Python to the first record of the block that
    holds `record` (at most one epoch of bookkeeping, no reading).
    """
    size = max(layout.shuffle_buffer, 1)
    block, drop = divmod(record, size)
    shared = block * size * layout.num_shares  # a multiple of num_shares
    order = file_order(layout.file_seed, epoch, len(layout.shards.paths)).numpy()
    replay = Interleave(order.tolist(), layout.shards.counts_at(epoch), layout.cycle_length)
    skip = layout.shards.skip_at(epoch)
    good = 0
    while good < shared:
        item = replay.next()
        if item is None:
            break
        good += item not in skip
    files = replay.remaining()
    skipped = sum(first for _, first in files)
    return Start(epoch=epoch, files=files, block=block, drop=drop, skipped=skipped)


def read_shard(path, first, count):
    """Records `first` .. `count - 1` of one shard (the record-reading stage).

    Local shards are read unbuffered (one read per 12-byte header, one per
    body): the default 256 KiB buffer copies every record a second time,
    ~0.07 ms of CPU per 1.3 MB record (~10 % of reading it; bench in
    BENCHMARKS.md), and `skip` then seeks over record bodies reading only
    their headers. Remote shards (a "scheme://" path) keep a read buffer,
    since there each read is a request (unless it starts at an offset: a
    buffer would read the skipped bodies). `take` stops before a truncated
    tail. A module-level function so that tests can count what is read.
    """
    reader = tf.data.TFRecordDataset(path, buffer_size=read_buffer_size(path, first))
    return reader.skip(first).take(count - first)


def read_shard_guarded(path, first, count):
    """(record, serialized) of records `first` .. `count - 1` of one shard; a
    record the reader cannot return comes out as an empty string in its
    place, and the records after it are read.

    Read as by `read_shard` until it fails (`ignore_errors` after a zip with
    the record numbers, then -1: the last number before it says where), then
    one record at a time, each reached by `skip` over the headers (a corrupt
    body costs only itself): quadratic in the shard's length, paid on failure.
    """
    first = tf.cast(first, tf.int64)
    whole = tf.data.Dataset.zip((tf.data.Dataset.range(first, count), read_shard(
        path, first, count))).ignore_errors().concatenate(
        tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), tf.constant(""))))

    def step(expected, element):
        record, serialized = element
        rest = tf.range(expected, tf.maximum(expected, tf.cast(count, tf.int64)))
        out = tf.cond(record < 0, lambda: (rest, tf.fill(tf.shape(rest), ""), rest >= 0),
                      lambda: (record[None], serialized[None], tf.constant([False])))
        return tf.where(record < 0, expected, record + 1), out

    def fetch(record, serialized, alone):
        def again():  # the record alone, or "" when it cannot be read
            return read_shard(path, record, record + 1).ignore_errors().concatenate(
                tf.data.Dataset.from_tensors("")).take(1).get_single_element()

        return record, tf.cond(alone, again, lambda: serialized)

    return whole.scan(first, tf.autograph.experimental.do_not_convert(step)).unbatch().map(
        tf.autograph.experimental.do_not_convert(fetch))


def read_buffer_size(path, first):
    """`REMOTE_READ_BUFFER` for a remote shard read from record 0, else 0."""
    remote = tf.strings.regex_full_match(path, "[a-zA-Z][a-zA-Z0-9+.-]*://.*")
    local = tf.strings.regex_full_match(path, "file://.*")
    buffered = remote & ~local & tf.equal(tf.cast(first, tf.int64), 0)
    return tf.where(buffered, tf.constant(REMOTE_READ_BUFFER, tf.int64), 0)


def _epoch_records(layout, epoch, files, firsts):
    """(epoch, file, record, serialized) of one epoch from the interleave
    input; `epoch` may be a tensor (the epochs after a resumed one)."""
    shards = layout.shards
    epoch = tf.cast(epoch, tf.int64)
    read = _shard_reader(shards, epoch, layout.guarded)
    ds = tf.data.Dataset.from_tensor_slices((files, tf.cast(firsts, tf.int64)))
    ds = ds.interleave(
        tf.autograph.experimental.do_not_convert(read),
        cycle_length=min(layout.cycle_length, len(shards.paths)),
        block_length=1,
        num_parallel_calls=AUTOTUNE if layout.parallel_reads else None,
        deterministic=True,
    )
    if shards.skip:
        bad = tf.constant([f * 2**32 + r for f, r, _ in shards.skip], tf.int64)
        since = tf.constant([e for *_, e in shards.skip], tf.int64)

        def good(e, f, r, _):
            key = tf.cast(f, tf.int64) * 2**32 + r
            return tf.logical_not(tf.reduce_any((key == bad) & (since <= e)))

        ds = ds.filter(good)
    if layout.num_shares > 1:
        # Still serialized records: the other pipelines' examples are never
        # parsed.
        ds = ds.shard(layout.num_shares, layout.share)
    return ds


def _shard_reader(shards, epoch, guarded=False):
    """`read(file, first)`: (epoch, file, record, serialized) of one shard
    from record `first` to its count in `epoch` (its cut, if any).

    A record r marked bad from `epoch` on is not read: the shard is read in
    segments around it ([first, r), [r + 1, next bad), ...; `skip` passes r
    by its header, so a corrupt body costs only itself). r comes out as an
    empty stand-in, dropped after the interleave, whose turns thus stay
    those over the whole shard (what `Interleave` replays).
    """
    paths, counts = tf.constant(list(shards.paths)), tf.constant(list(shards.counts), tf.int64)
    for f, readable, since in shards.cut:
        cut = tf.logical_and(tf.range(len(shards.paths)) == f, since <= epoch)
        counts = tf.where(cut, tf.minimum(counts, readable), counts)

    def tagged(path, f, first, count):
        if guarded:
            return read_shard_guarded(path, first, count).map(
                tf.autograph.experimental.do_not_convert(lambda r, x: (epoch, f, r, x)))
        # zip, not enumerate + map: no function call per record.
        return tf.data.Dataset.zip((
            tf.data.Dataset.from_tensors(epoch).repeat(),
            tf.data.Dataset.from_tensors(f).repeat(),
            tf.data.Dataset.range(first, count), read_shard(path, first, count)))

    if not shards.skip + shards.hold:  # held records: stand-ins kept after the interleave
        return lambda f, first: tagged(tf.gather(paths, f), f, first, tf.gather(counts, f))
    bad_file, bad_record, bad_since = (tf.constant(column, dtype) for column, dtype in zip(
        zip(*shards.skip + shards.hold), (tf.int32, tf.int64, tf.int64)))

    def read(f, first):
        path, count = tf.gather(paths, f), tf.gather(counts, f)
        here = ((bad_file == f) & (bad_since <= epoch) & (bad_record >= first)
                & (bad_record < count))
        holes = tf.unique(tf.sort(tf.boolean_mask(bad_record, here))).y

        def segment(start, end):  # then hole `end`'s stand-in (none at the end)
            hole = tf.data.Dataset.from_tensors((epoch, f, end, tf.constant(""))).take(
                tf.cast(end < count, tf.int64))
            return tagged(path, f, start, end).concatenate(hole)

        starts, ends = tf.concat([[first], holes + 1], 0), tf.concat([holes, [count]], 0)
        return tf.data.Dataset.from_tensor_slices((starts, ends)).flat_map(
            tf.autograph.experimental.do_not_convert(segment))

    return read


def _block_shuffle(ds, layout, epoch, first_block, drop=0):
    """Blocks of S records, each in a random order keyed by (epoch, block);
    the first `drop` records of the first block are dropped after its
    shuffle."""
    size = layout.shuffle_buffer
    if not size:
        return ds.skip(drop)
    base = tf.stack([tf.constant(layout.shuffle_seed, tf.int64),
                     tf.cast(epoch, tf.int64)])

    def shuffle(block, window):
        key = tf.random.experimental.stateless_fold_in(base, first_block + block)
        seed = tf.random.stateless_uniform(
            [], key, minval=1, maxval=2**62, dtype=tf.int64)
        shuffled = _fixed_seed_shuffle(tf.data.Dataset.zip(window), size, seed)
        # Inside the block: `skip` on the flat_map reads further blocks ahead.
        return shuffled.skip(tf.where(block == 0, tf.constant(drop, tf.int64), 0))

    return ds.window(size).enumerate().flat_map(
        tf.autograph.experimental.do_not_convert(shuffle))


def _fixed_seed_shuffle(ds, size, seed):
    """`ds.shuffle(size, seed)` usable inside a dataset function.

    `Dataset.shuffle` inside a function creates a seed-generator resource
    that makes the iterator impossible to checkpoint; the V1 kernel with a
    fixed (seed, seed2) pair keeps its generator inside the iterator. Both
    seeds must not be 0 (that means "random").
    """
    variant = tf.raw_ops.ShuffleDataset(
        input_dataset=tf.data.experimental.to_variant(ds),
        buffer_size=tf.constant(size, tf.int64), seed=seed,
        seed2=tf.constant(1, tf.int64), reshuffle_each_iteration=False,
        output_types=[s.dtype for s in tf.nest.flatten(ds.element_spec)],
        output_shapes=[s.shape for s in tf.nest.flatten(ds.element_spec)],
    )
    return tf.data.experimental.from_variant(variant, ds.element_spec)


def records(layout, *, start_record=0, repeat=True):
    """The record stage: `(file, record, serialized)` of this pipeline.

    Args:
        layout: Layout.
        start_record: int. Local good-record position to start at, counted
            over epochs (epoch = start_record // records_per_epoch()).
        repeat: bool. Run epochs forever; False: epoch 0 only.

    Returns:
        (dataset, Start): the dataset of (epoch int64, file int32, record
        int64, serialized string) from `start_record` on, and the plan of
        its first epoch (what the readers skip).
    """
    epoch, record = layout.locate(start_record)
    if not repeat and epoch > 0:
        return tf.data.Dataset.from_tensor_slices((tf.zeros([0], tf.int64), tf.zeros(
            [0], tf.int32), tf.zeros([0], tf.int64), tf.zeros([0], tf.string))), None
    start = plan_start(layout, epoch, record)
    files = tf.constant([f for f, _ in start.files], tf.int32)
    firsts = tf.constant([r for _, r in start.files], tf.int64)
    ds = _block_shuffle(_epoch_records(layout, epoch, files, firsts), layout, epoch,
                        start.block, start.drop)
    if repeat:
        n = len(layout.shards.paths)

        def epoch_records(e):
            order = file_order(layout.file_seed, e, n)
            ds = _epoch_records(layout, e, order, tf.zeros([n], tf.int64))
            return _block_shuffle(ds, layout, e, 0)

        ds = ds.concatenate(
            tf.data.Dataset.range(epoch + 1, 2**62).flat_map(
                tf.autograph.experimental.do_not_convert(epoch_records)))
    return ds, start
