"""`kf-export --model M.keras --output OUT [--format saved_model|onnx|litert]`.

Writes the model as a function of uint8 clips: `serve` takes `video`: uint8
(B, T, H, W, 3) at the model's input size, applies the run's own
standardization (from `config.resolved.json` beside the model, as
`kf-predict` finds it), runs the model and returns softmax probabilities
(B, num_classes). TF Serving, onnxruntime and LiteRT clients then need no
copy of our preprocessing.

Formats (`klassterfork.evaluation.export`): "saved_model" (a folder, the
default), "onnx" (one file; onnxruntime; input "video", output
"probabilities") and "litert" (one `.tflite` file; ai-edge-litert's
Interpreter). A model family the format cannot express exits 2 with one
paragraph naming the op. `--output` may be a `gs://` (or TF `ram://`) path:
every output goes through `klassterfork.files`.
"""

import argparse
import sys

from klassterfork.evaluation.export import FORMATS


def _parser():
    parser = argparse.ArgumentParser(
        prog="kf-export", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--model", required=True, help="a .keras file from a training run"
    )
    parser.add_argument(
        "--config", help="config (default: config.resolved.json of the run)"
    )
    parser.add_argument(
        "--output",
        required=True,
        help="SavedModel folder, or .onnx / .tflite file to write "
        "(local, gs:// or another tf.io.gfile scheme)",
    )
    parser.add_argument(
        "--format",
        default="saved_model",
        choices=FORMATS,
        help="output format (default: saved_model)",
    )
    return parser


def _load(args, predict):
    """(keras model, the run's standardization keywords)."""
    config, stage_index = (
        (args.config, -1) if args.config else predict.find_config(args.model)
    )
    if config is None:
        raise predict.PredictError(
            f"no config.resolved.json beside {args.model}; pass --config"
        )
    norm = predict.eval_transform(predict.load_stage(config, stage_index))["norm"]
    import keras

    import klassterfork.models  # noqa: F401  (registers the custom layers)

    return keras.saving.load_model(args.model, compile=False), norm


def main(argv=None):
    """Console entry point; returns the exit status (0, or 2 on an error)."""
    args = _parser().parse_args(argv)
    import tensorflow as tf

    from klassterfork.evaluation import export
    from klassterfork.evaluation import inference as predict

    try:
        model, norm = _load(args, predict)
        export.export(model, args.output, norm=norm, format=args.format)
    except ImportError as err:
        print(
            f"kf-export: --format {args.format} needs the `export` extra "
            f"(pip install 'klassterfork[export]'): {err}",
            file=sys.stderr,
        )
        return 2
    except (predict.PredictError, export.ExportError, OSError, ValueError) as err:
        print(f"kf-export: {err}", file=sys.stderr)
        return 2
    except tf.errors.OpError as err:
        # A remote store's failures (no bucket, no credentials) are TF errors,
        # not OSError; they get the same one-line report.
        print(f"kf-export: {args.output}: {err.message}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.output} ({args.format}): serve(video uint8 "
        f"{tuple(model.inputs[0].shape[1:])}) -> probabilities; "
        f"standardize={norm['mode']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
