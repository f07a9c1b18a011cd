"""augment.py against PIL (what timm's RandAugment calls), numpy and hand values."""

import math
import random

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from klassterfork.data.transforms import augment as aug


def seed(i):
    return tf.constant([i, 17], tf.int64)


def make_clip(t=4, h=20, w=28, rng_seed=0):
    """Frames with different histograms (random, low-range, smooth, 2-valued)."""
    rng = np.random.default_rng(rng_seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [
        rng.integers(0, 256, (h, w, 3)),
        rng.integers(60, 140, (h, w, 3)),
        np.stack([xx * 9, yy * 12, (xx + yy) * 5], -1) % 256,
        np.where(rng.random((h, w, 1)) < 0.3, [10, 200, 90], [250, 40, 90]),
    ]
    return np.stack(frames[:t]).astype(np.uint8)


CLIP = make_clip()
SMOOTH = CLIP[[2, 0]]  # a smooth and a noisy frame for geometry


def pil_frames(fn, clip):
    """Reference: the PIL function on each frame, as VideoMAE's AugmentOp."""
    return np.stack([np.asarray(fn(Image.fromarray(f))) for f in clip])


def run(fn, clip, *args, **kwargs):
    return fn(tf.constant(clip), *args, **kwargs).numpy()


# --- pixel / histogram ops: exact against PIL ---------------------------------


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (aug.auto_contrast, ImageOps.autocontrast),
        (aug.equalize, ImageOps.equalize),
        (aug.invert, ImageOps.invert),
    ]
    + [
        (lambda c, b=b: aug.posterize(c, b), lambda im, b=b: ImageOps.posterize(im, b))
        for b in range(1, 9)
    ]
    + [
        (lambda c, t=t: aug.solarize(c, t), lambda im, t=t: ImageOps.solarize(im, t))
        for t in (0, 1, 128, 230, 255, 256)
    ],
)
def test_point_and_histogram_ops_equal_pil(ours, theirs):
    np.testing.assert_array_equal(run(ours, CLIP), pil_frames(theirs, CLIP))


def test_equalize_and_autocontrast_on_flat_and_two_valued_frames():
    flat = np.full((2, 5, 6, 3), 77, np.uint8)
    np.testing.assert_array_equal(run(aug.equalize, flat), flat)  # identity lut
    np.testing.assert_array_equal(run(aug.auto_contrast, flat), flat)
    two = np.where(np.arange(30).reshape(1, 5, 6, 1) % 3 == 0, 50, 100)
    two = np.broadcast_to(two, (1, 5, 6, 3)).astype(np.uint8)
    # by hand: lo 50 -> 0, hi 100 -> int(100 * 5.1 - 50 * 5.1) = 254 in float64
    # (254.99999999999997), PIL's own quirk; 255 / 51 = 5 is exact: 51 -> 255.
    np.testing.assert_array_equal(
        run(aug.auto_contrast, two), np.where(two == 50, 0, 254)
    )
    np.testing.assert_array_equal(
        run(aug.auto_contrast, two - 50), np.where(two == 50, 0, 254)
    )
    np.testing.assert_array_equal(
        run(aug.auto_contrast, np.where(two == 50, 0, 51).astype(np.uint8)),
        np.where(two == 50, 0, 255),
    )
    np.testing.assert_array_equal(
        run(aug.equalize, two), pil_frames(ImageOps.equalize, two)
    )


def test_posterize_by_hand_and_zero_bits():
    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    np.testing.assert_array_equal(run(aug.posterize, values, 3), values & 0b11100000)
    np.testing.assert_array_equal(run(aug.posterize, values, 0), 0)  # old PIL: black
    np.testing.assert_array_equal(run(aug.posterize, values, 8), values)


def test_solarize_add_equals_timm_lut():
    # timm's solarize_add: lut[i] = min(255, i + add) if i < thresh else i
    for add in (0, 40, 99, 110):
        lut = [min(255, i + add) if i < 128 else i for i in range(256)]
        ref = pil_frames(lambda im, lut=lut: im.point(lut * 3), CLIP)
        np.testing.assert_array_equal(run(aug.solarize_add, CLIP, add), ref)
    values = np.array([0, 127, 128, 200], np.uint8).reshape(1, 1, 4, 1)
    np.testing.assert_array_equal(
        run(aug.solarize_add, values, 110).ravel(), [110, 237, 128, 200]
    )


# --- enhancers: exact against ImageEnhance ------------------------------------


@pytest.mark.parametrize("factor", [0.1, 0.37, 1.0, 1.46, 1.9])
@pytest.mark.parametrize(
    "ours,theirs",
    [
        (aug.color, ImageEnhance.Color),
        (aug.contrast, ImageEnhance.Contrast),
        (aug.brightness, ImageEnhance.Brightness),
        (aug.sharpness, ImageEnhance.Sharpness),
    ],
)
def test_enhancers_equal_pil(ours, theirs, factor):
    ref = pil_frames(lambda im: theirs(im).enhance(factor), CLIP)
    np.testing.assert_array_equal(run(ours, CLIP, factor), ref)


def test_enhancers_by_hand():
    px = np.array([[[[100, 200, 50]]]], np.uint8)  # one RGB pixel
    # brightness: trunc(0.55 * v); 1.9 saturates
    np.testing.assert_array_equal(run(aug.brightness, px, 0.55).ravel(), [55, 110, 27])
    np.testing.assert_array_equal(run(aug.brightness, px, 1.9).ravel(), [190, 255, 95])
    # grey = (19595*100 + 38470*200 + 7471*50 + 32768) >> 16 = 153
    np.testing.assert_array_equal(run(aug.color, px, 0.0).ravel(), [153, 153, 153])
    # contrast on one pixel: mean grey is the grey, 153; 0.5 -> 153 + 0.5 (v - 153)
    np.testing.assert_array_equal(run(aug.contrast, px, 0.5).ravel(), [126, 176, 101])


def test_contrast_uses_each_frames_own_mean():
    clip = np.stack([np.full((4, 4, 3), 20), np.full((4, 4, 3), 220)]).astype(np.uint8)
    clip[:, 0, 0] = 120
    out = run(aug.contrast, clip, 0.0)  # flat frames at each frame's mean grey
    assert len(np.unique(out[0])) == 1 and len(np.unique(out[1])) == 1
    assert out[0, 0, 0, 0] == int((15 * 20 + 120) / 16 + 0.5)
    assert out[1, 0, 0, 0] == int((15 * 220 + 120) / 16 + 0.5)


# --- geometry: PIL Image.transform -------------------------------------------

GEOMETRY = [  # (ours, PIL affine matrix as a function of (w, h))
    (lambda c, **k: aug.rotate(c, 17.0, **k), None, 17.0),
    (lambda c, **k: aug.rotate(c, -28.5, **k), None, -28.5),
    (lambda c, **k: aug.shear_x(c, 0.3, **k), (1, 0.3, 0, 0, 1, 0), None),
    (lambda c, **k: aug.shear_x(c, -0.21, **k), (1, -0.21, 0, 0, 1, 0), None),
    (lambda c, **k: aug.shear_y(c, 0.27, **k), (1, 0, 0, 0.27, 1, 0), None),
    (lambda c, **k: aug.translate_x(c, 5.3, **k), (1, 0, 5.3, 0, 1, 0), None),
    (lambda c, **k: aug.translate_y(c, -6.6, **k), (1, 0, 0, 0, 1, -6.6), None),
]


def pil_geometry(clip, matrix, degrees, resample, fill=(128, 128, 128)):
    if degrees is not None:
        fn = lambda im: im.rotate(degrees, resample=resample, fillcolor=fill)  # noqa: E731
    else:
        fn = lambda im: im.transform(  # noqa: E731
            im.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill
        )
    return pil_frames(fn, clip)


def sample_points(matrix, degrees, h, w):
    """Where each output pixel centre samples the input, PIL coordinates."""
    if degrees is not None:  # PIL's rotate matrix
        a = math.radians(-degrees)
        cos, sin = math.cos(a), math.sin(a)
        cx, cy = w / 2, h / 2
        matrix = (
            cos,
            sin,
            cx - cos * cx - sin * cy,
            -sin,
            cos,
            cy + sin * cx - cos * cy,
        )
    a, b, c, d, e, f = matrix
    y, x = np.mgrid[0:h, 0:w] + 0.5
    return a * x + b * y + c, d * x + e * y + f


@pytest.mark.parametrize("ours,matrix,degrees", GEOMETRY)
def test_geometry_nearest_equals_pil(ours, matrix, degrees):
    got = run(ours, SMOOTH, interpolation="nearest")
    ref = pil_geometry(SMOOTH, matrix, degrees, Image.NEAREST)
    differ = np.any(got != ref, axis=-1)
    # Only samples landing exactly on a pixel edge may round the other way.
    assert differ.mean() <= 0.02, differ.mean()
    assert (got != ref).any(axis=(0, 3)).sum() <= 0.02 * got[0, ..., 0].size


def numpy_bilinear(clip, u, v):
    """Bilinear samples at PIL points (u, v) (pixel centres at i + 0.5), float64."""
    x, y = u - 0.5, v - 0.5
    x0 = np.clip(np.floor(x).astype(int), 0, clip.shape[2] - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, clip.shape[1] - 2)
    dx, dy = (x - x0)[..., None], (y - y0)[..., None]
    f = clip.astype(np.float64)
    top = (1 - dx) * f[:, y0, x0] + dx * f[:, y0, x0 + 1]
    bottom = (1 - dx) * f[:, y0 + 1, x0] + dx * f[:, y0 + 1, x0 + 1]
    return (1 - dy) * top + dy * bottom


@pytest.mark.parametrize("ours,matrix,degrees", GEOMETRY)
def test_geometry_bilinear_equals_pil_inside(ours, matrix, degrees):
    got = run(ours, SMOOTH).astype(int)
    ref = pil_geometry(SMOOTH, matrix, degrees, Image.BILINEAR).astype(int)
    h, w = SMOOTH.shape[1:3]
    u, v = sample_points(matrix, degrees, h, w)
    inside = (u >= 1) & (u <= w - 1) & (v >= 1) & (v <= h - 1)  # 4 neighbours in
    assert inside.mean() > 0.5
    # PIL truncates; where the exact value is an integer its float64 sum may
    # land just below it (254.999... -> 254): we then give 1 more, never less.
    diff = (got - ref)[:, inside]
    assert set(np.unique(diff)) <= {0, 1}
    assert (diff == 0).mean() >= 0.95
    exact = np.floor(numpy_bilinear(SMOOTH, u, v) + 1e-6).astype(int)
    assert (got[:, inside] == exact[:, inside]).mean() >= 0.995
    outside = (u < -1) | (u > w + 1) | (v < -1) | (v > h + 1)
    assert (got[:, outside] == 128).all() and (ref[:, outside] == 128).all()


def test_translate_by_whole_pixels_and_per_channel_fill():
    clip = make_clip(t=2)
    out = run(aug.translate_x, clip, 5.0, fill=(10, 20, 30))
    np.testing.assert_array_equal(out[:, :, :-5], clip[:, :, 5:])  # moves left
    np.testing.assert_array_equal(
        out[:, :, -5:], np.broadcast_to([10, 20, 30], out[:, :, -5:].shape)
    )
    out = run(aug.translate_y, clip, -3.0, interpolation="nearest")
    np.testing.assert_array_equal(out[:, 3:], clip[:, :-3])  # moves down
    np.testing.assert_array_equal(out[:, :3], 128)


def test_rotate_half_turn_by_hand():
    out = run(aug.rotate, SMOOTH, 180.0)
    np.testing.assert_array_equal(out, SMOOTH[:, ::-1, ::-1])


# --- the registry: timm's level -> argument maps ------------------------------


@pytest.mark.parametrize(
    "name,level,reference",
    [
        ("Rotate", 9.0, lambda c: aug.rotate(c, 27.0)),
        ("Rotate", -5.0, lambda c: aug.rotate(c, -15.0)),
        ("Posterize", 9.0, lambda c: aug.posterize(c, 3)),  # int(3.6)
        ("Posterize", -2.0, lambda c: aug.posterize(c, 0)),  # sign ignored
        ("PosterizeIncreasing", 7.0, lambda c: aug.posterize(c, 2)),  # 4 - int(2.8)
        ("Solarize", 9.0, lambda c: aug.solarize(c, 230)),  # int(230.4)
        ("SolarizeIncreasing", 9.0, lambda c: aug.solarize(c, 26)),
        ("SolarizeAdd", -9.0, lambda c: aug.solarize_add(c, 99)),
        ("Color", 9.0, lambda c: aug.color(c, 1.72)),
        ("Contrast", -5.0, lambda c: aug.contrast(c, 1.0)),
        ("ContrastIncreasing", -7.0, lambda c: aug.contrast(c, 0.37)),
        ("BrightnessIncreasing", 10.0, lambda c: aug.brightness(c, 1.9)),
        ("SharpnessIncreasing", 9.0, lambda c: aug.sharpness(c, 1.81)),
        ("ShearX", -10.0, lambda c: aug.shear_x(c, -0.3)),
        ("ShearY", 5.0, lambda c: aug.shear_y(c, 0.15)),
        ("TranslateXRel", 10.0, lambda c: aug.translate_x(c, 0.45 * 28)),
        ("TranslateYRel", -4.0, lambda c: aug.translate_y(c, -0.18 * 20)),
        ("Invert", 3.0, aug.invert),
    ],
)
def test_ops_map_levels_like_timm(name, level, reference):
    got = aug.OPS[name](tf.constant(CLIP), tf.constant(level), 128).numpy()
    ref = reference(tf.constant(CLIP)).numpy()
    assert np.abs(got.astype(int) - ref).max() <= 1  # float32 factors
    assert (got != ref).mean() < 0.01


def test_op_lists_are_timms():
    assert len(aug.DEFAULT_OPS) == len(aug.INCREASING_OPS) == 15
    assert set(aug.DEFAULT_OPS) | set(aug.INCREASING_OPS) <= set(aug.OPS)


# --- rand_augment: one draw per clip -----------------------------------------


def apply_params(clip, params, ops=aug.DEFAULT_OPS):
    """Reference: the drawn ops on each frame separately, one frame at a time."""
    frames = []
    for frame in clip:
        x = tf.constant(frame[None])
        for i, (index, apply) in enumerate(zip(params["op_index"], params["apply"])):
            if apply:
                x = aug.OPS[ops[int(index)]](x, params["level"][i], 128)
        frames.append(x.numpy()[0])
    return np.stack(frames)


@pytest.mark.parametrize(
    "ops,kw",
    [
        (aug.DEFAULT_OPS, dict(num_layers=3, magnitude=9, magnitude_std=0.5)),
        (aug.INCREASING_OPS, dict(num_layers=4, magnitude=7, magnitude_std=0.5)),
    ],
)
def test_rand_augment_is_the_drawn_ops_applied_to_each_frame(ops, kw):
    changed = 0
    for i in range(12):
        params = aug.rand_augment_params(seed(i), num_ops=15, **kw)
        got = aug.rand_augment(CLIP, seed(i), ops=ops, **kw).numpy()
        np.testing.assert_array_equal(got, apply_params(CLIP, params, ops))
        changed += int((got != CLIP).any())
    assert changed >= 6


def test_rand_augment_same_frames_give_same_frames():
    clip = np.repeat(CLIP[:1], 5, axis=0)
    for i in range(20):
        out = aug.rand_augment(clip, seed(i), num_layers=2).numpy()
        assert (out == out[:1]).all()


def test_rand_augment_is_deterministic_per_seed_and_varies_with_it():
    a = aug.rand_augment(CLIP, seed(3), num_layers=4).numpy()
    b = aug.rand_augment(CLIP, seed(3), num_layers=4).numpy()
    np.testing.assert_array_equal(a, b)
    outs = {
        aug.rand_augment(CLIP, seed(i), num_layers=4).numpy().tobytes()
        for i in range(10)
    }
    assert len(outs) >= 8


def test_rand_augment_runs_in_tf_data_graph_like_eager():
    clip = tf.constant(CLIP)
    ds = tf.data.Dataset.range(4).map(
        lambda i: aug.rand_augment(
            clip,
            tf.stack([i, tf.constant(17, tf.int64)]),
            ops=aug.INCREASING_OPS,
            num_layers=2,
            magnitude=7,
        )
    )
    for i, got in enumerate(ds):
        ref = aug.rand_augment(
            CLIP, seed(i), ops=aug.INCREASING_OPS, num_layers=2, magnitude=7
        )
        np.testing.assert_array_equal(got.numpy(), ref.numpy())


def draw_params(n, **kwargs):
    fn = tf.function(lambda s: aug.rand_augment_params(s, num_ops=15, **kwargs))
    draws = [fn(seed(i)) for i in range(n)]
    return {k: np.concatenate([d[k].numpy() for d in draws]) for k in draws[0]}


def test_rand_augment_params_statistics():
    n, layers = 1500, 2
    draws = draw_params(n, num_layers=layers)
    counts = np.bincount(draws["op_index"], minlength=15)
    expected = n * layers / 15
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 36.1, counts  # chi2(14) 99.9% quantile
    assert abs(draws["apply"].mean() - 0.5) < 0.04
    assert abs((draws["level"] < 0).mean() - 0.5) < 0.04
    mag = np.abs(draws["level"])  # N(9, 0.5) clipped to [0, 10]
    assert mag.max() <= 10 and abs(mag.mean() - 9.0) < 0.05
    assert abs(mag.std() - 0.5) < 0.05
    uniform = np.abs(
        draw_params(100, num_layers=10, magnitude=6, magnitude_std=float("inf"))[
            "level"
        ]
    )
    assert uniform.max() <= 6 and abs(uniform.mean() - 3) < 0.2
    fixed = draw_params(5, num_layers=4, magnitude=7, magnitude_std=0.0)["level"]
    np.testing.assert_array_equal(np.abs(fixed), 7.0)


def test_rand_augment_rejects_bad_input():
    with pytest.raises(ValueError, match="Rotat"):
        aug.rand_augment(CLIP, seed(0), ops=["Rotat"])
    with pytest.raises(ValueError, match="uint8"):
        aug.rand_augment(CLIP.astype(np.float32), seed(0))
    with pytest.raises(ValueError, match="interpolation"):
        aug.rotate(CLIP, 3.0, interpolation="bicubic")


# --- random erasing -----------------------------------------------------------


def erased(clips, seed=seed(0), **kwargs):
    # As in the pipeline: inside a graph (eager map_fn is slow for big batches).
    fn = tf.function(lambda x, s: aug.random_erasing(x, s, **kwargs))
    return fn(tf.constant(clips, tf.float32), seed).numpy()


def boxes(before, after):
    """(B, T, H, W) changed masks -> per clip (h, w, top, left) or None."""
    out = []
    for mask in np.any(before != after, axis=-1):
        if not mask.any():
            out.append(None)
            continue
        assert (mask == mask[:1]).all()  # the same box in every frame
        rows, cols = np.where(mask[0].any(1))[0], np.where(mask[0].any(0))[0]
        box = np.zeros_like(mask[0])
        box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
        assert (mask[0] == box).all()  # a rectangle
        out.append((len(rows), len(cols), rows[0], cols[0]))
    return out


def timm_boxes(n, h_img, w_img, area=(0.02, 1 / 3), aspect=(0.3, 1 / 0.3)):
    """Reference: SlowFast/VideoMAE `_erase_cube` sampling with Python's random."""
    rnd, out = random.Random(0), []
    for _ in range(n):
        for _ in range(100):
            target = rnd.uniform(*area) * h_img * w_img
            ratio = math.exp(rnd.uniform(math.log(aspect[0]), math.log(aspect[1])))
            h = int(round(math.sqrt(target * ratio)))
            w = int(round(math.sqrt(target / ratio)))
            if w < w_img and h < h_img:
                out.append((h, w, rnd.randint(0, h_img - h), rnd.randint(0, w_img - w)))
                break
    return np.array(out)


def test_random_erasing_boxes_follow_timms_distribution():
    b, h_img, w_img = 600, 16, 24
    clips = np.full((b, 2, h_img, w_img, 3), 3.0, np.float32)  # noise never equals 3
    ours = np.array(boxes(clips, erased(clips, prob=1.0)))
    ref = timm_boxes(4000, h_img, w_img)
    frac, ref_frac = (
        ours[:, 0] * ours[:, 1] / (h_img * w_img),
        ref[:, 0] * ref[:, 1] / (h_img * w_img),
    )
    assert frac.min() >= 0.01 and frac.max() <= 0.45  # bounds, with rounding
    assert (ours[:, 0] < h_img).all() and (ours[:, 1] < w_img).all()
    assert (ours[:, 2] + ours[:, 0] <= h_img).all() and (
        ours[:, 3] + ours[:, 1] <= w_img
    ).all()
    for col in range(4):
        se = ref[:, col].std() / math.sqrt(b)
        assert abs(ours[:, col].mean() - ref[:, col].mean()) < 4 * se, col
    assert abs(frac.mean() - ref_frac.mean()) < 4 * ref_frac.std() / math.sqrt(b)
    assert {0} <= set(ours[:, 2])  # top reaches 0 ...
    assert any(t + h == h_img for h, _, t, _ in ours)  # ... and the bottom edge


def test_random_erasing_prob_and_untouched_pixels():
    rng = np.random.default_rng(1)
    clips = rng.normal(size=(64, 3, 12, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(erased(clips, prob=0.0), clips)
    out = erased(clips, prob=1.0)
    found = boxes(clips, out)
    assert all(box is not None for box in found)
    for clip, new, (h, w, top, left) in zip(clips, out, found):
        keep = np.ones(clip.shape[1:3], bool)
        keep[top : top + h, left : left + w] = False
        np.testing.assert_array_equal(new[:, keep], clip[:, keep])  # bitwise
    big = np.zeros((800, 1, 8, 8, 1), np.float32) + 5
    rate = np.mean([x is not None for x in boxes(big, erased(big, prob=0.25))])
    assert abs(rate - 0.25) < 0.05


def test_random_erasing_is_deterministic_per_seed():
    clips = np.zeros((8, 2, 16, 16, 3), np.float32)
    a = erased(clips, prob=1.0, seed=seed(4))
    np.testing.assert_array_equal(a, erased(clips, prob=1.0, seed=seed(4)))
    assert not np.array_equal(a, erased(clips, prob=1.0, seed=seed(5)))


def test_random_erasing_fill_modes():
    clips = np.full((4, 6, 64, 64, 3), 9.0, np.float32)
    out = erased(clips, prob=1.0, area=(0.3, 1 / 3), mode="pixel")
    noise = out[out != 9.0]
    assert noise.size > 4 * 6 * 1000 * 3
    assert abs(noise.mean()) < 0.02 and abs(noise.std() - 1.0) < 0.02
    box = out[0] != 9.0
    assert not np.array_equal(out[0, 0][box[0]], out[0, 1][box[1]])  # fresh per frame
    rand = erased(clips, prob=1.0, mode="rand")
    for clip in rand:
        for frame in clip:
            colours = np.unique(frame[(frame != 9.0).all(-1)], axis=0)
            assert len(colours) == 1  # one N(0, 1) colour per channel
    const = erased(clips, prob=1.0, mode="const")
    assert set(np.unique(const)) == {0.0, 9.0}


def test_random_erasing_max_count_and_errors():
    clips = np.full((200, 1, 32, 32, 3), 9.0, np.float32)
    out = erased(clips, prob=1.0, mode="rand", max_count=3, area=(0.02, 0.1))
    counts = {len(np.unique(x[0][(x[0] != 9.0).all(-1)], axis=0)) for x in out}
    assert counts == {1, 2, 3}
    with pytest.raises(ValueError, match="mode"):
        erased(clips, mode="noise")
    with pytest.raises(ValueError, match="float"):
        aug.random_erasing(tf.zeros([1, 1, 4, 4, 3], tf.uint8), seed(0))
