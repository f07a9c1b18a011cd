"""Every file the project writes gets the umask's mode (0644 under 022).

`tempfile.mkstemp` creates 0600 files; a temp-then-rename writer that forgets
to fix the mode leaves manifests, labels and plots unreadable to other users.
Each test writes real outputs under umask 022 and checks every file's mode.
"""

import os
import stat

import numpy as np
import pytest

from klassterfork import files


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(folder):
    """{relative path: permission bits} of every file under `folder`."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = stat.S_IMODE(os.stat(path).st_mode)
    return out


def test_current_umask_reads_without_changing(umask_022):
    assert files.current_umask() == 0o022
    os.umask(0o027)
    assert files.current_umask() == 0o027
    assert os.umask(0o022) == 0o027  # unchanged by the read


def test_atomic_writers_honour_the_umask(tmp_path, umask_022):
    files.write_text_atomic(tmp_path / "a.txt", "x")
    files.write_bytes_atomic(tmp_path / "b.bin", b"x")
    files.write_json_atomic(tmp_path / "c.json", {"x": 1})
    with files.atomic_write(tmp_path / "d.csv") as f:
        f.write("a,b\n")
    with files.atomic_path(tmp_path / "e.tfrecord") as tmp:
        assert tmp.endswith(".tfrecord")
        with open(tmp, "wb") as f:
            f.write(b"x")
    os.umask(0o077)  # a stricter umask is honoured too
    files.write_text_atomic(tmp_path / "private.txt", "x")
    got = modes(tmp_path)
    assert got.pop("private.txt") == 0o600
    assert got == dict.fromkeys(
        ["a.txt", "b.bin", "c.json", "d.csv", "e.tfrecord"], 0o644)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError), files.atomic_path(tmp_path / "x.keras") as tmp:
        open(tmp, "wb").close()
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_converter_outputs_are_0644(tmp_path, umask_022):
    from klassterfork.data.conversion import convert, synthetic
    from klassterfork.data.conversion.sources import SOURCES

    data = tmp_path / "synthetic"
    synthetic.generate(data, num_train=2, num_val=0, seed=1, workers=1,
                       progress=False, min_seconds=0.5, max_seconds=0.5)
    out = tmp_path / "records"
    annotation = SOURCES["synthetic"](annotations=str(data), split="train")
    convert.convert(annotation, out, split="train", short_side=32, workers=1,
                    num_shards=2, progress=False)
    written = modes(out) | {f"synthetic/{k}": v for k, v in modes(data).items()}
    kinds = {os.path.splitext(p)[1] for p in written}
    assert {".tfrecord", ".json", ".txt"} <= kinds
    assert any(p.startswith(".convert/") for p in written)  # per-shard reports
    assert {p: m for p, m in written.items() if m != 0o644} == {}


def test_plots_gifs_and_models_are_0644(tmp_path, umask_022):
    import keras

    from klassterfork.analysis import confusion, gradcam, plot_training
    from klassterfork.training import trainer

    frames = np.zeros((3, 8, 8, 3), np.uint8)
    gradcam.write_gif(tmp_path / "cam.gif", frames)
    gradcam.write_strip(str(tmp_path / "cam.png"), frames, frames,
                        predictions=[("a", 0.9)])
    confusion.plot_confusion_matrix(np.eye(2), ["a", "b"], str(tmp_path / "cm.png"))
    (tmp_path / "log.csv").write_text("epoch,loss,val_loss\n0,1.0,1.1\n1,0.5,0.7\n")
    plot_training.plot_training(str(tmp_path / "log.csv"), str(tmp_path / "curves.png"))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    trainer.save_keras_atomic(model, str(tmp_path / "model.keras"))
    got = modes(tmp_path)
    got.pop("log.csv")
    assert got == dict.fromkeys(
        ["cam.gif", "cam.png", "cm.png", "curves.png", "model.keras"], 0o644)
