"""`kf-convert --runner beam`: the converter as an Apache Beam pipeline.

The same steps as the local runner, through the same functions of
`convert` (nothing here decodes, serializes or reports by itself):

    plan (here)  ->  Create(one element per video of the shards to write)
                 ->  Reshuffle (spread the videos over the workers)
                 ->  convert.convert_entry    (decode, JPEG, serialize)
                 ->  GroupByKey(shard index)  (shard assignment)
                 ->  convert.write_shard      (atomic shard + its report)
    finish (here, from the reports on disk: manifest, labels.txt, --strict)

so the records, the manifest and the failure reasons equal the local
runner's. A re-run skips shards whose file and report exist (the plan
leaves them out), like the local runner.

Locally it runs on the DirectRunner with `workers` processes
(`--direct_running_mode=multi_processing`); `beam_options` takes any Beam
pipeline options, e.g. `--runner=DataflowRunner ...` (see
docs/convert_beam.md). The output folder must be one every worker can write:
a shared or mounted file system, or an object store URL (`gs://...`): shards
are written through `fs` (fsspec for a URL), to a temporary name, then moved
onto their name. Not `memory://`: it lives in one process, and the
DirectRunner's workers are others.
"""

import os
import shlex

from klassterfork.data.conversion import convert


def pipeline_options(beam_options, workers):
    """Beam `PipelineOptions` from one option string.

    Without a `--runner`, the DirectRunner in multi-processing mode with
    `workers` processes (default: CPU count), unless the string sets them.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    args = shlex.split(beam_options or "")
    names = {a.split("=")[0] for a in args}
    if "--runner" not in names:
        if "--direct_num_workers" not in names:
            args.append(f"--direct_num_workers={workers or os.cpu_count() or 1}")
        if "--direct_running_mode" not in names:
            args.append("--direct_running_mode=multi_processing")
        if "--default_sdk_harness_log_level" not in names:
            # The worker processes log every bundle at INFO on stderr.
            args.append("--default_sdk_harness_log_level=WARNING")
    return PipelineOptions(args)


def _convert(element, options):
    shard, position, entry = element
    return shard, (position, entry, convert.convert_entry(entry, options))


def _write(element, out_dir, names, settings):
    shard, items = element
    items = sorted(items, key=lambda item: item[0])
    convert.write_shard(out_dir, names[shard], [entry for _, entry, _ in items],
                        [result for _, _, result in items], settings)
    return shard


def run(annotation, out_dir, *, split, beam_options="", workers=None, strict=False,
        source=None, **plan_args):
    """Converts one split with a Beam pipeline (see the module docstring).

    Args:
        annotation, out_dir, split, strict, source: as `convert.convert`.
        beam_options: str. Beam pipeline options, shell-quoted.
        workers: int or None. DirectRunner processes when `beam_options`
            names no runner. Defaults to the CPU count.
        **plan_args: the conversion settings of `convert.plan`
            (short_side, fps, max_frames, num_shards, jpeg_quality, flow,
            flow_bound, keep_truncated).

    Returns:
        dict, the manifest (with "runner": "beam").

    Raises:
        ImportError: Apache Beam is not installed.
        ValueError: bad arguments (as `convert.plan`), or bad Beam options.
        ConversionError: with `strict`, when anything was not converted.
        RuntimeError: the pipeline ended without writing every shard.
    """
    try:
        import apache_beam as beam
    except ImportError as e:
        raise ImportError(
            "--runner beam needs Apache Beam: pip install 'klassterfork[beam]' "
            f"(or apache-beam==2.77.*). Received: {e}"
        ) from e
    job = convert.plan(annotation, out_dir, split=split, **plan_args)
    options = pipeline_options(beam_options, workers)
    todo = job.todo
    if todo:
        tasks = [(k, j, job.entries[i])
                 for k in todo for j, i in enumerate(job.shards[k])]
        with beam.Pipeline(options=options) as p:
            _ = (
                p
                | "Videos" >> beam.Create(tasks, reshuffle=False)
                | "Spread" >> beam.Reshuffle()
                | "DecodeEncode" >> beam.Map(_convert, job.options)
                | "AssignShards" >> beam.GroupByKey()
                | "WriteShards" >> beam.Map(_write, job.out_dir, job.names,
                                            job.settings)
            )
    done = convert.load_reports(job)
    if done.todo:
        raise RuntimeError(
            f"the Beam pipeline ended without writing shards "
            f"{', '.join(done.names[k] for k in done.todo)} in {out_dir}"
        )
    runner = options.get_all_options().get("runner") or "DirectRunner"
    return convert.finish(done, annotation, source=source, strict=strict,
                          extra={"runner": {"name": "beam", "beam_runner": runner}})
