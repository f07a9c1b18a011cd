"""A resume after a record that a `skip_bad_records` pipeline (one per
worker under MultiWorkerMirrored) dropped mid-run is exact: the record is
held in its place as an empty stand-in (`resume.Shards.hold`) and dropped
after the record stage as the uninterrupted run dropped it, and batch k
starts after the examples that run dropped before it
(`train_records.stream_start`), so batches, order and random draws are the
same from any k on (docs/long_runs.md, "Bad records")."""

import shutil

import numpy as np
import pytest

from klassterfork.data import pipeline
from klassterfork.data.reading import bad_records
from tests.data.test_bad_records import KW, corrupt_frame
from tests.data.test_bad_records_crc import flip_bodies, videos
from tests.data.test_pipeline import write_shards


def uninterrupted(paths, path, steps, start_batch=0, workers=None, **kw):
    """The batches of a pipeline that drops bad records itself, logged as the
    multi-worker trainer logs them (`hooks.BadRecordHook` marks them).
    workers=P: P pipelines built together, each with its own log of the
    shared file, stepped in turn (as the workers of a run); their batches."""
    pipes = [{}] if workers is None else [
        dict(num_input_pipelines=workers, input_pipeline_id=i) for i in range(workers)]
    iterators = []
    for pipe in pipes:
        log = bad_records.BadRecordLog(path)
        log.mark = {"resume_exact": False}
        iterators.append(iter(pipeline.train_dataset(
            paths, start_batch=start_batch, skip_bad_records=True, bad_records=log,
            **{**KW, **kw, **pipe})))
    runs = [[] for _ in pipes]
    for _ in range(steps):
        for run, it in zip(runs, iterators):
            run.append(tuple(x.numpy() for x in next(it)))
    return runs if workers else runs[0]


def assert_resumes_exactly(paths, path, batches, starts, first=0, **kw):
    for k in starts:
        saved = path + f".{k}"  # what a resume at k reads (and may add to)
        shutil.copy(path, saved)
        log = bad_records.BadRecordLog(saved)
        ds = pipeline.train_dataset(paths, start_batch=k, skip_bad_records=True,
                                    bad_records=log, **{**KW, **kw})
        resumed = [tuple(x.numpy() for x in b) for b in ds.take(len(batches) - (k - first))]
        assert len(resumed) == len(batches) - (k - first)
        for step, (want, got) in enumerate(zip(batches[k - first:], resumed), k):
            assert np.array_equal(want[0], got[0]), f"clips of batch {step} (resumed at {k})"
            assert np.array_equal(want[1], got[1]), f"labels of batch {step} (resumed at {k})"


# Each resume rebuilds a pipeline (~3 s on 2 cores): the default run resumes
# at a few batches (in the epoch of the drops and in later ones), the slow
# run at many.
def starts(default, full):
    return pytest.mark.parametrize("starts", [
        pytest.param(default, id="some"),
        pytest.param(full, id="many", marks=pytest.mark.slow)])


@starts([9], [0, 1, 2, 3, 4, 6, 9, 13])
def test_a_resume_after_records_dropped_in_the_pipeline_reads_the_same_batches(
        tmp_path, starts):
    paths = write_shards(tmp_path, videos(8))  # shard 0: v0 v2 v4 v6, shard 1: v1 v3 v5 v7
    flip_bodies(paths[1], 1)  # v3: unreadable, the guarded reader's stand-in
    corrupt_frame(paths[0], 2, 1)  # v4: does not decode
    path = str(tmp_path / "bad_records.jsonl")
    batches = uninterrupted(paths, path, 15)  # 6 good records an epoch: 5 epochs
    entries = bad_records.BadRecordLog(path).entries
    assert sorted((e["record"], e["epoch"], e["resume_exact"]) for e in entries) == [
        (1, 0, False), (2, 0, False)]
    labels = np.concatenate([b[1] for b in batches])
    assert 3 not in labels and 4 not in labels
    assert_resumes_exactly(paths, path, batches, starts)


@starts([7, 13], [5, 6, 7, 8, 10, 13, 16])
def test_with_repeated_views_and_a_record_found_in_a_later_epoch(tmp_path, starts):
    # The run starts in epoch 1 (batch 5: example 10 of 8 an epoch), so the
    # record is found in epoch 1 or 2 (after the start): held from there on.
    paths = write_shards(tmp_path, videos(8))
    flip_bodies(paths[0], 3)  # v6
    path = str(tmp_path / "bad_records.jsonl")
    kw = dict(repeated_views=2, batch_size=4)  # 4 views of 2 videos a batch
    batches = uninterrupted(paths, path, 12, start_batch=5, **kw)
    epochs = {e["epoch"] for e in bad_records.BadRecordLog(path).entries}
    assert len(epochs) == 1 and min(epochs) >= 1, epochs
    assert_resumes_exactly(paths, path, batches, starts, first=5, **kw)


@pytest.mark.parametrize("num_shards,starts", [
    pytest.param(2, [1, 3, 5, 8, 11], marks=pytest.mark.slow),  # shard_policy "file"
    (3, [3, 8]),  # shard_policy "data"
    pytest.param(3, [1, 3, 5, 8, 11], marks=pytest.mark.slow)])
def test_each_worker_resumes_exactly(tmp_path, num_shards, starts):
    paths = write_shards(tmp_path, videos(12), num_shards=num_shards)
    flip_bodies(paths[1], 1)
    corrupt_frame(paths[0], 0, 1)
    path = str(tmp_path / "bad_records.jsonl")
    runs = uninterrupted(paths, path, 12, workers=2)  # the workers share the file
    entries = bad_records.BadRecordLog(path).entries
    assert sorted((e["shard"][6:11], e["record"], e["epoch"]) for e in entries) == [
        ("00000", 0, 0), ("00001", 1, 0)], entries
    for pipe in (0, 1):
        assert_resumes_exactly(paths, path, runs[pipe], starts,
                               num_input_pipelines=2, input_pipeline_id=pipe)


def test_which_entries_are_held_and_the_first_epoch_a_worker_found_is_kept(tmp_path):
    # Two workers name one record (`shard_policy: data`: it is in one share
    # per epoch), the later epoch first: the file keeps the earlier one, the
    # epoch the record is held from. An entry without the mark (older files,
    # one-process runs) is skipped at the record stage as before.
    path = str(tmp_path / "bad_records.jsonl")
    first, second = bad_records.BadRecordLog(path), bad_records.BadRecordLog(path)
    first.mark = second.mark = {"resume_exact": False}
    named = {"shard": "s.tfrecord", "record": 3, "video_id": None, "error": "x"}
    first.add([dict(named, epoch=2)])
    second.add([dict(named, epoch=1)])
    bad_records.BadRecordLog(path).add([dict(named, record=5, epoch=0)])
    log = bad_records.BadRecordLog(path)
    assert [(e["record"], e["epoch"]) for e in log.entries] == [(3, 1), (5, 0)]
    assert log.for_paths(["/d/s.tfrecord"], hold=True) == (((0, 5, 0),), (), ((0, 3, 1),))
    assert log.for_paths(["/d/s.tfrecord"]) == (((0, 3, 1), (0, 5, 0)), ())
