"""Bad records: found, named in `bad_records.jsonl`, skipped within a budget.

Why a Python-side diagnosis: tf.data cannot catch a per-element error and go
on without losing track of positions (`ignore_errors` drops the element
silently, and every later batch and random key would shift by one). So the
pipeline stays exact and simple: when the train iterator raises (a record
that does not parse, a frame that does not decode, an unreadable stretch of
a shard), the trainer calls `BadRecordLog.diagnose(first_batch, ...)`,
which replays the record stage of those batches (cheap: `data/reading/resume.py`),
parses and decodes each of their examples eagerly with the same function and
the same keys to name the failing record(s), appends them to the file, and
the trainer rebuilds the pipeline at the same batch with those records
filtered out (from the epoch they were found in on, so earlier positions
stay as they were). A later `-r` reads the file back: it never replays a
crash on the same record.

One JSON object a line:
    {"shard": "train-00003-of-00016.tfrecord", "record": 41, "video_id":
     "abc", "error": "...", "epoch": 0}                       a bad record
     (also one whose body fails its checksum: its length header gives the
     next record's offset, so the records after it are read)
    {"shard": "...", "record": 17, "readable": 17, "lost": 3, "video_id":
     null, "error": "truncated ...", "epoch": 0}               a shard cut at
     record 17 (truncated, or a broken length header: the records after it
     cannot be found): its first 17 records are used, `lost` (from the
     manifest's per-shard count; null when unknown) are counted as bad.
    {"shard": "val-00000-of-00001.tfrecord", "record": 5, "video_id": "x",
     "error": "...", "epoch": 0, "set": "val"}                 a validation
     record the evaluation skipped (`set`: the key under `datasets`); it
     counts in the set's `skipped` metric, not against the train budget.
    A multi-worker run adds `"resume_exact": false` to what its pipelines
    drop mid-run (dropped in place; the name is older than what it means
    now): a resumed `skip_bad_records` pipeline holds such a record in its
    place instead of skipping it (`for_paths`), which keeps the resume exact
    (docs/long_runs.md); only such a cut still shifts what follows it.

The budget (`max_bad_records`) counts bad records plus lost ones (an unknown
loss counts 1); over it, training stops with one paragraph naming the
shards and ids.
"""

import contextlib
import fcntl
import json
import logging
import math
import os

from klassterfork import files as kf_files

LOG = logging.getLogger(__name__)
FILE_NAME = "bad_records.jsonl"
DEFAULT_FRACTION = 0.001  # of an epoch's records, at least 1


class BadRecordsError(ValueError):
    """More bad records than `max_bad_records` allows."""


def default_budget(num_records):
    """`max_bad_records` when the config leaves it out: 0.1 % of an epoch's
    records, at least 1."""
    return max(1, math.ceil(DEFAULT_FRACTION * num_records))


class BadRecordLog:
    """The `bad_records.jsonl` of a stage plus the pipelines that read it.

    Args:
        path: str or None. The file; None keeps the entries in memory.
    """

    def __init__(self, path=None):
        self.path = path
        self.entries = []
        self._diagnosers = {}
        # A pipeline that drops bad records itself (`Placement.skip_bad_records`)
        # puts its `BadRecordsError` here; the trainer raises it after the step.
        self.over_budget = None
        self._watched = None  # (folder, shard paths) of `collect`
        # Fields added to each new entry (the trainer marks the records a
        # multi-worker pipeline drops mid-run: a resume holds them in place).
        self.mark = {}
        if path:
            self.entries = _read(path)

    def add(self, entries):
        """Adds new entries; the file is rewritten atomically.

        Several processes may share the file (the workers of one
        MultiWorkerMirrored run write the same stage directory): under an
        exclusive lock on `<file>.lock`, the file is read again and the
        entries other processes added are kept, so no worker's rewrite drops
        another's.
        """
        known, new = {_key(e) for e in self.entries}, []
        for e in entries:  # the first of a record named twice (two epochs) is kept
            if _key(e) not in known:
                known.add(_key(e))
                new.append(e)
        if not new:
            return []
        new = [{**e, **self.mark} for e in new]
        self.entries += new
        # Once over the budget the run stops: the file keeps the entries up to
        # the one past it, so every worker's paragraph (`shared_budget_error`)
        # reads the same file.
        if self.path and self.over_budget is None:
            kf_files.makedirs(os.path.dirname(self.path) or ".")
            with _locked(self.path + ".lock"):
                theirs = _read(self.path)
                ours = {_key(e): e for e in theirs}
                for e in new:  # keep the first epoch any worker found it in: a held
                    prior = ours.get(_key(e))  # record counts from there (`for_paths`)
                    if prior is not None and e.get("epoch", 0) < prior.get("epoch", 0):
                        prior["epoch"] = e["epoch"]
                self.entries = theirs + [e for e in self.entries if _key(e) not in ours]
                text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in self.entries)
                kf_files.write_text_atomic(self.path, text)
        for e in new:
            LOG.warning("bad record skipped: %s", describe(e))
        return new

    def for_paths(self, paths, hold=False):
        """(skip, cut) for `resume.Shards` over `paths` (matched by file name);
        hold=True: (skip, cut, hold), where the records a pipeline dropped in
        place (`"resume_exact": false`, not a cut) are held, not skipped: a
        pipeline that drops them alike keeps the positions of the run that
        dropped them (`train_records.stream_start`)."""
        index = {os.path.basename(p): i for i, p in enumerate(paths)}
        skip, cut, held = [], [], []
        for e in self._train_entries():
            f = index.get(e["shard"])
            if f is None:
                continue
            if "readable" in e:
                cut.append((f, int(e["readable"]), int(e.get("epoch", 0))))
            else:
                (held if hold and e.get("resume_exact") is False else skip).append(
                    (f, int(e["record"]), int(e.get("epoch", 0))))
        return (tuple(skip), tuple(cut)) + ((tuple(held),) if hold else ())

    def _train_entries(self):
        """The entries of the train data (an evaluation's carry `set`)."""
        return [e for e in self.entries if e.get("set", "train") == "train"]

    def count(self):
        """Records counted against the budget (train data only)."""
        return sum(1 if "readable" not in e else (e.get("lost") or 1)
                   for e in self._train_entries())

    def check_budget(self, budget, where=""):
        if self.count() <= budget:
            return
        entries = self._train_entries()
        shards = sorted({e["shard"] for e in entries})
        ids = [e["video_id"] for e in entries if e.get("video_id")]
        raise BadRecordsError(
            f"{self.count()} bad records exceed the budget of {budget} "
            f"(max_bad_records){where}: shards {', '.join(shards)}; video ids "
            f"{', '.join(ids[:20]) or 'unknown'}{' ...' if len(ids) > 20 else ''}. "
            f"Each is listed with its error in {self.path or 'the log'}; repair or "
            "re-convert those shards (kf-convert resumes per shard), or raise "
            "datasets.train.max_bad_records to train without them."
        )

    def shared_budget_error(self):
        """The `BadRecordsError` of the file as it is now (every worker's
        entries) against the registered pipelines' budget, or None."""
        shared = BadRecordLog(self.path) if self.path else self
        for _, budget in list(self._diagnosers.values()):
            try:
                shared.check_budget(budget)
            except BadRecordsError as err:
                return err
        return None

    def watch(self, folder, paths):
        """`collect` reads the `.bad` files of `folder` (a pipeline built with
        `Placement.bad_records_dir` writes them) for the shards `paths`."""
        os.makedirs(folder, exist_ok=True)
        self._watched = (folder, {os.path.basename(p): p for p in paths})

    def collect(self):
        """Names the records the watched folder's files report (shard,
        record, epoch; the video id and error read again from the shard),
        adds them, removes the files and checks the budgets.

        Returns:
            list of the new entries.

        Raises:
            BadRecordsError: over a registered pipeline's budget.
        """
        if self._watched is None:
            return []
        from klassterfork.data.reading.train_records import name_record  # TF import

        folder, paths = self._watched
        names = [n for n in sorted(os.listdir(folder)) if n.endswith(".bad")]
        if not names:
            return []
        found = []
        for name in names:
            epoch, record, shard = name[1:-len(".bad")].split("-", 2)
            if shard in paths:
                found.append(name_record(paths[shard], int(record[1:]), int(epoch)))
        found.sort(key=lambda e: e["epoch"])  # a record dropped twice: its first epoch
        new = self.add(found)
        for name in names:
            with contextlib.suppress(FileNotFoundError):  # another worker collected it
                os.remove(os.path.join(folder, name))
        for _, budget in list(self._diagnosers.values()):
            self.check_budget(budget)
        return new

    def register(self, pipeline_id, diagnose, budget):
        """Called by `pipeline.train_dataset`: how to name the bad records
        of its batches, and its budget."""
        self._diagnosers[pipeline_id] = (diagnose, budget)

    def diagnose(self, first_batch, num_batches):
        """Names the bad records of batches [first_batch, + num_batches) of
        every pipeline built with this log, adds them, checks the budget.

        Returns:
            list of the new entries (empty: the error was not the data's).

        Raises:
            BadRecordsError: over budget.
        """
        new = []
        for diagnose, budget in list(self._diagnosers.values()):
            new += self.add(diagnose(first_batch, num_batches))
            self.check_budget(budget)
        return new


def _read(path):
    try:
        with kf_files.open_file(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def _locked(lock_path):
    """An exclusive `flock` on `lock_path` (created if missing); none on a
    remote store (gs://, ram://), which has no locks: there the chief writes."""
    if kf_files.is_remote(lock_path):
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _key(entry):
    return (entry.get("set", "train"), entry["shard"], entry.get("record"),
            "readable" in entry)


def describe(entry):
    """One line: shard, record, video id, what happened."""
    if "readable" in entry:
        lost = entry.get("lost")
        return (f"{entry['shard']}: unreadable after record {entry['readable']} "
                f"({entry['error']}); its first {entry['readable']} records are used, "
                f"{'an unknown number' if lost is None else lost} counted as bad")
    where = f"datasets.{entry['set']}: " if entry.get("set") else ""
    return (f"{where}{entry['shard']} record {entry['record']} "
            f"(video {entry.get('video_id')!r}, "
            f"epoch {entry.get('epoch', 0)}): {entry['error']}")


def manifest_count(path):
    """The manifest's record count for shard `path`, or None.

    Looks for `{split}.manifest.json` beside `{split}-i-of-n.tfrecord`.
    """
    name = os.path.basename(path)
    split = name.rsplit("-", 3)[0] if name.count("-") >= 3 else None
    if not split:
        return None
    manifest = os.path.join(os.path.dirname(path), f"{split}.manifest.json")
    try:
        with kf_files.open_file(manifest) as f:
            shards = json.load(f).get("shards") or []
    except (OSError, ValueError):
        return None
    for shard in shards:
        if isinstance(shard, dict) and shard.get("file") == name:
            return shard.get("videos")
    return None


def cut_entry(path, readable, error, epoch=0, known=None):
    """The entry of a shard that cannot be read past record `readable`.

    `known`: records the shard's headers showed when the pipeline was built;
    the manifest's count is used when it has one (a truncated file has lost
    the headers too)."""
    expected = manifest_count(path)
    if expected is None:
        expected = known
    lost = None if expected is None else max(int(expected) - readable, 0)
    return {"shard": os.path.basename(path), "record": readable, "readable": readable,
            "lost": lost, "video_id": None, "error": error, "epoch": int(epoch)}
