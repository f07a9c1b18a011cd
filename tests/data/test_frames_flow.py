"""Frame folders and optical flow, checked with TF's JPEG decoder as reference."""

import os
import pathlib

import cv2
import numpy as np
import pytest
import tensorflow as tf

from klassterfork.data.conversion import flow, frames
from klassterfork.data import records
from klassterfork.data.conversion.sources.frame_list import FrameEntry, encode_entry

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
IMGS = SHARED / "frames" / "mmaction2_imgs"
SS_FRAMES = SHARED / "frames" / "ssv2_something_else"
needs_shared = pytest.mark.skipif(not IMGS.is_dir(), reason=f"absent: {IMGS}")


def tf_decode(data, channels=3, dct_method=""):
    """Independent decoder: what the training pipeline will use."""
    return tf.io.decode_jpeg(data, channels=channels, dct_method=dct_method).numpy()


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---------------------------------------------------------------- frames
@needs_shared
def test_frame_paths_counts_and_patterns(tmp_path):
    names = sorted(os.listdir(IMGS))
    imgs = frames.frame_paths(str(IMGS))
    assert [os.path.basename(p) for p in imgs] == [
        n for n in names if n.startswith("img_")
    ]
    assert len(imgs) == 10
    assert frames.frame_paths(str(IMGS), "img_{:05d}.jpg") == imgs
    assert len(frames.frame_paths(str(IMGS), "x_%05d.jpg")) == 5
    assert frames.frame_paths(str(IMGS), first_index=3, num_frames=2) == imgs[2:4]
    for i in (1, 2, 4):
        (tmp_path / f"{i:04d}.jpg").touch()
    with pytest.raises(ValueError, match="0003.jpg' is missing"):
        frames.frame_paths(str(tmp_path), "%04d.jpg")
    with pytest.raises(ValueError, match="placeholder"):
        frames.frame_paths(str(tmp_path), "frame.jpg")


@needs_shared
def test_read_frame_folder_matches_tf_decoding():
    got = frames.read_frame_folder(str(IMGS))
    assert len(got) == 10 and got[0].shape == (240, 320, 3) and got[0].dtype == np.uint8
    for i, frame in enumerate(got):
        data = (IMGS / f"img_{i + 1:05d}.jpg").read_bytes()
        # OpenCV decodes like libjpeg's accurate integer IDCT, bit for bit;
        # TF's default ("" = INTEGER_FAST) differs by up to 16 levels.
        assert np.array_equal(frame, tf_decode(data, dct_method="INTEGER_ACCURATE"))
        assert psnr(frame, tf_decode(data)) > 40
    small = frames.read_frame_folder(str(IMGS), short_side=128)
    assert small[0].shape == (128, 171, 3)  # 320 * 128 / 240 = 170.7
    ref = tf.image.resize(
        tf_decode((IMGS / "img_00001.jpg").read_bytes()), (128, 171), method="area"
    ).numpy()
    assert psnr(small[0], ref) > 35


@needs_shared
def test_jpeg_header_without_decoding():
    assert frames.jpeg_header((IMGS / "img_00001.jpg").read_bytes()) == (240, 320, 3)
    assert frames.jpeg_header((IMGS / "x_00001.jpg").read_bytes()) == (240, 320, 1)
    assert frames.jpeg_header((SS_FRAMES / "2" / "0001.jpg").read_bytes()) == (
        240,
        427,
        3,
    )
    png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    assert frames.jpeg_header(png) is None
    progressive = cv2.imencode(
        ".jpg", np.zeros((6, 9, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    )[1].tobytes()
    assert frames.jpeg_header(progressive) == (6, 9, 3)


@needs_shared
@pytest.mark.parametrize("short_side", [None, 240])
def test_frame_folder_keeps_original_bytes_at_target_size(short_side):
    got = frames.frame_folder_jpegs(str(IMGS), short_side=short_side)
    assert not got.reencoded and (got.height, got.width) == (240, 320)
    assert got.jpegs == [(IMGS / f"img_{i:05d}.jpg").read_bytes() for i in range(1, 11)]
    ss = frames.read_jpeg_bytes_if_target_size(
        str(SS_FRAMES / "3201"), "%04d.jpg", short_side=240
    )
    assert ss is not None and ss[1] == 240  # SSv2 widths vary: 3201 is 426
    assert len(ss[0]) == len(os.listdir(SS_FRAMES / "3201"))
    assert frames.read_jpeg_bytes_if_target_size(str(IMGS), short_side=128) is None


@needs_shared
@pytest.mark.parametrize("short_side", [None, 128])
def test_frame_folder_record_round_trip_psnr(short_side):
    """Folder -> records.write -> parse -> tf decode matches the folder.

    At the folder's own size the bytes are kept, so decoding is identical; at
    short side 128 the frames are resized (area) and re-encoded at quality 90:
    measured PSNR 38.7 dB against TF's area resize of the originals.
    """
    got = frames.frame_folder_jpegs(str(IMGS), short_side=short_side, decode=True)
    assert got.reencoded == (short_side is not None)
    serialized = records.write(
        video_id="imgs",
        frames=got.jpegs,
        labels=[0],
        fps=25.0,
        height=got.height,
        width=got.width,
    )
    parsed = records.parse(tf.constant(serialized))
    assert int(parsed["num_frames"]) == 10
    assert (int(parsed["height"]), int(parsed["width"])) == (got.height, got.width)
    for i, data in enumerate(parsed["frames"].numpy()):
        stored = tf_decode(data)
        original = tf_decode((IMGS / f"img_{i + 1:05d}.jpg").read_bytes())
        if short_side is None:
            assert np.array_equal(stored, original)
            continue
        assert stored.shape == (128, 171, 3)
        resized = tf.image.resize(original, (128, 171), method="area").numpy()
        assert psnr(stored, np.round(resized).astype(np.uint8)) > 37.5
        exact = tf_decode(data, dct_method="INTEGER_ACCURATE")
        assert psnr(exact, got.frames[i]) > 39  # quality-90 encoding loss only


# ---------------------------------------------------------------- flow
def dequantize_reference(q, bound):
    """The documented formula, written out again: q * 2b / 255 - b."""
    return q.astype(np.float64) * (2.0 * bound) / 255.0 - bound


def test_quantize_hand_values():
    f = np.array([-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0])
    # (f + 20) * 255 / 40 rounded, clipped to [-20, 20] first.
    assert flow.quantize(f, 20.0).tolist() == [0, 0, 64, 128, 191, 255, 255]
    np.testing.assert_allclose(
        flow.dequantize(np.array([0, 255, 128]), 20.0),
        [-20.0, 20.0, 128 * 40 / 255 - 20],
        atol=1e-5,
    )
    q = np.arange(256)
    np.testing.assert_array_equal(flow.quantize(flow.dequantize(q, 7.5), 7.5), q)


def textured_image(height=128, width=160, seed=0):
    """Smooth random texture (blurred noise): trackable in every direction."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (height, width)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255
    return np.repeat(smooth.astype(np.uint8)[..., None], 3, axis=2)


def shift(image, dx, dy):
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(
        image, matrix, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT
    )


@pytest.mark.parametrize("dx, dy", [(3.0, -2.0), (-1.5, 4.0)])
def test_farneback_recovers_a_known_translation(dx, dy):
    base = textured_image()
    clip = [shift(base, k * dx, k * dy) for k in range(3)]
    xs, ys = flow.farneback_frames(clip, bound=20.0)
    assert len(xs) == len(ys) == 3  # T flows for T frames: the last repeats
    assert xs[2] == xs[1] and ys[2] == ys[1]
    for x_jpeg, y_jpeg in zip(xs[:2], ys[:2]):
        fx = dequantize_reference(tf_decode(x_jpeg, channels=1)[..., 0], 20.0)
        fy = dequantize_reference(tf_decode(y_jpeg, channels=1)[..., 0], 20.0)
        inner = (slice(16, -16), slice(16, -16))  # away from the borders
        assert fx[inner].mean() == pytest.approx(dx, abs=0.25)
        assert fy[inner].mean() == pytest.approx(dy, abs=0.25)
        assert np.median(np.abs(fx[inner] - dx)) < 0.3


def test_farneback_single_frame_and_clipping():
    one = flow.farneback_frames([textured_image()])
    assert len(one[0]) == 1
    zero = dequantize_reference(tf_decode(one[0][0], channels=1), 20.0)
    assert np.abs(zero).max() < 0.2  # 128 -> +0.078 px
    base = textured_image()
    xs, _ = flow.farneback_frames([base, shift(base, 6.0, 0.0)], bound=2.0)
    fx = dequantize_reference(tf_decode(xs[0], channels=1)[16:-16, 16:-16], 2.0)
    assert np.median(fx) == pytest.approx(2.0, abs=0.05)  # clipped at the bound


@needs_shared
def test_read_flow_folder_keeps_bytes_pads_and_rescales():
    xs, ys = flow.read_flow_folder(str(IMGS))
    assert xs == [(IMGS / f"x_{i:05d}.jpg").read_bytes() for i in range(1, 6)]
    assert ys == [(IMGS / f"y_{i:05d}.jpg").read_bytes() for i in range(1, 6)]
    px, py = flow.read_flow_folder(str(IMGS), num_frames=10)
    assert len(px) == len(py) == 10 and px[5:] == [xs[4]] * 5
    # Half size: the image halves and so does every flow vector.
    hx, hy = flow.read_flow_folder(str(IMGS), short_side=120)
    for full, half in ((xs, hx), (ys, hy)):
        for a, b in zip(full, half):
            big = dequantize_reference(tf_decode(a, channels=1)[..., 0], 20.0)
            small = dequantize_reference(tf_decode(b, channels=1)[..., 0], 20.0)
            assert small.shape == (120, 160)
            ref = (
                cv2.resize(
                    big.astype(np.float32), (160, 120), interpolation=cv2.INTER_AREA
                )
                * 0.5
            )
            assert np.abs(small - ref).mean() < 0.1
            assert small.mean() == pytest.approx(big.mean() * 0.5, abs=0.05)


# ---------------------------------------------------------------- converter task
def img_bytes(prefix, i):
    return (IMGS / f"{prefix}_{i:05d}.jpg").read_bytes()


@needs_shared
def test_encode_entry_keeps_resamples_and_imports_flow():
    entry = FrameEntry(
        video_id="imgs",
        path=str(IMGS),
        num_frames=10,
        fps=25.0,
        flow_patterns=("x_%05d.jpg", "y_%05d.jpg"),
    )
    full = encode_entry(entry)
    assert full.frames == [img_bytes("img", i) for i in range(1, 11)]
    assert (full.fps, full.height, full.width, full.flow_x) == (25.0, 240, 320, None)
    # 25 -> 12.5 fps by time: frames 0, 2, 4, 6, 8 (files 1, 3, 5, 7, 9).
    half = encode_entry(entry, fps=12.5, flow="import")
    assert half.frames == [img_bytes("img", i) for i in (1, 3, 5, 7, 9)]
    assert half.fps == 12.5 and half.flow_bound == 20.0
    # 5 flow images (x_00001..5) for stored frames 0, 2, 4, 6, 8: 1, 3, 5, 5, 5.
    assert half.flow_x == [img_bytes("x", i) for i in (1, 3, 5, 5, 5)]
    assert half.flow_y == [img_bytes("y", i) for i in (1, 3, 5, 5, 5)]
    three = encode_entry(entry, max_frames=3, short_side=128, flow="farneback")
    assert len(three.frames) == len(three.flow_x) == 3
    assert frames.jpeg_header(three.frames[0]) == (128, 171, 3)
    assert frames.jpeg_header(three.flow_y[2]) == (128, 171, 1)
    with pytest.raises(ValueError, match="flow='tvl1'"):
        encode_entry(entry, flow="tvl1")
    with pytest.raises(ValueError, match="entry.fps=None"):
        encode_entry(FrameEntry(video_id="imgs", path=str(IMGS)), fps=10)
