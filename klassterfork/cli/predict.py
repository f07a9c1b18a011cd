"""`kf-predict VIDEO [VIDEO...] --model MODEL.keras [--labels labels.txt]`.

Classifies raw video files with a trained model (`.keras`, or the `.onnx`
file of `kf-export --format onnx`, run by onnxruntime), applying the evaluation
transform of the model's config (`datasets.val`): a thin shell over
`klassterfork.evaluation.inference` (`load_setup`, `run_video`), whose
docstring says how a video becomes views and scores.

The config is found beside the model (`stageN/model.keras` ->
`../config.resolved.json`, stage N) unless `--config` names one (the run's
`config.resolved.json` or an hjson config).

Output, per video (the SSv2 baseline's layout, one class per line):

    demo.mp4
      0.912 -> Moving something from left to right
      0.041 -> Moving something up
      ...

`--json` prints one JSON document instead. An unreadable video prints
`kf-predict: <file>: <reason>` to stderr and the others go on; the exit
status is 1 when any video failed.
"""

import argparse
import json
import sys

from klassterfork.evaluation import inference


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="kf-predict", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    p.add_argument("--model", required=True, help="a saved model (.keras), or a "
                   ".onnx file from kf-export --format onnx (it standardizes inside)")
    p.add_argument("--config", help="config.resolved.json or hjson (default: beside "
                   "the model, ../config.resolved.json)")
    p.add_argument("--labels", help="class list (labels.txt: 'index,name' lines, one "
                   "name per line, or json); default: the manifest's label names")
    p.add_argument("--top-k", type=int, default=5, help="classes to print (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--short-side", type=int, help="decode short side (default: the "
                   "converter's, from the manifest; else the video's own size)")
    p.add_argument("--fps", type=float, help="resample to this rate (default: the "
                   "converter's)")
    p.add_argument("--max-frames", type=int, help="keep at most this many frames "
                   "(default: the converter's)")
    p.add_argument("--batch-size", type=int, default=None, help="views per forward "
                   "pass (default: the config's datasets.val.views_per_chunk, else 8)")
    return p.parse_args(argv)


def main(argv=None):
    """Console entry point; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.top_k < 1:
        print(f"kf-predict: --top-k must be >= 1. Received: {args.top_k}",
              file=sys.stderr)
        return 2
    try:
        model, transform, names = inference.load_setup(
            args.model, config=args.config, labels=args.labels,
            short_side=args.short_side, fps=args.fps, max_frames=args.max_frames)
        batch_size = inference.views_per_batch(transform, args.batch_size)
    except (inference.PredictError, ValueError) as err:
        print(f"kf-predict: {err}", file=sys.stderr)
        return 2
    from klassterfork.data.conversion.video import VideoDecodeError

    results, failed = [], 0
    for path in args.videos:
        try:
            result = inference.run_video(path, model, transform, batch_size=batch_size)
        except (VideoDecodeError, ValueError) as err:
            reason = err.reason if isinstance(err, VideoDecodeError) else str(err)
            print(f"kf-predict: {path}: {reason}", file=sys.stderr)
            results.append({"video": path, "ok": False, "error": reason})
            failed += 1
            continue
        best = inference.top_k(result.probs, names, args.top_k)
        results.append({
            "video": path, "ok": True, "num_frames": result.num_frames,
            "num_views": len(result.views),
            "top_k": [{"index": i, "label": n, "probability": p} for i, n, p in best],
        })
        if not args.json:
            print(path)
            for _, name, prob in best:
                print(f"  {prob:.3f} -> {name}")
    if args.json:
        print(json.dumps({"model": args.model, "videos": results}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
