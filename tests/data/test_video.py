"""PyAV decoding: frame counts, rotation, resize, fps by timestamps, errors."""

import json
import pathlib
import wave

import av
import cv2
import numpy as np
import pytest

from klassterfork.data.conversion import video

SHARED = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
VIDEOS = SHARED / "videos"
needs_shared = pytest.mark.skipif(not VIDEOS.is_dir(), reason="../shared/data absent")


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def manifest_media():
    with open(SHARED / "manifest.json") as f:
        entries = json.load(f)["entries"]
    return {
        e["path"]: e["media"]
        for e in entries
        if e["path"].startswith("videos/") and "frames_decoded" in e.get("media", {})
    }


@needs_shared
def test_frame_counts_equal_decoded_counts_of_the_data_manifest():
    media = manifest_media()
    assert len(media) >= 14
    for rel, facts in sorted(media.items()):
        if rel.endswith("corrupted.mp4"):
            continue  # breaks mid-stream: see the error test
        decoded = video.decode_video(SHARED / rel, short_side=32)
        assert len(decoded.frames) == facts["frames_decoded"], rel
        assert decoded.num_decoded == facts["frames_decoded"], rel
        assert decoded.source_fps == pytest.approx(facts["avg_fps"], rel=1e-3), rel


@needs_shared
@pytest.mark.parametrize("angle", [0, 90, 180, 270])
def test_rotation_matches_opencv_which_applies_the_display_matrix(angle):
    path = VIDEOS / "decord" / f"video_{angle}.mov"
    decoded = video.decode_video(path)
    capture = cv2.VideoCapture(str(path))  # independent decoder, rotates
    reference = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        reference.append(bgr[..., ::-1])
    assert len(decoded.frames) == len(reference) == 3
    # 568x320 coded; a quarter turn shows it 320 wide x 568 high.
    expected = (568, 320) if angle in (90, 270) else (320, 568)
    assert (decoded.height, decoded.width) == expected
    for got, ref in zip(decoded.frames, reference):
        assert got.shape == (*expected, 3)
        assert psnr(got, ref) > 40
    # The raw (unrotated) frame differs: the rotation is really applied.
    if angle:
        with av.open(str(path)) as c:
            raw = next(c.decode(video=0)).to_ndarray(format="rgb24")
        assert raw.shape[:2] == (320, 568)
        assert psnr(np.rot90(raw, {90: -1, 180: 2, 270: 1}[angle]),
                    decoded.frames[0]) > 40


@needs_shared
def test_rotated_video_short_side_resize():
    decoded = video.decode_video(VIDEOS / "decord" / "video_90.mov", short_side=128)
    # 320 x 568 -> 128 x round(568 * 128 / 320) = 128 x 227.
    assert (decoded.width, decoded.height) == (128, 227)
    assert decoded.rotation == -90


def test_short_side_size_by_hand():
    assert video.short_side_size(240, 320, 128) == (128, 171)  # 170.67
    assert video.short_side_size(1080, 1920, 128) == (128, 228)  # 227.56
    assert video.short_side_size(568, 320, 128) == (227, 128)
    assert video.short_side_size(240, 320, None) == (240, 320)


def test_resize_uses_area_when_shrinking_and_linear_when_enlarging():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    small = video.resize_short_side(frame, 30)
    np.testing.assert_array_equal(
        small, cv2.resize(frame, (40, 30), interpolation=cv2.INTER_AREA))
    # 2x2 box average, by hand, for the top-left output pixel.
    np.testing.assert_allclose(
        small[0, 0], frame[:2, :2].reshape(4, 3).mean(0), atol=0.51)
    big = video.resize_short_side(frame, 120)
    np.testing.assert_array_equal(
        big, cv2.resize(frame, (160, 120), interpolation=cv2.INTER_LINEAR))
    assert video.resize_short_side(frame, 60) is frame


def test_resample_indices_by_hand():
    ts = [0.0, 0.1, 0.2, 0.3]  # 10 fps, 0.4 s
    assert video.resample_indices(ts, 10) == [0, 1, 2, 3]
    assert video.resample_indices(ts, 20) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert video.resample_indices(ts, 5) == [0, 2]
    # A gap: frame 2 is shown from 0.1 s to 0.5 s.
    gap = [0.0, 0.05, 0.1, 0.5]  # mean interval 1/6 s, span 2/3 s
    assert video.resample_indices(gap, 10) == [0, 2, 2, 2, 2, 3]


@needs_shared
def test_fps_resampling_uses_timestamps_not_indices():
    # demo_skeleton.mp4: pts step 512/15360 s (1/30 s) but one gap of 6 steps
    # between frames 66 and 67, so the average rate is 28.05, not 30.
    path = VIDEOS / "mmaction2" / "demo_skeleton.mp4"
    every = video.decode_video(path, short_side=16)
    assert len(every.frames) == 72
    assert every.timestamps[67] == pytest.approx(72 / 30)  # after the gap
    resampled = video.decode_video(path, short_side=16, fps=30)
    # Frame k of the output is shown at k/30 s: index k up to 66, frame 66 for
    # k = 67..71 (inside the gap), then k - 5 up to the last frame.
    expected = list(range(67)) + [66] * 5 + list(range(67, 72))
    assert len(resampled.frames) == len(expected) == 77
    for got, i in zip(resampled.frames, expected):
        np.testing.assert_array_equal(got, every.frames[i])
    # Index-based sampling at 30/28.05 would have taken different frames.
    by_index = np.floor(np.arange(77) * 72 / 77).astype(int).tolist()
    assert by_index != expected
    assert resampled.fps == 30.0


@needs_shared
def test_avi_with_out_of_order_pts_gets_index_times():
    decoded = video.decode_video(VIDEOS / "mmaction2" / "test.avi", short_side=32)
    assert decoded.source_fps == 25.0
    np.testing.assert_allclose(decoded.timestamps[:4], [0, 0.04, 0.08, 0.12])
    half = video.decode_video(VIDEOS / "mmaction2" / "test.avi", short_side=32,
                              fps=12.5)
    assert len(half.frames) == 82  # 164 frames at 25 fps -> every other one
    np.testing.assert_array_equal(half.frames[5], decoded.frames[10])


@needs_shared
def test_max_frames_stops_early_and_keeps_the_first_frames():
    path = VIDEOS / "mmaction2" / "rawvideo_part_0.mp4"
    full = video.decode_video(path, short_side=32)
    first = video.decode_video(path, short_side=32, max_frames=10)
    assert len(first.frames) == 10 and first.num_decoded == 10
    for a, b in zip(first.frames, full.frames):
        np.testing.assert_array_equal(a, b)
    slow = video.decode_video(path, short_side=32, fps=10, max_frames=4)
    assert len(slow.frames) == 4
    for k, frame in enumerate(slow.frames):  # 30 fps -> every third frame
        np.testing.assert_array_equal(frame, full.frames[3 * k])


@needs_shared
def test_corrupted_stream_raises_instead_of_returning_a_short_clip():
    with pytest.raises(video.VideoDecodeError) as info:
        video.decode_video(VIDEOS / "decord" / "corrupted.mp4")
    assert "after 28 frames" in info.value.reason
    assert "InvalidDataError" in info.value.reason
    assert info.value.path.endswith("corrupted.mp4")


def test_empty_text_missing_and_audio_only_files_raise(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n")
    audio = tmp_path / "tone.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(800, np.int16).tobytes())
    cases = {
        empty: "empty file",
        text: "cannot open",
        tmp_path / "absent.mp4": "not found",
        audio: "no video stream (streams: audio)",
    }
    for path, words in cases.items():
        with pytest.raises(video.VideoDecodeError) as info:
            video.decode_video(path)
        assert words in info.value.reason, (path, info.value.reason)
        assert str(path) in str(info.value)


def test_video_stream_without_frames_raises(tmp_path):
    path = tmp_path / "noframes.mp4"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 32, 32
        stream.pix_fmt = "yuv420p"
        c.start_encoding()  # header and trailer, no frame
    assert path.stat().st_size > 0
    with pytest.raises(video.VideoDecodeError) as info:
        video.decode_video(path)
    # FFmpeg drops a stream without packets from the header.
    assert info.value.reason in ("no frames decoded", "no video stream (streams: none)")


def test_decode_error_pickles_for_worker_processes():
    import pickle

    error = pickle.loads(pickle.dumps(video.VideoDecodeError("a.mp4", "broken")))
    assert (error.path, error.reason) == ("a.mp4", "broken")


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="short_side"):
        video.decode_video("x.mp4", short_side=0)
    with pytest.raises(ValueError, match="fps"):
        video.decode_video("x.mp4", fps=-1)
    with pytest.raises(ValueError, match="multiple of 90"):
        video.rotate(np.zeros((2, 2, 3), np.uint8), 45)


def test_encode_jpeg_is_rgb_and_close_to_the_frame():
    import tensorflow as tf

    y, x = np.mgrid[0:64, 0:96]
    frame = np.stack([x * 2, y * 3, np.full_like(x, 200)], -1).astype(np.uint8)
    frame[:16, :16] = (255, 0, 0)  # a red corner: channel order check
    data = video.encode_jpeg(frame, quality=95)
    decoded = tf.io.decode_jpeg(data).numpy()  # independent decoder
    assert decoded.shape == frame.shape
    assert psnr(decoded, frame) > 30  # 4:2:0 chroma blurs the red edge
    r, g, b = decoded[4:12, 4:12].reshape(-1, 3).mean(0)
    assert r > 220 and g < 40 and b < 40
    assert len(video.encode_jpeg(frame, quality=30)) < len(data)
    with pytest.raises(ValueError, match="uint8"):
        video.encode_jpeg(frame.astype(np.float32))


def cut_copy(src, dst, fraction=0.4):
    """The first `fraction` of `src`'s bytes, written to `dst`."""
    data = pathlib.Path(src).read_bytes()
    pathlib.Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return dst


def faststart_copy(src, dst):
    """`src` remuxed (no re-encoding) with its index (`moov`) first."""
    with av.open(str(src)) as inp, av.open(str(dst), "w",
                                           options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


@needs_shared
def test_cut_webm_is_truncated_not_a_short_clip(tmp_path):
    # VP9 in WebM: no count in the header; the cut file decodes cleanly.
    cut = cut_copy(VIDEOS / "ssv2" / "166766.webm", tmp_path / "166766.webm")
    with pytest.raises(video.VideoDecodeError) as info:
        video.decode_video(cut, short_side=32)
    reason = info.value.reason
    assert reason.startswith("truncated: decoded ") and reason.endswith(
        " of about 49 frames"), reason
    kept = video.decode_video(cut, short_side=32, keep_truncated=True)
    assert kept.truncated == reason
    assert 0 < len(kept.frames) < 45
    full = video.decode_video(VIDEOS / "ssv2" / "166766.webm", short_side=32)
    assert full.truncated is None
    for a, b in zip(kept.frames, full.frames):
        np.testing.assert_array_equal(a, b)  # the cut keeps the first frames


@needs_shared
def test_cut_mp4_is_truncated_with_the_index_last_or_first(tmp_path):
    src = VIDEOS / "mmaction2" / "test.mp4"  # 300 frames, `moov` after `mdat`
    with pytest.raises(video.VideoDecodeError) as info:
        video.decode_video(cut_copy(src, tmp_path / "cut.mp4"))
    assert info.value.reason.startswith(
        "truncated: decoded 0 frames; the file ends inside its 'mdat' box ")
    fast = faststart_copy(src, tmp_path / "fast.mp4")
    assert len(video.decode_video(fast, short_side=32).frames) == 300
    cut = cut_copy(fast, tmp_path / "fast_cut.mp4")
    with pytest.raises(video.VideoDecodeError) as info:
        video.decode_video(cut, short_side=32)
    assert info.value.reason.startswith("truncated: decoded ")
    assert " of about 300 frames; the file ends inside its 'mdat' box" in (
        info.value.reason)
    kept = video.decode_video(cut, short_side=32, keep_truncated=True)
    assert 0 < len(kept.frames) < 150 and kept.truncated.startswith("truncated")


@needs_shared
def test_files_without_a_duration_are_not_checked():
    path = VIDEOS / "moviepy" / "no_duration.webm"
    with av.open(str(path)) as container:
        assert video.declared_frames(container, container.streams.video[0]) is None
    decoded = video.decode_video(path, short_side=32)
    assert len(decoded.frames) == 74 and decoded.truncated is None


def test_truncation_tolerance_and_box_walk_by_hand(tmp_path):
    assert not video.is_short(47, 49.0)  # 2 frames short: rounding
    assert video.is_short(46, 49.0)
    assert not video.is_short(303, 311.4)  # 3 % of 311.4 = 9.3 frames
    assert video.is_short(302, 311.4)
    assert not video.is_short(1, None)
    def box(kind, payload):
        return (8 + len(payload)).to_bytes(4, "big") + kind + payload

    whole = box(b"ftyp", b"isom") + box(b"mdat", b"x" * 100) + box(b"moov", b"y" * 8)
    (tmp_path / "whole.mp4").write_bytes(whole)
    (tmp_path / "cut.mp4").write_bytes(whole[:60])
    (tmp_path / "other.bin").write_bytes(b"\x00\x00\x01\x00RIFF" + b"z" * 10)
    assert video.cut_box(tmp_path / "whole.mp4") is None
    assert video.cut_box(tmp_path / "cut.mp4") == (
        "the file ends inside its 'mdat' box (48 of 108 bytes present)")  # 60 - 12
    assert video.cut_box(tmp_path / "other.bin") is None


def test_a_directory_named_like_a_video_gets_its_own_reason(tmp_path):
    (tmp_path / "x.mp4").mkdir()
    with pytest.raises(video.VideoDecodeError) as info:
        video.decode_video(tmp_path / "x.mp4")
    assert info.value.reason == "is a directory, not a video file"
