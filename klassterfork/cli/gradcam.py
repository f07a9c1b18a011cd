"""`kf-gradcam VIDEO [VIDEO...] --model MODEL.keras --out DIR`: Grad-CAM pictures.

Each video is decoded and cut into views exactly as `kf-predict` does
(`klassterfork.evaluation.inference.run_video`: the eval transform of the
model's config); the prediction averages every view,
and the Grad-CAM of one view (`--view`, default 0: the first clip, centre
crop) is written as `DIR/<video stem>_gradcam.gif` (frames with the JET
overlay, animated) and `DIR/<video stem>_gradcam.png` (frames over overlays,
with the true label and the top-5 predictions).

    python tools/gradcam.py clip.mp4 --model exp/stage0/best.keras --out cams \
        --true-label "Moving something up"
"""

import argparse
import os
import sys

import numpy as np

from klassterfork.evaluation import inference


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="kf-gradcam", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    p.add_argument("--model", required=True, help="a saved model (.keras)")
    p.add_argument("--config", help="config.resolved.json or hjson (default: beside "
                   "the model)")
    p.add_argument("--labels", help="class list (default: the manifest's names)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--true-label", action="append", default=[],
                   help="true class (name or index); once, or once per video")
    p.add_argument("--class-index", type=int, help="class to explain (default: the "
                   "true label when given, else the predicted class)")
    p.add_argument("--layer", help="target layer name (default: the input of the "
                   "global pooling layer, i.e. the last conv block's output)")
    p.add_argument("--view", type=int, default=0, help="view to explain "
                   "(clip * num_crops + crop; default 0)")
    p.add_argument("--short-side", type=int, help="decode short side (default: the "
                   "converter's)")
    p.add_argument("--fps", type=float, help="GIF frame rate (default 4)", default=4.0)
    p.add_argument("--scale", type=int, default=2, help="GIF upscaling factor")
    return p.parse_args(argv)


def _class_of(text, names):
    if text is None:
        return None
    if text in names:
        return names.index(text)
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise ValueError(f"--true-label {text!r} is neither a class name nor an index "
                     f"below {len(names)}")


def explain(path, model, transform, names, *, out_dir, true_index=None,
            class_index=None, layer=None, view=0, fps=4.0, scale=2):
    """Writes the GIF and PNG of one video; returns a summary dict."""
    from klassterfork.analysis import gradcam

    video = inference.run_video(path, model, transform)
    views = video.views
    if not 0 <= view < len(views):
        raise ValueError(f"--view must be in [0, {len(views)}). Received: {view}")
    clip = np.asarray(inference.model_input(views[view:view + 1], transform["norm"]))[0]
    target = class_index if class_index is not None else true_index
    result = gradcam.grad_cam(model, clip, class_index=target, layer_name=layer)
    overlays = gradcam.overlay(views[view], result["cam"])
    stem = os.path.splitext(os.path.basename(path))[0]
    gif = os.path.join(out_dir, f"{stem}_gradcam.gif")
    png = os.path.join(out_dir, f"{stem}_gradcam.png")
    gradcam.write_gif(gif, overlays, fps=fps, scale=scale)
    best = inference.top_k(video.probs, names, 5)
    explained = names[result["class_index"]]
    gradcam.write_strip(
        png, views[view], overlays, predictions=[(n, p) for _, n, p in best],
        true_label=None if true_index is None else names[true_index],
        title=f"{os.path.basename(path)}  Grad-CAM of '{explained}' at "
        f"{result['layer']}",
    )
    return {"gif": gif, "png": png, "class_index": result["class_index"],
            "layer": result["layer"], "top1": best[0][1]}


def main(argv=None):
    """Console entry point; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from klassterfork.data.conversion.video import VideoDecodeError

    if len(args.true_label) not in (0, 1, len(args.videos)):
        print("kf-gradcam: give --true-label once, or once per video. Received: "
              f"{len(args.true_label)} for {len(args.videos)} videos", file=sys.stderr)
        return 2
    try:
        model, transform, names = inference.load_setup(
            args.model, config=args.config, labels=args.labels,
            short_side=args.short_side)
        truths = [_class_of(t, names) for t in args.true_label]
    except (inference.PredictError, ValueError) as err:
        print(f"kf-gradcam: {err}", file=sys.stderr)
        return 2
    truths = truths * len(args.videos) if len(truths) == 1 else truths
    os.makedirs(args.out, exist_ok=True)
    failed = 0
    for i, path in enumerate(args.videos):
        try:
            info = explain(path, model, transform, names, out_dir=args.out,
                           true_index=truths[i] if truths else None,
                           class_index=args.class_index, layer=args.layer,
                           view=args.view, fps=args.fps, scale=args.scale)
        except (VideoDecodeError, ValueError) as err:
            print(f"kf-gradcam: {path}: {getattr(err, 'reason', err)}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: top-1 {info['top1']!r}; Grad-CAM of class "
              f"{names[info['class_index']]!r} at {info['layer']}")
        print(f"  wrote {info['gif']}\n  wrote {info['png']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
