"""The converter on a URL (issue 24, item 5): a conversion into fsspec's
in-memory `memory://` takes `data/conversion/fs.py`'s scheme branch, the one
`gs://` and `s3://` take, and must leave exactly the files a local
conversion of the same videos leaves: the same shard bytes, manifest (with
its failure list), labels.txt and resume reports; a re-run into memory://
skips the finished shards."""

import hashlib
import json
import os
import subprocess
import sys
import uuid

import fsspec
import pytest

from klassterfork.cli import convert as cli
from klassterfork.data.conversion import convert, fs, synthetic
from klassterfork.data.conversion.sources import SOURCES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEMORY = fsspec.filesystem("memory")
OPTIONS = dict(split="train", short_side=56, workers=1, num_shards=2, progress=False)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A few synthetic demo videos, one of them overwritten with junk (a
    failure for the manifest's failure list)."""
    out = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(out, num_train=5, num_val=0, seed=4, workers=1, progress=False)
    broken = SOURCES["synthetic"](annotations=str(out), split="train").entries[2]
    with open(broken.path, "wb") as f:
        f.write(b"not a video")
    return out


@pytest.fixture
def url():
    """A fresh memory:// folder, removed after the test (the store is global)."""
    root = f"kf-test-{uuid.uuid4().hex[:8]}"
    yield f"memory://{root}/records"
    if MEMORY.exists(f"/{root}"):
        MEMORY.rm(f"/{root}", recursive=True)


def tree(folder):
    """{relative path: bytes} of every file under a local folder or a URL."""
    if not fs.is_remote(folder):
        return {os.path.relpath(os.path.join(d, n), folder):
                open(os.path.join(d, n), "rb").read()
                for d, _, names in os.walk(folder) for n in names}
    stripped = MEMORY._strip_protocol(folder)
    return {p[len(stripped) + 1:]: MEMORY.cat_file(p) for p in MEMORY.find(stripped)}


def annotation(videos):
    return SOURCES["synthetic"](annotations=str(videos), split="train")


@pytest.fixture(scope="module")
def local(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local_records")
    manifest = convert.convert(annotation(videos), str(out), **OPTIONS)
    return tree(str(out)), manifest


def test_memory_conversion_equals_local(videos, local, url):
    local_tree, local_manifest = local
    manifest = convert.convert(annotation(videos), url, **OPTIONS)
    assert manifest == local_manifest
    assert manifest["counts"]["written"] == 4 and manifest["counts"]["failed"] == 1
    assert "cannot open" in manifest["failed"][0]["reason"]
    in_memory = tree(url)
    assert sorted(in_memory) == sorted(local_tree) == [
        ".convert/train-00000-of-00002.tfrecord.json",
        ".convert/train-00001-of-00002.tfrecord.json",
        "labels.txt", "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
        "train.manifest.json"]
    for name, data in local_tree.items():  # the converter is deterministic
        assert in_memory[name] == data, name
    assert json.loads(in_memory["train.manifest.json"]) == manifest


def test_memory_rerun_skips_finished_shards(videos, local, url, monkeypatch, caplog):
    convert.convert(annotation(videos), url, **OPTIONS)
    kept = f"{url}/train-00000-of-00002.tfrecord"
    MEMORY.rm(f"{url}/train-00001-of-00002.tfrecord")  # killed before its move
    stale = f"{url}/.train-00001-of-00002.tfrecord.abcd1234.tmp"
    MEMORY.pipe_file(stale, b"half a shard")
    kept_file = MEMORY.store[MEMORY._strip_protocol(kept)]
    calls = []
    real = convert.convert_entry
    monkeypatch.setattr(convert, "convert_entry",
                        lambda entry, opts: calls.append(entry) or real(entry, opts))
    with caplog.at_level("WARNING"):
        manifest = convert.convert(annotation(videos), url, **OPTIONS)
    report = json.loads(
        MEMORY.cat_file(f"{url}/.convert/train-00001-of-00002.tfrecord.json"))
    assert [e.video_id for e in calls] == report["ids"]  # only the unfinished shard
    # The finished shard was not rewritten: the same file object is in the store.
    assert MEMORY.store[MEMORY._strip_protocol(kept)] is kept_file
    assert not MEMORY.exists(stale)
    assert any(stale in r.getMessage() for r in caplog.records)
    assert manifest == local[1] and tree(url) == local[0]


def test_atomic_write_on_memory_leaves_nothing_on_error(url):
    with pytest.raises(RuntimeError):
        with fs.atomic_write(f"{url}/a.json") as f:
            f.write("half")
            raise RuntimeError("writer died")
    assert not MEMORY.exists(f"{url}/a.json")
    assert [n for n in fs.listdir(url) if n.endswith(".tmp")] == []
    fs.write_text_atomic(f"{url}/a.json", "{}\n")
    with fs.open_file(f"{url}/a.json") as f:
        assert f.read() == "{}\n"
    with pytest.raises(FileNotFoundError):
        fs.listdir(f"{url}/missing")
    with pytest.raises(ValueError, match="no filesystem for scheme 'nosuch'"):
        fs.exists("nosuch://b/x")


def test_kf_convert_to_memory_without_tensorflow(videos, local):
    """The command line end to end into memory:// (in a fresh process, to see
    that neither fsspec's scheme path nor the converter imports TensorFlow)."""
    script = (
        "import sys, json, hashlib, fsspec\n"
        "from klassterfork.cli.convert import main\n"
        f"rc = main(['--dataset', 'synthetic', '--annotations', {str(videos)!r},"
        " '--out', 'memory://kf-cli/records', '--split', 'train', '--short-side', '56',"
        " '--workers', '1', '--num-shards', '2', '--quiet'])\n"
        "m = fsspec.filesystem('memory')\n"
        "print(json.dumps({'rc': rc, 'tf': 'tensorflow' in sys.modules, 'files': {"
        "p.split('/records/')[1]: hashlib.sha256(m.cat_file(p)).hexdigest()"
        " for p in m.find('/kf-cli/records')}}))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0 and out["tf"] is False
    shards = {k: hashlib.sha256(v).hexdigest() for k, v in local[0].items()
              if k.endswith(".tfrecord")}
    assert {k: v for k, v in out["files"].items() if k.endswith(".tfrecord")} == shards
    assert "train.manifest.json" in out["files"] and "labels.txt" in out["files"]
    assert cli.build_parser().parse_args(
        ["--csv", "x.csv", "--out", "gs://b/records"]).out == "gs://b/records"


def parsed_records(shard_bytes, tmp_path):
    """{id: parsed record} of one shard's bytes (TensorFlow reads them)."""
    import tensorflow as tf

    from klassterfork.data import records

    path = tmp_path / f"shard{uuid.uuid4().hex[:6]}.tfrecord"
    path.write_bytes(shard_bytes)
    out = {}
    for serialized in tf.data.TFRecordDataset(str(path)):
        parsed = records.parse(serialized)
        out[parsed["id"].numpy().decode()] = {
            "labels": parsed["labels"].numpy().tolist(),
            "frames": [f.numpy() for f in parsed["frames"]],
            "source": parsed["source"].numpy().decode()}
    return out


def test_videos_and_annotations_from_memory(videos, local, url, tmp_path):
    """The input side on a URL too: the synthetic dataset folder (annotation
    json files and videos) in memory://, converted into memory://."""
    source = url.rsplit("/", 1)[0] + "/synthetic"
    for d, _, names in os.walk(videos):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), videos)
            with open(os.path.join(d, n), "rb") as f:
                MEMORY.pipe_file(f"{source}/{rel}", f.read())
    remote = SOURCES["synthetic"](annotations=source, split="train")
    local_entries = annotation(videos).entries
    assert [e.path for e in remote.entries] == [
        f"{source}/videos/{os.path.basename(e.path)}" for e in local_entries]
    assert convert.choose_num_shards(remote.entries, short_side=56) == (
        convert.choose_num_shards(local_entries, short_side=56))  # headers read

    manifest = convert.convert(remote, url, **OPTIONS)
    local_tree, local_manifest = local
    assert manifest["counts"] == local_manifest["counts"]
    failed, theirs = manifest["failed"][0], local_manifest["failed"][0]
    assert failed["path"] == f"{source}/videos/{os.path.basename(theirs['path'])}"
    # The reason names the URL, not the local copy FFmpeg was given.
    assert failed["reason"] == theirs["reason"].replace(theirs["path"], failed["path"])
    in_memory = tree(url)
    for name in (n for n in local_tree if n.endswith(".tfrecord")):
        theirs = parsed_records(local_tree[name], tmp_path)
        ours = parsed_records(in_memory[name], tmp_path)
        assert sorted(ours) == sorted(theirs)
        for video_id, record in ours.items():
            assert record["source"] == f"{source}/videos/{video_id}.mp4"
            assert record["labels"] == theirs[video_id]["labels"]
            assert record["frames"] == theirs[video_id]["frames"]  # same JPEG bytes
