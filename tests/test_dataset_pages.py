"""Every recipe's data is producible from its dataset page (issue 22, item 4).

For each dataset page (ucf101, hmdb51, kinetics, ssv2) a miniature of the
dataset's real layout is built in a temporary folder from ../shared/data: the
real annotation files cut to their first rows, real videos symlinked under
the listed names. The page's `<!-- needs: real dataset -->` blocks then run
verbatim there (only `--workers N` becomes `--workers 1`), and every recipe
that reads the dataset (`recipes_reading`) is loaded with KF_DATA pointing
at the result: each `datasets.*` block whose records the page makes must find
shards and `{split}.manifest.json` (flow in the manifest for `modality:
flow`). Then `kf-train RECIPE --smoke` runs every recipe on those records
(`test_recipe_smoke`), with KF_WEIGHTS holding stand-ins of the public
pretrained files its `init_weights` names, written in the same format by
writers independent of klassterfork (torch state dicts of
references/torch_reference.py models, keras.applications' own legacy h5
writer), and the recipe's page command (tools/resnet50_to_tdn.py) run on
them; the run's init_weights paragraph must report every tensor of the file
loaded that the reference model shares with ours. The smoke runs lower the
batch sizes and evaluation views (`smoke_set`): they check the recipe's
wiring on this 2-core machine, not its memory.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from klassterfork.config import loader

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RECIPES = ROOT / "runs" / "action" / "classification"
VENV_BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)\s*$")
# The records folders (under KF_DATA/records) each dataset's page makes.
PAGE_DIRS = {
    "ucf101": ("ucf101",),
    "hmdb51": ("hmdb51",),
    "kinetics": (
        "kinetics400_256",
        "kinetics400_340",
        "kinetics400_340_flow",
        "kinetics700_filtered",
    ),
    "ssv2": ("ssv2", "ssv2_256"),
}
VIDEO = SHARED / "videos" / "mmaction2" / "rawvideo_part_0.mp4"  # 340x256, 32 frames
AVI = SHARED / "videos" / "mmaction2" / "test.avi"  # a UCF101 clip
WEBM = SHARED / "videos" / "ssv2" / "166766.webm"  # a real SSv2 clip

pytestmark = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared test data absent: {SHARED}"
)


def page_blocks(dataset):
    """The shell blocks of docs/datasets/{dataset}.md marked `needs: real dataset`."""
    lines = (ROOT / "docs" / "datasets" / f"{dataset}.md").read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if not FENCE.match(lines[i]):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if before.strip() == "<!-- needs: real dataset -->":
            out.append("\n".join(lines[i + 1 : end]))
        i = end + 1
    return out


def recipes_reading(dataset):
    """The recipe files with a `datasets.*` block on records this page makes."""
    out = []
    for path in sorted(RECIPES.glob("*.hjson")):
        if any(
            f"/records/{name}\n" in f"{line}\n"
            for line in path.read_text().splitlines()
            for name in PAGE_DIRS[dataset]
            if line.strip().startswith("dir:")
        ):
            out.append(path)
    return out


def link(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def head(src, dst, rows):
    """The first `rows` lines of `src` (line ends kept) written to `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, newline="") as f:
        lines = f.readlines()[:rows]
    with open(dst, "w", newline="") as f:
        f.writelines(lines)
    return lines


def make_ucf101(data):
    src = SHARED / "annotations" / "ucf101" / "ucfTrainTestlist"
    lists = data / "ucf101" / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    shutil.copy(src / "classInd.txt", lists)
    names = [
        line.split()[0]
        for line in head(src / "trainlist01.txt", lists / "trainlist01.txt", 2)
    ]
    names += [
        line.split()[0]
        for line in head(src / "testlist01.txt", lists / "testlist01.txt", 1)
    ]
    for i, name in enumerate(names):
        link(AVI if i == 0 else VIDEO, data / "ucf101" / "UCF-101" / name)


def make_hmdb51(data):
    src = SHARED / "annotations" / "hmdb51" / "testTrainMulti_7030_splits"
    dst = data / "hmdb51" / "testTrainMulti_7030_splits"
    files = sorted(src.glob("*_test_split1.txt"))
    first = files[0].read_text().splitlines()
    # The first class file up to its first train (1) and test (2) line; the
    # others cut to two rows (their videos reported missing).
    rows = 1 + max(
        next(i for i, ln in enumerate(first) if ln.split()[1:] == [c])
        for c in ("1", "2")
    )
    for path in files:
        kept = head(path, dst / path.name, rows if path == files[0] else 2)
        if path == files[0]:
            label = path.name.rsplit("_test_split", 1)[0]
            for line in kept:
                link(VIDEO, data / "hmdb51" / "videos" / label / line.split()[0])


def _kinetics_csv(rows, header, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def make_kinetics(data):
    """K400: the official validation CSV's first rows; no train CSV is in
    ../shared/data, so its next rows stand as `kinetics-400_train.csv`. K700:
    K400 rows of K700 classes as its train CSV, and a label_remap.json (what
    tools/class_overlap.py writes) removing one class."""
    ann = SHARED / "annotations" / "kinetics"
    with open(ann / "kinetics-400_val.csv", newline="") as f:
        reader = csv.reader(f)
        header, rows = next(reader), [next(reader) for _ in range(4)]
    for split, part in (("train", rows[2:]), ("validation", rows[:2])):
        csv_name = (
            "kinetics-400_val.csv"
            if split == "validation"
            else "kinetics-400_train.csv"
        )
        _kinetics_csv(part, header, data / "kinetics400" / "annotations" / csv_name)
        for label, youtube_id, start, end, *_ in part:
            name = f"{youtube_id}_{int(start):06d}_{int(end):06d}.mp4"
            link(VIDEO, data / "kinetics400" / "videos" / split / name)
    shutil.copy(ann / "label_map_k400.txt", data / "kinetics400" / "annotations")
    k700 = (ann / "label_map_k700.txt").read_text().splitlines()
    rows = [r for r in rows if r[0] in k700]
    _kinetics_csv(
        rows, header, data / "kinetics700" / "annotations" / "kinetics-700_train.csv"
    )
    shutil.copy(ann / "label_map_k700.txt", data / "kinetics700" / "annotations")
    for label, youtube_id, start, end, *_ in rows:
        link(
            VIDEO,
            data
            / "kinetics700"
            / "videos"
            / "train"
            / f"{youtube_id}_{int(start):06d}_{int(end):06d}.mp4",
        )
    removed = next(i for i, name in enumerate(k700) if name not in {r[0] for r in rows})
    old_to_new = [-1 if i == removed else i - (i > removed) for i in range(len(k700))]
    overlap = data.parent / "overlap"
    overlap.mkdir()
    (overlap / "label_remap.json").write_text(json.dumps({"old_to_new": old_to_new}))


def make_ssv2(data):
    """Labels, flip mappings, and each split json cut to its first rows (the
    validation sample's rows stand for train: no train json is shared)."""
    src = SHARED / "annotations" / "ssv2"
    ann = data / "ssv2" / "annotations"
    ann.mkdir(parents=True)
    shutil.copy(src / "something-something-v2-labels.json", ann)
    shutil.copy(src / "augmentation_mappings.json", ann)
    val = json.loads(
        (src / "something-something-v2-validation.sample.json").read_text()
    )
    test = json.loads((src / "something-something-v2-test.sample.json").read_text())
    for split, items in (
        ("train", val[2:4]),
        ("validation", val[:2]),
        ("test", test[:2]),
    ):
        (ann / f"something-something-v2-{split}.json").write_text(json.dumps(items))
        for item in items:
            link(WEBM, data / "ssv2" / "videos" / f"{item['id']}.webm")


MAKERS = {
    "ucf101": make_ucf101,
    "hmdb51": make_hmdb51,
    "kinetics": make_kinetics,
    "ssv2": make_ssv2,
}


def run_page(dataset, work):
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    for text in page_blocks(dataset):
        text = re.sub(r"--workers \d+", "--workers 1", text)
        proc = subprocess.run(
            ["bash", "-e", "-c", text],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, (
            f"exit {proc.returncode}\n{text}\n--- stdout\n{proc.stdout[-3000:]}\n"
            f"--- stderr\n{proc.stderr[-3000:]}"
        )


def check_recipe(recipe, data, dataset, monkeypatch):
    """Each block of `recipe` on this page's records has shards and a
    manifest. (The place for `kf-train recipe --smoke` once it exists.)"""
    monkeypatch.setenv("KF_DATA", str(data))
    stages, _ = loader.load(recipe)
    checked = []
    for stage in stages:
        for role, block in stage["datasets"].items():
            folder = Path(block["dir"])
            if (
                folder.parent != data / "records"
                or folder.name not in PAGE_DIRS[dataset]
            ):
                continue
            split = block.get("split", "train")
            manifest = folder / f"{split}.manifest.json"
            assert manifest.is_file(), f"{recipe.name}: datasets.{role}: no {manifest}"
            info = json.loads(manifest.read_text())
            assert info["counts"]["written"] >= 1, (recipe.name, role, info["counts"])
            shards = sorted(folder.glob(f"{split}-*.tfrecord"))
            assert [s.name for s in shards] == sorted(
                s["file"] for s in info["shards"]
            ), (recipe.name, role)
            if block.get("modality") == "flow":
                assert info["settings"].get("flow") == "farneback", (recipe.name, role)
            checked.append(role)
    assert checked, f"{recipe.name} reads no records of the {dataset} page"
    return checked


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """`pages(*datasets)` -> the data folder where those pages have run, one
    folder for the module (each page run once, as a user would in turn)."""
    work = tmp_path_factory.mktemp("pages")
    done = set()

    def make(*datasets):
        for dataset in datasets:
            if dataset not in done:
                MAKERS[dataset](work / "data")
                run_page(dataset, work)
                done.add(dataset)
        return work / "data"

    return make


@pytest.mark.parametrize("dataset", sorted(PAGE_DIRS))
def test_page_makes_what_its_recipes_read(dataset, pages, monkeypatch):
    data = pages(dataset)
    recipes = recipes_reading(dataset)
    assert recipes, dataset
    for recipe in recipes:
        check_recipe(recipe, data, dataset, monkeypatch)


def test_recipes_reading_by_hand():
    names = {d: {p.stem for p in recipes_reading(d)} for d in PAGE_DIRS}
    assert (
        names["ucf101"]
        == names["hmdb51"]
        == {"config_author_wo_sun_hmdb51", "config_author_wo_sun_ucf101"}
    )
    assert {
        "tdn_r50_k400_8f",
        "two_stream_inceptionv3_kinetics_flow",
        "two_stream_inceptionv3_kinetics_rgb",
    } <= names["kinetics"]
    assert {"smth_model3d_1", "smth_model3d_1_224", "videomae_vits_ssv2"} <= names[
        "ssv2"
    ]
    every = set().union(*names.values())
    assert every == {p.stem for p in RECIPES.glob("*.hjson")} - {
        "demo_r2plus1d_synthetic"
    }


def test_kinetics_split_val_is_written_as_validation(tmp_path, capsys):
    from klassterfork.cli.convert import main

    data = tmp_path / "data"
    make_kinetics(data)
    out = tmp_path / "records"
    code = main(["--dataset", "kinetics", "--annotations",
                 str(data / "kinetics400" / "annotations"), "--videos",
                 str(data / "kinetics400" / "videos" / "validation"), "--split", "val",
                 "--out", str(out), "--short-side", "32", "--max-frames", "2",
                 "--workers", "1", "--quiet", "--strict"])
    assert code == 0
    assert "--split val: written as 'validation'" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "labels.txt", "validation-00000-of-00001.tfrecord",
        "validation.manifest.json"]


# --- kf-train RECIPE --smoke on the records the pages made -------------------
# Every recipe's smoke is slow (`pytest -m slow tests/test_dataset_pages.py`):
# the cheapest (two-stream RGB from a keras.applications InceptionV3 no-top
# file) takes 20 s on 2 cores, the others half a minute to minutes (model3D_1
# at 84^2, 224-px ViTs and the 4096-wide frozen block, 60 x 224^2 model3D_1,
# TDN's 40 frames per clip, R(2+1)D-18 on three datasets), and the default
# run must stay under 15 minutes; it checks that each page's commands make
# the records, splits and sizes its recipes read.
DEFAULT_SMOKE = set()
SMOKED = sorted(
    p.stem for p in RECIPES.glob("*.hjson") if p.stem != "demo_r2plus1d_synthetic"
)
PARAGRAPH = re.compile(
    r"init_weights: (\S+) \((\w+), sha256 \w+\): (\d+) variables loaded, "
    r"(\d+) left initialized, (\d+) file tensors unused"
)


def smoke_set(stages):
    """`--set` lowering every batch size: train 2 clips (2 views of one
    video where a recipe repeats views), evaluation 1 video of 1 view."""
    out = []
    for role, block in stages[0]["datasets"].items():
        out += ["--set", f"datasets.{role}.batch_size={2 if role == 'train' else 1}"]
        for key in ("num_clips", "num_crops"):
            if role != "train" and block.get(key, 1) != 1:
                out += ["--set", f"datasets.{role}.{key}=1"]
    return out


def write_embeddings(stages):
    """Stand-in `kf-embed-classes` output for zero-shot blocks: one random
    300-d row per class of the records' labels.txt (word vectors are not
    shared test data)."""
    for block in stages[0]["datasets"].values():
        path = Path(block.get("class_embeddings") or "")
        if block.get("class_embeddings") and not path.is_file():
            rows = len((Path(block["dir"]) / "labels.txt").read_text().splitlines())
            path.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(rows)
            np.save(path, rng.normal(size=(rows, 300)).astype("float32"))


def write_weights(stages, folder):
    """Writes the stand-in of the file `init_weights` names (its page's
    prepare command included). Returns [(path, loaded, unused)] that the
    run's init_weights paragraph must show, [] for a recipe without one."""
    from tests import pretrained_standins as standins

    init = stages[0].get("init_weights")
    if os.environ.get("KF_FROZEN_BLOCK") and "frozen_weights" in str(stages):
        standins.frozen_block(os.environ["KF_FROZEN_BLOCK"])
    if not init:
        return []
    path = Path(init["path"])
    assert path.parent == folder, path
    model = stages[0]["model"]
    if path.name == "resnet50-0676ba61.pth":
        loaded, unused = standins.torchvision_resnet50(path)
    elif path.name == "resnet50-0676ba61_tdn.pth":
        source = folder / "resnet50-0676ba61.pth"
        standins.torchvision_resnet50(source)
        subprocess.run(
            [sys.executable, str(ROOT / "tools" / "resnet50_to_tdn.py"), str(source),
             str(path)], check=True, capture_output=True, timeout=300)
        import torch

        state = torch.load(path, weights_only=True)
        loaded, unused = sum(not k.endswith("num_batches_tracked") for k in state), 0
    elif path.name.startswith("inception_v3"):
        loaded, unused = standins.inception_v3_notop(path)
        if model["TwoStream2D"]["stream"] == "flow":
            loaded -= 1  # the 20-channel first conv keeps its initialization
    elif path.name.startswith("videomae_vit"):
        loaded, unused = standins.videomae_pretrain(path, model["VideoViT"]["variant"])
    else:
        raise AssertionError(f"no stand-in writer for {path.name}")
    return [(str(path), loaded, unused)]


@pytest.mark.parametrize(
    "name",
    [
        n if n in DEFAULT_SMOKE else pytest.param(n, marks=pytest.mark.slow)
        for n in SMOKED
    ],
)
def test_recipe_smoke(name, pages, tmp_path, monkeypatch, capsys):
    """`kf-train RECIPE --smoke` passes on the records its pages made, with
    its pretrained file loaded, and leaves no experiment folder."""
    import keras

    from klassterfork.cli.train import main

    recipe = RECIPES / f"{name}.hjson"
    data = pages(*[d for d in sorted(PAGE_DIRS) if recipe in recipes_reading(d)])
    weights, exp = tmp_path / "weights", tmp_path / "experiments"
    weights.mkdir()
    monkeypatch.setenv("KF_DATA", str(data))
    monkeypatch.setenv("KF_WEIGHTS", str(weights))
    monkeypatch.setenv("KF_EXPERIMENTS", str(exp))
    monkeypatch.setenv("KF_FROZEN_BLOCK", str(weights / "frozen_block.npz"))
    stages, _ = loader.load(recipe)
    write_embeddings(stages)
    expected = write_weights(stages, weights)
    capsys.readouterr()
    try:
        code = main([str(recipe), "--smoke", *smoke_set(stages)])
    finally:
        keras.backend.clear_session()
    out = capsys.readouterr()
    assert code == 0, f"{name}: exit {code}\n{out.out[-2000:]}\n{out.err[-3000:]}"
    assert "smoke OK" in out.out, out.out[-2000:]
    found = [
        (path, int(loaded), int(unused))
        for path, _, loaded, _, unused in PARAGRAPH.findall(out.out + out.err)
    ]
    assert found == expected, PARAGRAPH.pattern
    assert not exp.exists()
