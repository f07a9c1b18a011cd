"""A stage's traced train step and its replica sync, built from plain
values: the model, optimizer, loss and strategy of `trainer.Stage`."""

import tensorflow as tf


def top_k_correct(labels, logits, k):
    """How many of the batch's labels are in their top `k` logits (float).

    Args:
        labels: int (B,), or float (B, C) soft labels (mixup / cutmix), which
            score their dominant class.
        logits: float (B, C). `k` is capped at C.
    """
    if labels.shape.rank == 2:
        labels = tf.argmax(labels, axis=-1)
    k = min(k, logits.shape[-1])
    hits = tf.math.in_top_k(tf.cast(labels, tf.int32), tf.cast(logits, tf.float32), k)
    return tf.reduce_sum(tf.cast(hits, tf.float32))


def make_train_step(model, optimizer, loss_fn, strategy, step, *, global_batch,
                    class_matrix=None, jit_compile=False):
    """The traced global step: one batch per replica, gradients applied.

    Args:
        model, optimizer, loss_fn: built in `strategy`'s scope.
        strategy: tf.distribute.Strategy.
        step: tf.Variable int64, incremented once per call.
        global_batch: int. The batch over all replicas.
        class_matrix: float (C, E) or None. Zero-shot training: the model
            regresses each label's class-name embedding and is ranked by
            cosine against all C rows.
        jit_compile: bool. XLA-compile the step.

    Returns:
        `train_step(iterator, stop) -> dict` of float scalars summed over all
        replicas: `loss` (per-example losses), `top1`, `top5` (hits),
        `count` (clips) and `stop` (the replicas' stop requests).
    """
    matrix = None if class_matrix is None else tf.constant(class_matrix)

    def step_fn(clips, labels, stop):
        with tf.GradientTape() as tape:
            outputs = tf.cast(model(clips, training=True), tf.float32)
            if matrix is None:
                logits = outputs
                per_example = loss_fn(labels, outputs)
            else:
                per_example = loss_fn(tf.gather(matrix, labels), outputs)
                logits = tf.matmul(tf.math.l2_normalize(outputs, axis=-1), matrix,
                                   transpose_b=True)
            # Gradients are summed over replicas, so each replica divides by
            # the GLOBAL batch: the sum is then the mean over all examples.
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(
                    tf.add_n([tf.cast(x, tf.float32) for x in model.losses])
                )
            scaled_loss = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return {
            "loss": tf.reduce_sum(per_example),
            "top1": top_k_correct(labels, logits, 1),
            "top5": top_k_correct(labels, logits, 5),
            "count": tf.cast(tf.shape(labels)[0], tf.float32),
            # The workers' stop requests, summed over all replicas: every
            # worker sees the same value after the same step. (An explicit
            # all-reduce: `strategy.reduce` below treats a value that is
            # not per-replica as equal everywhere and would not send it.)
            # (tf.identity places the value on this replica's device.)
            "stop": tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, tf.identity(stop)),
        }

    def train_step(iterator, stop):
        clips, labels = next(iterator)
        out = strategy.run(step_fn, args=(clips, labels, stop))
        logs = {
            k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in out.items()
        }
        # Counted only once the step has run: without the dependency the
        # increment is free to run before `next` fails on a bad record, and
        # the checkpoint then says one step more than was taken (a resume
        # starts a batch late).
        with tf.control_dependencies(tf.nest.flatten(logs)):
            step.assign_add(1)
        return logs

    return tf.function(train_step, jit_compile=bool(jit_compile))


def make_sync_fn(model, strategy):
    """Averages float non-trainable variables (BN moving statistics) over
    all replicas and workers.

    Keras 3 creates them with aggregation "none", so every replica updates
    its own copy from its own share of the batch and the copies drift
    apart. Averaging before each save keeps one value everywhere; the
    mean of per-replica moving averages is the moving average of the
    per-replica batch statistics, as the averages are linear.

    Returns:
        callable `() -> None`; a no-op with one replica.
    """
    variables = [
        v for v in model.non_trainable_variables
        if v.dtype in ("float16", "bfloat16", "float32", "float64")
    ]
    if not variables or strategy.num_replicas_in_sync == 1:
        return lambda: None

    def sync_fn():
        ctx = tf.distribute.get_replica_context()
        means = ctx.all_reduce(
            tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in variables]
        )
        for v, mean in zip(variables, means):
            v.assign(mean)

    return tf.function(lambda: strategy.run(sync_fn))
