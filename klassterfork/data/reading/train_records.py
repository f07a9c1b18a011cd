"""The train pipeline's record stream: which shards a pipeline reads, its
examples from any start, and the bad records it finds.

`shard_policy_for` / `pipeline_seed` split the shards over input pipelines;
`read_shards` counts records by their headers and notes truncated shards;
`_examples` is the stream of (index, (epoch, file, record, serialized)) from
a given example on (the record stage of `resume.py`); `_diagnoser` replays a
failed step's examples one by one to name the bad record.
"""

import json
import logging
import os
import re

import numpy as np
import tensorflow as tf

from klassterfork import files as kf_files
from klassterfork.data import records
from klassterfork.data.reading import bad_records as bad_records_lib
from klassterfork.data.reading import resume
from klassterfork.data.spec import SHARD_POLICIES
from klassterfork.data.transforms.checks import check_choice

LOG = logging.getLogger(__name__)


def shard_policy_for(num_files, num_input_pipelines, shard_policy="auto"):
    """How `num_files` shard files are split over the input pipelines.

    "auto" chooses "file" when every pipeline gets whole files and the split
    is even enough: the file count divides evenly (`num_files % P == 0`), or
    every pipeline gets at least 4 files (`num_files >= 4 * P`, so no
    pipeline reads more than 5/4 of another's share of balanced shards).
    Otherwise "data": every pipeline reads all records and keeps every P-th
    one before parsing (reading is cheap next to JPEG decoding).

    Args:
        num_files: int. Shard files of the split.
        num_input_pipelines: int. P.
        shard_policy: str. "auto", "file" or "data". Defaults to "auto".

    Returns:
        str. "file" or "data" ("file" when P = 1: nothing to split).

    Raises:
        ValueError: on an unknown policy, or "file" with fewer files than
            pipelines (a pipeline would get no data).
    """
    check_choice(shard_policy, SHARD_POLICIES, "shard_policy")
    if num_input_pipelines == 1:
        return "file"
    if shard_policy == "file" and num_files < num_input_pipelines:
        raise ValueError(
            "`shard_policy`='file' needs at least one shard file per input "
            f"pipeline. Received: {num_files} file(s) for "
            f"num_input_pipelines={num_input_pipelines}; use 'data' or 'auto'"
        )
    if shard_policy != "auto":
        return shard_policy
    even = num_files % num_input_pipelines == 0
    if even or num_files >= 4 * num_input_pipelines:
        return "file"
    return "data"


def pipeline_seed(seed, input_pipeline_id):
    """The shuffle seed of input pipeline `input_pipeline_id`.

    Pipeline 0 keeps `seed` (a single pipeline shuffles as it always did);
    the others get a seed mixed from (seed, id) by `np.random.SeedSequence`,
    so two workers do not shuffle alike.

    Returns:
        int in [0, 2**31).
    """
    if input_pipeline_id == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed), int(input_pipeline_id)])
    return int(state.generate_state(1, np.uint32)[0] >> 1)


def read_shards(paths, log=None, *, epoch_of=None, hold=False):
    """`resume.Shards` of `paths`: record counts from the headers, bad records.

    A shard that ends inside a record is reported (file name, records
    readable) and added to `log` as cut there, from the epoch it is found
    in (the epochs before read it whole, so their positions stay as they
    were); the records `log` names are skipped. A cut already in `log`
    keeps its epoch.

    Args:
        paths: list of str.
        log: `bad_records.BadRecordLog` or None.
        epoch_of: callable `resume.Shards -> int` or None. The epoch the
            pipeline starts in, reckoned on the shards as known before this
            call's finds (`Layout.locate` of the start record); None: 0.
        hold: bool. Hold the records a pipeline dropped in place
            (`BadRecordLog.for_paths`) instead of skipping them: for a
            pipeline that drops them alike (`Placement.skip_bad_records`).

    Raises:
        ValueError: when the files hold no record at all.
    """
    log = log if log is not None else bad_records_lib.BadRecordLog()
    counts, found = [], []
    for path in paths:
        count, truncated = resume.count_records(path)
        if truncated:
            found.append((path, count))
        counts.append(count)
    if not sum(counts):
        raise ValueError(f"`files` hold no records. Received: {len(paths)} file(s), "
                         f"e.g. {paths[0]!r}")
    known = {e["shard"] for e in log.entries if "readable" in e}
    found = [(p, c) for p, c in found if os.path.basename(p) not in known]
    if found:
        epoch = 0
        if epoch_of is not None:
            epoch = int(epoch_of(resume.Shards(tuple(paths), tuple(counts),
                                               *log.for_paths(paths, hold))))
        log.add([bad_records_lib.cut_entry(
            path, count, f"truncated: the file ends inside record {count} "
            f"({os.path.getsize(path)} bytes)", epoch=epoch) for path, count in found])
    return resume.Shards(tuple(paths), tuple(counts), *log.for_paths(paths, hold))


def stream_start(layout, target, repeated_views):
    """The stream position (the enumerate index, which keys the draws) of
    the example read after `target` others, when every held record
    (`Shards.hold`) is dropped after the record stage: `target` plus the
    held examples before it, as the run that dropped them counted (its
    batch N began after N * batch examples that were not dropped)."""
    hold, k = layout.shards.hold, repeated_views
    if not hold:
        return target
    first, position, epoch, begin = min(since for *_, since in hold), target, 0, 0
    while True:
        length = layout.records_per_epoch(epoch) * k
        if not length:
            return position  # `Layout.locate` says why
        if epoch >= first and layout.num_shares == 1 and begin + length <= position:
            # A whole epoch before the start: each active held record is in it.
            position += len(_held_at(layout.shards, epoch)) * k
        elif epoch >= first:
            for dropped in _held_positions(layout, epoch, k):
                position += begin + dropped <= position
        if position < begin + length:
            return position
        begin, epoch = begin + length, epoch + 1


def _held_at(shards, epoch):
    counts = shards.counts_at(epoch)
    return {(f, r) for f, r, since in shards.hold
            if since <= epoch and r < counts[f]} - shards.skip_at(epoch)


def _held_positions(layout, epoch, repeated_views):
    """Sorted example positions, within `epoch` of this pipeline, of its held
    records: the interleave replayed to them (`resume.Interleave`), their
    share, then their place in their shuffle block (`_block_order`)."""
    shards, held = layout.shards, _held_at(layout.shards, epoch)
    skip = shards.skip_at(epoch)
    order = resume.file_order(layout.file_seed, epoch, len(shards.paths)).numpy().tolist()
    replay = resume.Interleave(order, shards.counts_at(epoch), layout.cycle_length)
    good, local = 0, []
    while held:
        item = replay.next()
        if item is None:
            break
        if item in held:
            held.discard(item)
            if good % layout.num_shares == layout.share:
                local.append(good // layout.num_shares)
        good += item not in skip
    size, per, out = layout.shuffle_buffer, layout.records_per_epoch(epoch), []
    for x in local:
        if size:
            block, within = divmod(x, size)
            x = block * size + _block_order(layout, epoch, block, min(size, per - block * size)
                                            ).index(within)
        out += [x * repeated_views + v for v in range(repeated_views)]
    return sorted(out)


def _block_order(layout, epoch, block, n):
    """[position in the block before the shuffle] in the order
    `resume._block_shuffle` gives out block `block` of `epoch` (n records):
    the same seed and buffer, and its order depends on n only."""
    base = tf.constant([layout.shuffle_seed, epoch], tf.int64)
    key = tf.random.experimental.stateless_fold_in(base, tf.constant(block, tf.int64))
    seed = tf.random.stateless_uniform([], key, minval=1, maxval=2**62, dtype=tf.int64)
    ds = resume._fixed_seed_shuffle(tf.data.Dataset.range(n), layout.shuffle_buffer, seed)
    return [int(x) for x in ds]


def _examples(layout, *, start_example, repeated_views, repeat, seeded=True):
    """(index, (epoch, file, record, serialized)) from local example
    `start_example` on.

    `index` counts this pipeline's examples over epochs (the per-example
    key); an epoch is `layout.records_per_epoch(epoch) * repeated_views`
    examples. The record stage (`resume.records`) starts each open shard
    at its own offset, so a resume reads one shuffle block, not the epochs
    already done.
    """
    start_record, view = divmod(start_example, repeated_views)
    ds, start = resume.records(layout, start_record=start_record, repeat=repeat)
    if start_example and start is not None:
        per_epoch = layout.records_per_epoch(start.epoch) * repeated_views
        exact = "exact" if seeded else (
            "NOT exact: no seed was given, so this run draws other clips and order")
        within = layout.locate(start_record)[1] * repeated_views + view
        LOG.info(
            "resume at example %d (epoch %d, example %d of %d): the open shards skip "
            "%d records by their headers, then one shuffle block is read and its "
            "first %d records dropped; %s", start_example, start.epoch, within,
            per_epoch, start.skipped, start.drop, exact)
    if repeated_views > 1:
        # k copies of each record in a row; the enumerate below gives every
        # copy its own key, hence its own clip, crop and flip.
        ds = ds.flat_map(lambda *x: tf.data.Dataset.from_tensors(x).repeat(repeated_views))
        ds = ds.skip(view)
    return ds.enumerate(start=start_example)


def _diagnoser(layout, make_clip, *, batch_size, repeated_views, repeat):
    """`fn(first_batch, num_batches) -> bad-record entries` (see
    `bad_records.BadRecordLog.diagnose`): replays those batches' examples
    and parses + decodes each eagerly with its own key."""
    name = _example_namer(layout, make_clip, repeated_views=repeated_views, repeat=repeat)
    return lambda first_batch, num_batches: name(first_batch * batch_size,
                                                 num_batches * batch_size)


def _example_namer(layout, make_clip, *, repeated_views, repeat):
    """`fn(first_example, num_examples) -> bad-record entries`: replays those
    examples and parses + decodes each eagerly with its own key."""

    def diagnose(first_example, num_examples):
        ds = _examples(layout, start_example=first_example,
                       repeated_views=repeated_views, repeat=repeat)
        found, seen = [], set()
        it = iter(ds.take(num_examples))
        while True:
            try:
                index, (epoch, f, r, serialized) = next(it)
            except StopIteration:
                break
            except tf.errors.OpError as err:  # the shard reader itself failed
                found += _unreadable_shards(layout, first_example // repeated_views, err)
                break
            f, r = int(f), int(r)
            if (f, r) in seen:
                continue
            try:
                make_clip(index, (epoch, f, r, serialized))
            except tf.errors.OpError as err:
                seen.add((f, r))
                if not serialized.numpy():  # a guarded reader's stand-in: read it again
                    found.append(name_record(layout.shards.paths[f], r, epoch))
                    continue
                found.append({
                    "shard": os.path.basename(layout.shards.paths[f]), "record": r,
                    "video_id": _video_id(serialized), "error": _first_line(err),
                    "epoch": int(epoch)})
        return found

    return diagnose


def _unreadable_shards(layout, start_record, err):
    """The entries of the records of the current epoch that cannot be read:
    each open (and next) shard is read from its planned offset to its end
    (`_unreadable_records`)."""
    epoch, record = layout.locate(start_record)
    start = resume.plan_start(layout, epoch, record)
    counts = layout.shards.counts_at(epoch)
    found = []
    for f, first in start.files[: 2 * layout.cycle_length]:
        found += _unreadable_records(layout.shards.paths[f], first, counts[f], epoch)
    if not found:
        raise err
    return found


def _unreadable_records(path, first, count, epoch):
    """Entries for the records [first, count) of shard `path` that the reader
    cannot return.

    A record whose body fails its checksum (DataLossError) while its length
    header is intact is one bad record: its header gives the next record's
    offset, so the records after it are read on (the pipeline reads around
    it, `resume._shard_reader`). A failure at a broken or missing header
    (`resume.count_records(verify=True)` stops there) is a cut: the records
    after it cannot be found, and are counted as lost.
    """
    found = []
    while first < count:
        try:
            for _ in tf.data.TFRecordDataset(path).skip(first).take(count - first):
                first += 1
            return found
        except tf.errors.OpError as err:
            found.append(_failure_entry(path, first, err, epoch, count))
            if "readable" in found[-1]:
                return found
            first += 1
    return found


def _failure_entry(path, record, err, epoch, count):
    """The entry of record `record` of shard `path` (`count` records by the
    headers as the pipeline counted them), which the reader failed on with
    `err`: one bad record when its length header is intact and its body
    fails its checksum, else a cut there (see `_unreadable_records`)."""
    headers = resume.count_records(path, verify=True)[0]
    if isinstance(err, tf.errors.DataLossError) and record < headers:
        return {"shard": os.path.basename(path), "record": int(record),
                "video_id": known_video_id(path, record),
                "error": f"{_first_line(err)} (its body fails its checksum; the records "
                         "after it are read)", "epoch": int(epoch)}
    return bad_records_lib.cut_entry(path, record, _first_line(err), epoch=epoch, known=count)


def known_video_id(path, record):
    """The video id of record `record` of shard `path` as the conversion
    wrote it down, or None: the shard's report (`.convert/<shard>.json`
    beside it, kept by kf-convert) lists its entries' ids in order, the
    failed ones (not written) apart. For a record whose body cannot be
    trusted, so its own id is not read."""
    # ".convert": conversion's STATE_DIR (reading/ does not import conversion/).
    report = os.path.join(os.path.dirname(path), ".convert", os.path.basename(path) + ".json")
    try:
        with kf_files.open_file(report) as f:
            info = json.load(f)
        failed = {note.get("id") for note in info.get("failed") or []}
        written = [i for i in info.get("ids") or [] if i not in failed]
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return written[record] if record < len(written) else None


def name_record(path, record, epoch):
    """The bad-record entry of record `record` of shard `path`, read again:
    its video id and the first error of parsing it or decoding its frames
    (or of reading it: `_failure_entry`)."""
    entry = {"shard": os.path.basename(path), "record": int(record), "video_id": None,
             "error": "dropped by the pipeline; decodes on its own", "epoch": int(epoch)}
    try:
        serialized = next(iter(tf.data.TFRecordDataset(path).skip(record).take(1)), None)
    except tf.errors.OpError as err:  # the reader itself: a corrupt body, or a cut
        return _failure_entry(path, record, err, epoch, resume.count_records(path)[0])
    if serialized is None:
        return {**entry, "error": "the record is no longer in the shard"}
    try:
        entry["video_id"] = _video_id(serialized)
        for frame in records.parse(serialized)["frames"]:
            tf.io.decode_image(frame)
    except tf.errors.OpError as err:
        entry["error"] = _first_line(err)
    return entry


def _video_id(serialized):
    try:
        return records.parse(serialized)["id"].numpy().decode("utf-8", "replace")
    except tf.errors.OpError:
        return None


def _first_line(err):
    """The error's message without TF's function-node and op decorations."""
    message = getattr(err, "message", str(err))
    message = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]", "", message).strip()
    # An eager op's message ends its first line with " name: " (the op's name).
    line = re.sub(r"\s+name:\s*$", "", message.splitlines()[0]) if message else ""
    return line[:300] or type(err).__name__


