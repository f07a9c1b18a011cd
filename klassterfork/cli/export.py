"""`kf-export --model M.keras --output DIR`: a SavedModel that serves uint8 clips.

The `serve` endpoint takes `video`: uint8 (B, T, H, W, 3) at the model's crop
size, applies the run's own standardization (from `config.resolved.json`
beside the model, as `kf-predict` finds it), runs the model and returns
softmax probabilities (B, num_classes). TF Serving and `tf.saved_model.load`
clients then need no copy of our preprocessing.
"""

import argparse
import os
import shutil
import sys


def export_uint8(model, path, *, norm):
    """Writes a SavedModel at `path` whose `serve(video uint8) -> probabilities`.

    Args:
        model: keras.Model taking standardized (B, T, H, W, 3) float clips.
        path: str. Output folder (replaced atomically).
        norm: dict. `transforms.standardize` keywords: mode, mean, std.
    """
    import keras
    import tensorflow as tf

    from klassterfork.data import transforms

    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.uint8, name="video")

    def serve(video):
        x = transforms.standardize(video, norm["mode"], mean=norm.get("mean"),
                                   std=norm.get("std"))
        return tf.nn.softmax(tf.cast(model(x, training=False), tf.float32), axis=-1)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[spec])
    tmp = path.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    archive.write_out(tmp, verbose=False)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kf-export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a .keras file from a training run")
    parser.add_argument("--config", help="config (default: config.resolved.json of the run)")
    parser.add_argument("--output", required=True, help="SavedModel folder to write")
    args = parser.parse_args(argv)
    from klassterfork.evaluation import inference as predict

    try:
        config, stage_index = (args.config, -1) if args.config else predict.find_config(
            args.model)
        if config is None:
            raise predict.PredictError(f"no config.resolved.json beside {args.model}; "
                                       "pass --config")
        norm = predict.eval_transform(predict.load_stage(config, stage_index))["norm"]
        import keras

        model = keras.saving.load_model(args.model)
    except (predict.PredictError, OSError, ValueError) as err:
        print(f"kf-export: {err}", file=sys.stderr)
        return 2
    export_uint8(model, args.output, norm=norm)
    print(f"wrote {args.output}: serve(video uint8 {tuple(model.inputs[0].shape[1:])}) "
          f"-> probabilities; standardize={norm['mode']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
