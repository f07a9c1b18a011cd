"""Writes `inference_clip.mp4` and `inference_reference.npz` for
tests/evaluation/test_inference.py.

The pinned probabilities were computed by the inference code as it was before
it moved out of `klassterfork/cli/predict.py` (commit 64d1046: `decode_views`
then `predict_views(..., norm=...)`); the test recomputes them with
`klassterfork.evaluation.inference.predict_video`, so the move is shown to
leave the scores unchanged. Run from the repository root:

    python tests/evaluation/testdata/make_inference_reference.py [--video-only]
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
VIDEO = os.path.join(HERE, "inference_clip.mp4")
REFERENCE = os.path.join(HERE, "inference_reference.npz")
# 2 clips x 3 crops of 4 frames every 2nd, 32 px from a 40 px short side.
STAGE = {"datasets": {"val": {
    "clip_len": 4, "crop_size": 32, "num_clips": 2, "num_crops": 3, "frame_step": 2,
    "resize_short_side": 40, "standardize": "per_frame"}}}
DECODE = {"short_side": 48, "fps": None, "max_frames": None}


def clip_frames():
    """17 frames of 48x64: a bright square sliding right over dark noise."""
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 60, size=(17, 48, 64, 3), dtype=np.uint8)
    for t in range(17):
        frames[t, 10:26, 2 + 2 * t:18 + 2 * t] = (230, 120, 40)
    return frames


def tiny_model():
    """A small 3D CNN whose weights come from a numpy seed (not TF's RNG).

    Flatten rather than global pooling, so every clip and crop gets clearly
    different logits (a mistake in the views or in the averaging shows).
    """
    import keras

    inputs = keras.Input((4, 32, 32, 3))
    x = keras.layers.Conv3D(6, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(0.0, 0.15, size=tuple(w.shape)).astype("float32")
                       for w in model.weights])
    return model


def transform():
    from klassterfork.evaluation.inference import eval_transform

    t = eval_transform(STAGE)
    t["decode"] = dict(DECODE)
    return t


def main(argv):
    from klassterfork.data.conversion.synthetic import write_video

    if not os.path.exists(VIDEO):
        write_video(VIDEO, clip_frames(), fps=8)
    if "--video-only" in argv:
        return 0
    from klassterfork.evaluation.inference import predict_video

    probs = predict_video(VIDEO, tiny_model(), transform(), batch_size=4)
    np.savez(REFERENCE, probs=probs)
    print(f"wrote {REFERENCE}: {np.round(probs, 4)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
