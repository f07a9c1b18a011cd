"""What the train and eval pipelines share: the shard list, decoding only the
frames (and the window) a clip needs, flips, stacked flow, labels, tf.data
options. Shapes: `(T, H, W, C)` is one clip.
"""

import os

import tensorflow as tf


AUTOTUNE = tf.data.AUTOTUNE


def list_files(files):
    """Shard paths from a glob pattern, a directory, or a list of paths.

    A directory means every `*.tfrecord` in it. Globs are sorted so the
    order (and therefore the seeded shuffle) does not depend on the file
    system.

    Returns:
        list of str, non-empty.

    Raises:
        ValueError: when nothing matches or a listed file does not exist.
    """
    if isinstance(files, (str, os.PathLike)):
        pattern = os.fspath(files)
        if tf.io.gfile.isdir(pattern):
            pattern = os.path.join(pattern, "*.tfrecord")
        paths = sorted(tf.io.gfile.glob(pattern))
        if not paths:
            raise ValueError(
                "`files` matched no record files. Received: "
                f"files={os.fspath(files)!r} (a glob pattern, a directory of "
                "*.tfrecord, or a list of paths)"
            )
        return paths
    paths = [os.fspath(f) for f in files]
    if not paths:
        raise ValueError("`files` must not be empty. Received: files=[]")
    missing = [p for p in paths if not tf.io.gfile.exists(p)]
    if missing:
        raise ValueError(
            f"`files` lists {len(missing)} missing file(s), e.g. {missing[0]!r}"
        )
    return paths


def decode_frames(encoded, window=None, channels=3):
    """Decodes JPEG frames, keeping only `window` when one is given.

    The window is sliced from the full decode rather than decoded with
    `tf.image.decode_and_crop_jpeg`: at the stored short side of 128 the
    cropped decoder cost ~15 % more CPU than decoding the whole frame
    (libjpeg's scanline skipping does not pay for 112^2 of 128x171; bench
    in BENCHMARKS.md), and the sliced pixels are exactly those of the full
    frame (the cropped decoder's chroma upsampling differs by up to 6 levels
    at some window edges).

    Args:
        encoded: string [T]. With a static T the decodes are unrolled so that
            tf.data runs them in parallel.
        window: int32 [4] `[y, x, h, w]`, or None for full frames.
        channels: int. 3 (RGB) or 1 (flow). Defaults to 3.

    Returns:
        uint8 [T, h, w, channels].
    """

    if window is not None:
        # Built once, not per frame: each frame's slice then costs one node
        # (a tf.data function runs every node, constants included).
        window = tf.convert_to_tensor(window, tf.int32)
        begin = tf.concat([window[:2], [0]], axis=0)
        size = tf.concat([window[2:], [channels]], axis=0)

    def one(contents):
        image = tf.io.decode_jpeg(contents, channels=channels)
        if window is None:
            return image
        return tf.slice(image, begin, size)

    length = encoded.shape[0]
    if length is not None:
        return tf.stack([one(c) for c in tf.unstack(encoded, num=length)])
    return tf.map_fn(one, encoded, fn_output_signature=tf.uint8)


def encoded_frames(example, indices, modality):
    """RGB: string [T]. Flow: string [T, 2], the (x, y) JPEGs of each index."""
    if modality == "rgb":
        return tf.gather(example["frames"], indices)
    return tf.stack([tf.gather(example["flow_x"], indices),
                     tf.gather(example["flow_y"], indices)], axis=1)


def first_image(encoded, modality):
    return encoded[0] if modality == "rgb" else encoded[0, 0]


def decode_clip(encoded, window, modality):
    """uint8 [T, h, w, 3] (RGB) or [T, h, w, 2] (flow x, y)."""
    if modality == "rgb":
        return decode_frames(encoded, window)
    return tf.concat([decode_frames(encoded[:, 0], window, channels=1),
                      decode_frames(encoded[:, 1], window, channels=1)], axis=-1)


def flip_left_right(clip):
    """[T, H, W, C] -> the same, each frame mirrored left-right.

    Reverses a [T * H, W, C] view: TF's reverse has a fast path for the
    middle axis of a 3-D tensor with C <= 4 (row copies), ~3x faster than
    reversing axis 2 of the 4-D clip (Eigen's generic per-element loop).
    """
    shape = tf.shape(clip)
    rows = tf.reshape(clip, tf.stack([shape[0] * shape[1], shape[2], shape[3]]))
    return tf.reshape(tf.reverse(rows, axis=[1]), shape)


def flip_clip(clip, modality):
    """Horizontal flip; for flow the x component also changes sign, which in
    the 8-bit encoding q = (f + b) * 255 / 2b is q -> 255 - q."""
    clip = tf.ensure_shape(flip_left_right(clip), clip.shape)
    if modality == "flow":
        clip = tf.concat([255 - clip[..., :1], clip[..., 1:]], axis=-1)
    return clip


def stack_flow(clip):
    """[..., T, S, S, 2] flow clip -> [..., 1, S, S, 2T], channels x1, y1, x2, ...

    The stacked-flow input of two-stream networks (one "frame" of 2L channels).
    """
    rank = len(clip.shape)
    perm = list(range(rank - 4)) + [rank - 3, rank - 2, rank - 4, rank - 1]
    moved = tf.transpose(clip, perm)  # [..., S, S, T, 2]
    shape = tf.shape(moved)
    stacked = tf.reshape(moved, tf.concat([shape[:-2], [shape[-2] * shape[-1]]], 0))
    return tf.expand_dims(stacked, axis=-4)


def first_label(labels):
    """The first entry of `labels` as int32, -1 for an unlabelled video."""
    labels = tf.cast(labels, tf.int32)
    return tf.concat([labels, tf.constant([-1], tf.int32)], axis=0)[0]


def graph_fn(fn):
    # Pure tensor code: autograph has nothing to convert (and warns on closures).
    return tf.autograph.experimental.do_not_convert(fn)


def dataset_options():
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    return options
