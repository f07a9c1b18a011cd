"""Frame folders at a URL (issue 24, item 5): a frame-folder dataset (the
list file, the `img_` frames and denseflow's `x_`/`y_` flow images) copied
into fsspec's in-memory `memory://` is listed and read through
`data/conversion/fs.py`'s scheme branch, the one `gs://` and `s3://` take,
and converts to the same records as its local copy: the same frame and flow
JPEG bytes, labels, ids and manifest, only `source` naming the URL. Once
with the frames kept as they are (and the flow images checked by the
reader), once re-encoded at a smaller size with imported flow resized."""

import json
import os
import uuid

import cv2
import fsspec
import numpy as np
import pytest

from klassterfork.cli.convert import main
from klassterfork.data.conversion import convert, flow, frames, fs
from klassterfork.data.conversion.sources import SOURCES

MEMORY = fsspec.filesystem("memory")
FOLDERS = {"v1": 6, "v2": 4}  # name: number of frames
LISTING = "v1 6 0\nv2 4 1\nabsent 3 1\n"  # `absent` goes to the manifest's missing


def write_jpeg(path, image, quality):
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    path.write_bytes(buf.tobytes())


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """`list.txt` and `frames/{v1,v2}`: distinct 64x48 RGB frames (a moving
    noise pattern, so a swapped frame shows) and T - 1 flow images per
    component, as denseflow writes them."""
    root = tmp_path_factory.mktemp("frame_dataset")
    rng = np.random.default_rng(11)
    for name, count in FOLDERS.items():
        folder = root / "frames" / name
        folder.mkdir(parents=True)
        base = rng.integers(0, 256, (48, 64, 3), np.uint8)
        for i in range(1, count + 1):
            write_jpeg(folder / f"img_{i:05d}.jpg", np.roll(base, 3 * i, axis=1), 90)
        for i in range(1, count):
            for axis in "xy":
                flow_q = rng.integers(90, 166, (48, 64), np.uint8)
                write_jpeg(folder / f"{axis}_{i:05d}.jpg", flow_q, 95)
    (root / "list.txt").write_text(LISTING)
    return str(root)


def local_to_memory(folder, url):
    """Copies a local folder's files to a memory:// folder (as in
    tests/test_filesystems.py)."""
    for d, _, names in os.walk(folder):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                MEMORY.pipe_file(f"{url}/{os.path.relpath(os.path.join(d, n), folder)}",
                                 f.read())


@pytest.fixture(scope="module")
def url(local):
    """The dataset in a fresh memory:// folder, removed after the module (the
    store is global)."""
    root = f"kf-frames-{uuid.uuid4().hex[:8]}"
    local_to_memory(local, f"memory://{root}")
    yield f"memory://{root}"
    MEMORY.rm(f"/{root}", recursive=True)


def parsed_records(out):
    """{id: {field: value}} of every shard in local folder `out`."""
    import tensorflow as tf

    from klassterfork.data import records

    found = {}
    for name in sorted(os.listdir(out)):
        if not name.endswith(".tfrecord"):
            continue
        for serialized in tf.data.TFRecordDataset(os.path.join(out, name)):
            parsed = records.parse(serialized, with_flow=True)
            found[parsed["id"].numpy().decode()] = {
                k: np.asarray(v.numpy()).tolist() for k, v in parsed.items()}
    return found


def assert_same_records(local, url, local_out, url_out):
    """Records equal field by field; `source` names each side's folder."""
    ours, theirs = parsed_records(url_out), parsed_records(local_out)
    assert sorted(ours) == sorted(theirs) == ["v1", "v2"]
    for video_id, record in ours.items():
        want = dict(theirs[video_id])
        assert want.pop("source") == os.path.join(local, "frames", video_id).encode()
        assert record.pop("source") == f"{url}/frames/{video_id}".encode()
        assert record == want, video_id
        assert record["num_frames"] == FOLDERS[video_id]
        assert len(record["flow_x"]) == len(record["flow_y"]) == FOLDERS[video_id]
    return ours


def same_manifest(local, url, local_manifest, url_manifest):
    """The URL run's manifest with its folder renamed to the local one."""
    renamed = json.loads(json.dumps(url_manifest).replace(url, local))
    return renamed == local_manifest


def test_frame_folder_listing_and_reads_from_memory(local, url):
    folder, remote = os.path.join(local, "frames", "v1"), f"{url}/frames/v1"
    paths = frames.frame_paths(remote)  # counted from the listing
    local_paths = frames.frame_paths(folder)
    assert paths == [f"{remote}/{os.path.basename(p)}" for p in local_paths]
    assert len(paths) == 6
    assert frames.read_bytes(paths) == frames.read_bytes(local_paths)
    assert flow.read_flow_folder(remote) == flow.read_flow_folder(folder)
    missing = f"{url}/frames/x"
    with pytest.raises(FileNotFoundError, match=f"frame folder not found: {missing}"):
        frames.frame_paths(missing)
    with pytest.raises(FileNotFoundError, match=f"{remote}/img_00099.jpg: no such"):
        fs.read_files([paths[0], f"{remote}/img_00099.jpg"])


def test_rgb_frames_from_memory_equal_local(local, url, tmp_path):
    """Frames and imported flow images kept byte for byte
    (`short_side=None`); the reader checks the flow images exist through
    `fs` too."""
    options = dict(split="train", short_side=None, workers=1, num_shards=1,
                   progress=False, flow="import")
    reader = dict(split="train", flow_patterns=("x_%05d.jpg", "y_%05d.jpg"))
    manifests = {}
    for side, root in (("local", local), ("url", url)):
        annotation = SOURCES["frames"](annotations=f"{root}/list.txt",
                                       videos=f"{root}/frames", **reader)
        assert [m[1] for m in annotation.missing] == ["frame folder not found"]
        manifests[side] = convert.convert(annotation, str(tmp_path / side), **options)
    assert same_manifest(local, url, manifests["local"], manifests["url"])
    assert manifests["url"]["counts"]["written"] == 2
    records = assert_same_records(local, url, tmp_path / "local", tmp_path / "url")
    v2 = os.path.join(local, "frames", "v2")
    with open(os.path.join(v2, "img_00002.jpg"), "rb") as f:
        assert records["v2"]["frames"][1] == f.read()  # the file itself, kept
    with open(os.path.join(v2, "y_00003.jpg"), "rb") as f:
        assert records["v2"]["flow_y"][2] == f.read()


def test_kf_convert_imported_flow_from_memory_equals_local(local, url, tmp_path):
    """`kf-convert --dataset frames --flow import` with the list and the
    folders at a URL: frames re-encoded at short side 32, the x_/y_ images
    dequantized, resized and re-quantized, as for the local copy."""
    manifests = {}
    for side, root in (("local", local), ("url", url)):
        out = tmp_path / side
        code = main(["--dataset", "frames", "--annotations", f"{root}/list.txt",
                     "--videos", f"{root}/frames", "--split", "train",
                     "--out", str(out), "--short-side", "32", "--flow", "import",
                     "--workers", "1", "--num-shards", "1", "--quiet"])
        assert code == 0
        with open(out / "train.manifest.json") as f:
            manifests[side] = json.load(f)
    assert same_manifest(local, url, manifests["local"], manifests["url"])
    records = assert_same_records(local, url, tmp_path / "local", tmp_path / "url")
    first = cv2.imdecode(np.frombuffer(records["v1"]["flow_x"][0], np.uint8),
                         cv2.IMREAD_UNCHANGED)
    assert min(first.shape) == 32  # resized: the flow images were decoded
    assert records["v1"]["flow_x"][-1] == records["v1"]["flow_x"][-2]  # T - 1 flows
