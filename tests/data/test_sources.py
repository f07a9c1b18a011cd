"""Annotation readers on the real files in ../shared/data/annotations.

Each count is checked against MANIFEST.md or a tiny independent parser
written here (never the reader's own helpers).
"""

import collections
import csv
import json
import os
import pathlib
import re

import pytest

from klassterfork.data.conversion.sources import SOURCES
from klassterfork.data.conversion.sources import ssv2 as ssv2_lib
from klassterfork.data.conversion.sources.frame_list import FrameEntry
from klassterfork.data.conversion.sources.json_list import load_label_names

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
ANN = SHARED / "annotations"

pytestmark = pytest.mark.skipif(
    not ANN.is_dir(), reason=f"shared test data absent: {ANN}"
)


def lines_of(path):
    """Independent reader: non-empty lines, CR/LF and blanks stripped."""
    return [x.strip() for x in pathlib.Path(path).read_text().splitlines() if x.strip()]


def touch(root, rel):
    path = pathlib.Path(root) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return str(path)


# ---------------------------------------------------------------- UCF101
UCF = ANN / "ucf101" / "ucfTrainTestlist"


@pytest.mark.parametrize(
    "split, fold, count",
    [
        ("train", 1, 9537),
        ("train", 2, 9586),
        ("train", 3, 9624),
        ("test", 1, 3783),
        ("test", 2, 3734),
        ("test", 3, 3696),
    ],
)
def test_ucf101_counts_from_manifest(tmp_path, split, fold, count):
    ann = SOURCES.build(
        "ucf101", annotations=str(UCF), videos=str(tmp_path), split=split, fold=fold
    )
    assert ann.entries == [] and len(ann.missing) == count
    assert {reason for _, reason in ann.missing} == {"video file not found"}
    assert len(ann.label_names) == 101
    assert not any("\r" in path for path, _ in ann.missing)


def test_ucf101_labels_match_the_list_column_and_folder(tmp_path):
    rows = [line.split() for line in lines_of(UCF / "trainlist01.txt")]
    for rel, _ in rows:
        touch(tmp_path, rel)
    ann = SOURCES.build(
        "ucf101", annotations=str(UCF.parent), videos=str(tmp_path), split="train"
    )
    assert len(ann.entries) == 9537 and ann.missing == []
    # 1-based list column -> 0-based label.
    assert [e.labels for e in ann.entries] == [(int(c) - 1,) for _, c in rows]
    assert ann.label_names == lines_of(ANN / "ucf101" / "label_map.txt")
    assert ann.label_names[36] == "HandstandPushups"  # classInd line "37 ..."
    first = ann.entries[0]
    assert first.video_id == "v_ApplyEyeMakeup_g08_c01"
    assert first.path == str(tmp_path / "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi")


def test_ucf101_test_list_takes_the_label_from_the_folder(tmp_path):
    # The folder is HandstandPushups, the file name says HandStandPushups.
    rel = "HandstandPushups/v_HandStandPushups_g01_c01.avi"
    touch(tmp_path, rel)
    ann = SOURCES.build(
        "ucf101", annotations=str(UCF), videos=str(tmp_path), split="test", fold=1
    )
    assert [(e.video_id, e.labels, e.label_text) for e in ann.entries] == [
        ("v_HandStandPushups_g01_c01", (36,), "HandstandPushups")
    ]
    assert len(ann.missing) == 3783 - 1


def test_ucf101_rejects_bad_fold_and_split(tmp_path):
    with pytest.raises(ValueError, match="fold=4"):
        SOURCES.build(
            "ucf101", annotations=str(UCF), videos=None, split="train", fold=4
        )
    with pytest.raises(ValueError, match="split='val'"):
        SOURCES.build("ucf101", annotations=str(UCF), videos=None, split="val")


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_ucf101_all_is_train_then_test_of_the_fold(tmp_path, fold):
    # Independent reference: both list files' first fields, in file order.
    want = [line.split()[0] for name in ("trainlist", "testlist")
            for line in lines_of(UCF / f"{name}{fold:02d}.txt")]
    assert len(want) == len(set(want)) == 13320  # every UCF101 video once
    first, last = want[0], want[-1]
    touch(tmp_path, first)
    touch(tmp_path, last)
    ann = SOURCES.build(
        "ucf101", annotations=str(UCF), videos=str(tmp_path), split="all", fold=fold
    )
    got = [e.path for e in ann.entries]
    assert got == [str(tmp_path / first), str(tmp_path / last)]
    assert [p for p, _ in ann.missing] == [str(tmp_path / r) for r in want[1:-1]]
    classes = lines_of(UCF / "classInd.txt")
    assert ann.entries[-1].labels == (
        [c.split()[1] for c in classes].index(last.split("/")[0]),)


# ---------------------------------------------------------------- HMDB51
HMDB = ANN / "hmdb51"
HMDB_SPLITS = HMDB / "testTrainMulti_7030_splits"


def hmdb_reference(fold):
    """Independent parse: {code: [(class, video)]} for one fold."""
    out = collections.defaultdict(list)
    for path in sorted(HMDB_SPLITS.glob(f"*_test_split{fold}.txt")):
        cls = path.name[: -len(f"_test_split{fold}.txt")]
        for line in lines_of(path):
            video, code = line.split()
            out[code].append((cls, video))
    return out


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_hmdb51_counts_70_30_per_class(tmp_path, fold):
    ref = hmdb_reference(fold)
    assert (len(ref["1"]), len(ref["2"])) == (3570, 1530)
    per_class = collections.Counter(cls for cls, _ in ref["1"])
    assert set(per_class.values()) == {70} and len(per_class) == 51
    for split, code in (("train", "1"), ("test", "2"), ("unused", "0")):
        ann = SOURCES.build(
            "hmdb51",
            annotations=str(HMDB),
            videos=str(tmp_path),
            split=split,
            fold=fold,
        )
        assert len(ann.missing) == len(ref[code])
        expected = {str(tmp_path / cls / video) for cls, video in ref[code]}
        assert {path for path, _ in ann.missing} == expected


@pytest.mark.parametrize("fold", [1, 3])
def test_hmdb51_all_is_every_listed_video(tmp_path, fold):
    ref = hmdb_reference(fold)
    every = {str(tmp_path / cls / video) for code in "012" for cls, video in ref[code]}
    assert len(every) == 6766  # all HMDB51 videos, whatever the fold's code
    cls, video = ref["0"][0]  # an "unused" video of this fold is in `all`
    touch(tmp_path, f"{cls}/{video}")
    ann = SOURCES.build(
        "hmdb51", annotations=str(HMDB), videos=str(tmp_path), split="all", fold=fold
    )
    assert [e.path for e in ann.entries] == [str(tmp_path / cls / video)]
    assert ann.entries[0].labels == (lines_of(HMDB / "label_map.txt").index(cls),)
    assert {p for p, _ in ann.missing} | {ann.entries[0].path} == every


def test_hmdb51_class_order_and_labels(tmp_path):
    ref = hmdb_reference(1)
    for cls, video in ref["2"][::30]:  # one test video per class
        touch(tmp_path, f"{cls}/{video}")
    ann = SOURCES.build(
        "hmdb51", annotations=str(HMDB), videos=str(tmp_path), split="test"
    )
    mmaction = lines_of(HMDB / "label_map.txt")
    assert ann.label_names == mmaction == sorted(mmaction)
    assert len(ann.entries) == 51 and len(ann.missing) == 1530 - 51
    for e in ann.entries:
        cls = pathlib.Path(e.path).parent.name
        assert e.labels == (mmaction.index(cls),) and e.label_text == cls
    assert ann.entries[0].video_id == os.path.splitext(ref["2"][0][1])[0]
    # TSN's class_list.txt (trailing blanks) orders kick_ball before kick.
    tsn = SOURCES.build(
        "hmdb51",
        annotations=str(HMDB_SPLITS),
        videos=str(tmp_path),
        split="test",
        label_map=str(HMDB / "class_list.txt"),
    )
    assert tsn.label_names[20:22] == ["kick_ball", "kick"]
    assert ann.label_names[20:22] == ["kick", "kick_ball"]
    by_id = {e.video_id: e.labels for e in tsn.entries}
    kick_ball = next(e for e in ann.entries if e.label_text == "kick_ball")
    assert by_id[kick_ball.video_id] == (20,) and kick_ball.labels == (21,)


# ---------------------------------------------------------------- Kinetics
KIN = ANN / "kinetics"


def test_kinetics400_val_rows_classes_and_missing(tmp_path):
    with open(KIN / "kinetics-400_val.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert len(rows) == 19906
    # Two real clip names: one flat, one in a per-class folder with "_".
    label0, yt0, s0, e0 = rows[0][:4]
    label1, yt1, s1, e1 = rows[5000][:4]
    flat = touch(tmp_path, f"{yt0}_{int(s0):06d}_{int(e0):06d}.mp4")
    nested = touch(
        tmp_path, f"{label1.replace(' ', '_')}/{yt1}_{int(s1):06d}_{int(e1):06d}.mp4"
    )
    ann = SOURCES.build(
        "kinetics",
        annotations=str(KIN / "kinetics-400_val.csv"),
        videos=str(tmp_path),
        split="val",
    )
    names = lines_of(KIN / "label_map_k400.txt")
    assert ann.label_names == names and len(names) == 400
    assert sorted({r[0] for r in rows}) == names
    assert len(ann.missing) == 19906 - 2
    got = {e.path: (e.video_id, e.labels, e.label_text) for e in ann.entries}
    assert got == {
        flat: (f"{yt0}_{int(s0):06d}_{int(e0):06d}", (names.index(label0),), label0),
        nested: (os.path.basename(nested)[:-4], (names.index(label1),), label1),
    }


def test_kinetics_test_csv_is_unlabelled_and_folder_lookup(tmp_path):
    with open(KIN / "kinetics-400_test.head200.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200
    touch(
        tmp_path,
        f"{rows[3]['youtube_id']}_{int(rows[3]['time_start']):06d}_"
        f"{int(rows[3]['time_end']):06d}.mp4",
    )
    ann = SOURCES.build(
        "kinetics",
        annotations=str(KIN / "kinetics-400_test.head200.csv"),
        videos=str(tmp_path),
        split="test",
    )
    assert len(ann.entries) == 1 and len(ann.missing) == 199
    assert ann.entries[0].labels == () and ann.entries[0].label_text == ""
    assert len(ann.label_names) == 400  # label_map_k400.txt beside the CSV
    k600 = SOURCES.build(
        "kinetics", annotations=str(KIN), videos=str(tmp_path), split="600_val"
    )  # folder + "*600_val.csv"
    assert len(k600.missing) == 30000 and len(k600.label_names) == 600


@pytest.mark.parametrize("split", ["validation", "val", "validate"])
@pytest.mark.parametrize("csv_name", ["kinetics-400_val.csv", "validate.csv"])
def test_kinetics_validation_is_one_spelling(tmp_path, split, csv_name):
    ann_dir = tmp_path / "annotations"
    ann_dir.mkdir()
    for name in (csv_name, "kinetics-400_train.csv", "kinetics-400_test.csv"):
        (ann_dir / name).write_text(
            "label,youtube_id,time_start,time_end,split\nzumba,a,1,11,x\n")
    touch(tmp_path, "v/a_000001_000011.mp4")
    ann = SOURCES.build(
        "kinetics", annotations=str(ann_dir), videos=str(tmp_path / "v"), split=split
    )
    assert ann.split == "validation"  # kf-convert writes validation.manifest.json
    assert [e.video_id for e in ann.entries] == ["a_000001_000011"]
    train = SOURCES.build(
        "kinetics", annotations=str(ann_dir), videos=str(tmp_path / "v"), split="train"
    )
    assert train.split == "train"
    with pytest.raises(FileNotFoundError, match=r"split 'validation' .*found=\[\]"):
        SOURCES.build("kinetics", annotations=str(tmp_path / "v"), videos=None,
                      split="val")


def test_kinetics_derives_sorted_classes_without_label_map(tmp_path):
    path = tmp_path / "custom.csv"
    path.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        'zumba,a,1,11,train\n"air drumming",b,2.0,12.0,train\n'
    )
    touch(tmp_path, "v/b_000002_000012.mp4")
    ann = SOURCES.build(
        "kinetics", annotations=str(path), videos=str(tmp_path / "v"), split="train"
    )
    assert ann.label_names == ["air drumming", "zumba"]
    assert [(e.video_id, e.labels) for e in ann.entries] == [("b_000002_000012", (0,))]
    with pytest.raises(ValueError, match="missing columns"):
        bad = tmp_path / "bad.csv"
        bad.write_text("label,id\nx,y\n")
        SOURCES.build("kinetics", annotations=str(bad), videos=None, split="train")


# ---------------------------------------------------------------- SSv2
SS = ANN / "ssv2"
SS_LABELS = SS / "something-something-v2-labels.json"
SS_VAL = SS / "something-something-v2-validation.sample.json"


def ssv2_reference(path):
    """Independent: [(id, label index)] using a regex strip of the brackets."""
    table = json.loads(SS_LABELS.read_text())
    items = json.loads(pathlib.Path(path).read_text())
    return [
        (it["id"], int(table[re.sub(r"[\[\]]", "", it["template"])])) for it in items
    ]


def test_ssv2_validation_sample_all_templates_map(tmp_path):
    ref = ssv2_reference(SS_VAL)
    assert len(ref) == 302
    for video_id, _ in ref:
        touch(tmp_path, f"{video_id}.webm")
    ann = SOURCES.build(
        "ssv2", annotations=str(SS_VAL), videos=str(tmp_path), split="validation"
    )
    assert ann.missing == [] and len(ann.entries) == 302
    assert [(e.video_id, e.labels[0]) for e in ann.entries] == ref
    assert ann.label_names == lines_of(SS / "label_map.txt")
    assert len(ann.label_names) == 174
    assert all(e.label_text == ann.label_names[e.labels[0]] for e in ann.entries)
    assert ann.flip_label_map is not None and len(ann.flip_label_map) == 174


def test_ssv2_real_video_and_local_media_labels(tmp_path):
    ann = SOURCES.build(
        "ssv2",
        annotations=str(SS_VAL),
        videos=str(SHARED / "videos" / "ssv2"),
        split="validation",
    )
    assert [(e.video_id, e.labels) for e in ann.entries] == [("166766", (57,))]
    assert ann.entries[0].label_text == "Poking something so that it falls over"
    assert len(ann.missing) == 301
    for video_id in ("2", "3201", "13201", "57082", "166766"):
        touch(tmp_path, f"{video_id}.webm")
    local = SOURCES.build(
        "ssv2",
        annotations=str(SS / "local_media_labels.json"),
        videos=str(tmp_path),
        split="validation",
    )
    got = {e.video_id: e.labels[0] for e in local.entries}
    assert got == dict(ssv2_reference(SS / "local_media_labels.json"))
    assert got["166766"] == 57 and len(got) == 5


def test_ssv2_test_split_is_unlabelled(tmp_path):
    ann = SOURCES.build(
        "ssv2",
        annotations=str(SS / "something-something-v2-test.sample.json"),
        videos=str(tmp_path),
        split="test",
    )
    assert len(ann.missing) == 100
    assert ann.missing[0][0] == str(tmp_path / "1420.webm")


def test_ssv2_unknown_template_names_the_id(tmp_path):
    bad = tmp_path / "something-something-v2-validation.json"
    bad.write_text('[{"id": "9", "template": "Juggling [something]", "label": "x"}]')
    with pytest.raises(ValueError, match="id 9: template 'Juggling"):
        SOURCES.build(
            "ssv2",
            annotations=str(tmp_path),
            videos=None,
            split="validation",
            labels=str(SS_LABELS),
        )


def test_ssv2_flip_label_map_hand_checked():
    names = lines_of(SS / "label_map.txt")
    flip = ssv2_lib.flip_label_map(str(SS / "augmentation_mappings.json"), names)
    # The TDN swaps: Pulling / Pushing left<->right and camera left<->right.
    assert names[86] == "Pulling something from left to right"
    assert names[87] == "Pulling something from right to left"
    assert names[93] == "Pushing something from left to right"
    assert names[166] == "Turning the camera left while filming something"
    swapped = {i: j for i, j in enumerate(flip) if j not in (i, -1)}
    assert swapped == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    assert flip[names.index("Closing something")] == names.index("Closing something")
    # In neither list of the file: never flipped.
    never = [names[i] for i, j in enumerate(flip) if j == -1]
    assert never == [
        "Digging something out of something",
        "Moving something and something closer to each other",
    ]
    assert sum(j == i for i, j in enumerate(flip)) == 166


def test_ssv2_time_reversal_label_map_hand_checked():
    names = lines_of(SS / "label_map.txt")
    mappings = json.loads((SS / "augmentation_mappings.json").read_text())
    rev = ssv2_lib.time_reversal_label_map(mappings, names)

    def i(name):
        return names.index(name)

    assert rev[i("Opening something")] == i("Closing something")
    assert rev[i("Putting something on a surface")] == i("Picking something up")
    assert rev[i(mappings["reverse time agnostic"][0])] == i(
        mappings["reverse time agnostic"][0]
    )
    assert rev[i(mappings["reverse time false class"][0])] == -1
    assert sum(r == -1 for r in rev) == 174 - 35 - 37


# ---------------------------------------------------------------- frame lists
MM = ANN / "mmaction2_formats"
IMGS = SHARED / "frames" / "mmaction2_imgs"


@pytest.fixture
def imgs_root(tmp_path):
    """A videos dir where `imgs` (the lists' folder name) links to mmaction2_imgs."""
    (tmp_path / "imgs").symlink_to(IMGS, target_is_directory=True)
    return str(tmp_path)


def test_rawframe_list_plain_offset_and_multilabel(imgs_root):
    plain = SOURCES.build(
        "frames",
        annotations=str(MM / "rawframe_test_list.txt"),
        videos=imgs_root,
        split="test",
    )
    e = plain.entries[0]
    assert isinstance(e, FrameEntry) and len(plain.entries) == 2
    assert (e.video_id, e.num_frames, e.labels, e.first_index, e.pattern) == (
        "imgs",
        5,
        (127,),
        1,
        "img_%05d.jpg",
    )
    assert len(plain.label_names) == 128
    offset = SOURCES.build(
        "frames",
        annotations=str(MM / "rawframe_test_list_with_offset.txt"),
        videos=imgs_root,
        split="test",
        with_offset=True,
    )
    e = offset.entries[0]
    assert (e.video_id, e.num_frames, e.labels, e.first_index) == (
        "imgs@2",
        5,
        (127,),
        3,
    )
    multi = SOURCES.build(
        "frames",
        annotations=str(MM / "rawframe_test_list_multi_label.txt"),
        videos=imgs_root,
        split="test",
        multi_label=True,
    )
    assert [e.labels for e in multi.entries] == [(1,), (3, 5)]
    assert multi.entries[1].label_text == "3;5"
    with pytest.raises(ValueError, match="multi_label=True"):
        SOURCES.build(
            "frames",
            annotations=str(MM / "rawframe_test_list_multi_label.txt"),
            videos=imgs_root,
            split="test",
        )


def test_frame_list_missing_frames_flow_and_patterns(tmp_path, imgs_root):
    listing = tmp_path / "list.txt"
    listing.write_text("imgs 10 0\nimgs 11 1\nnowhere 5 0\n")
    ann = SOURCES.build(
        "frames",
        annotations=str(listing),
        videos=imgs_root,
        split="train",
        flow_patterns=("x_%05d.jpg", "y_%05d.jpg"),
    )
    assert [e.num_frames for e in ann.entries] == [10]
    assert ann.entries[0].flow_patterns == ("x_%05d.jpg", "y_%05d.jpg")
    assert ann.missing == [
        (os.path.join(imgs_root, "imgs"), "frame file not found: img_00011.jpg"),
        (os.path.join(imgs_root, "nowhere"), "frame folder not found"),
    ]
    # SSv2 frame dumps: %04d.jpg from 1, absolute paths, a label map.
    ss = SHARED / "frames" / "ssv2_something_else"
    counts = {d.name: len(os.listdir(d)) for d in ss.iterdir()}
    listing.write_text("".join(f"{ss / k} {n} 57\n" for k, n in sorted(counts.items())))
    ann = SOURCES.build(
        "frames",
        annotations=str(listing),
        videos=None,
        split="val",
        pattern="%04d.jpg",
        label_map=str(SS / "label_map.txt"),
    )
    assert ann.missing == [] and len(ann.entries) == 4
    assert [e.num_frames for e in ann.entries] == [n for _, n in sorted(counts.items())]
    assert sum(counts.values()) == 178 and ann.entries[0].first_index == 1
    assert ann.entries[0].label_text == "Poking something so that it falls over"


# ---------------------------------------------------------------- generic
def test_json_list_names_indices_multi_and_missing(tmp_path):
    for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4"):
        touch(tmp_path, f"v/{name}")
    items = [
        {"path": "a.mp4", "label": "dog"},
        {"filename": "b.mp4", "label": ["cat", "dog"], "id": "bee"},
        {"path": "c.mp4"},
        {"path": "gone.mp4", "label": "cat"},
    ]
    (tmp_path / "list.json").write_text(json.dumps(items))
    ann = SOURCES.build(
        "json",
        annotations=str(tmp_path / "list.json"),
        videos=str(tmp_path / "v"),
        split="train",
    )
    assert ann.label_names == ["cat", "dog"] and ann.classes_from == "sorted names"
    assert [(e.video_id, e.labels, e.label_text) for e in ann.entries] == [
        ("a.mp4", (1,), "dog"),  # the path as written: a.avi would differ
        ("bee", (0, 1), "cat;dog"),
        ("c.mp4", (), ""),
    ]
    assert ann.missing == [(str(tmp_path / "v" / "gone.mp4"), "video file not found")]
    (tmp_path / "ints.json").write_text('[{"path": "d.mp4", "label": 2}]')
    ann = SOURCES.build(
        "json",
        annotations=str(tmp_path / "ints.json"),
        videos=str(tmp_path / "v"),
        split="train",
    )
    assert ann.label_names == ["0", "1", "2"] and ann.entries[0].labels == (2,)
    (tmp_path / "bad.json").write_text('[{"path": "d.mp4", "label": "owl"}]')
    with pytest.raises(ValueError, match="unknown class 'owl'"):
        SOURCES.build(
            "json",
            annotations=str(tmp_path / "bad.json"),
            videos=None,
            split="train",
            label_map=str(UCF / "classInd.txt"),
        )


def test_load_label_names_forms(tmp_path):
    assert load_label_names(UCF / "classInd.txt") == lines_of(
        ANN / "ucf101" / "label_map.txt"
    )
    tsn = load_label_names(HMDB / "class_list.txt")
    assert tsn[20] == "kick_ball" and "turn" in tsn  # trailing blanks stripped
    (tmp_path / "labels.txt").write_text("0,zero\n1,one, two\n")
    assert load_label_names(tmp_path / "labels.txt") == ["zero", "one, two"]
    # SSv2 names with commas stay whole (no index column).
    ss = load_label_names(SS / "label_map.txt")
    assert "Putting something, something and something on the table" in ss
