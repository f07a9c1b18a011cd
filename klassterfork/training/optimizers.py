"""Optimizers by their Keras names, plus per-variable multipliers.

`SGD`, `Adam` and `AdamW` in configs resolve to the classes below: the
Keras optimizer with the same arguments and four additions, all keyed on
variable paths (`keras.Variable.path`) and fixed at `build` time:

- `lr_multipliers: {regex: float}`: per-variable learning-rate multipliers,
  first match wins, `re.search` on the path (TSN/TDN: `{"(^|/)logits/kernel": 5,
  "(^|/)logits/bias": 10, "bias$": 2}`; paths may start with the model name).
- `layer_decay: float | {rate, num_layers, block_pattern, embed_pattern}`:
  ViT layer-wise decay (VideoMAE 0.75), multiplied with `lr_multipliers`.
- `no_decay: [regex, ...]`: variables without weight decay (biases, norms,
  position embeddings).
- `weight_decay_mode: "decoupled" | "l2"`. "decoupled" is Keras/AdamW's
  `w -= lr * mult * wd * w` before the step; "l2" adds `wd * w` to the
  gradient (PyTorch `SGD(weight_decay=...)` / `Adam(weight_decay=...)`,
  so it goes through momentum: use it to reproduce PyTorch SGD recipes).

Example (hjson):
    optimizer: {SGD: {learning_rate: 0.01, momentum: 0.9, weight_decay: 5e-4,
                      weight_decay_mode: "l2", global_clipnorm: 20,
                      lr_multipliers: {"(^|/)logits/kernel": 5,
                                       "(^|/)logits/bias": 10, "bias$": 2},
                      no_decay: ["bias$", "gamma$", "beta$"]}}

Multipliers scale the learning rate passed to `update_step`, never the
gradient (Adam normalizes the gradient, so a gradient scale cancels out).

Clipping (`clipnorm`, `clipvalue`, `global_clipnorm`) happens AFTER the
cross-replica all-reduce here. Keras 3.15 clips inside
`BaseOptimizer._backend_apply_gradients`, in the replica context, before the
TF backend's `_backend_update_step` all-reduces: each replica clips its own
partial gradient by its own norm, so with N replicas the clip threshold and
the norm are both wrong. These classes make `_clip_gradients` a no-op and clip
in `_all_reduce_sum_gradients`, after the sum (identical on every replica).

`gradient_accumulation_steps` fails in Keras 3.15 under any tf.distribute
strategy (a `cond` with `merge_call`s in the replica context); these classes
accumulate the all-reduced gradients and branch in the cross-replica context.
The schedule still sees `optimizer._iterations`, i.e. micro-batches.
"""

import keras
import tensorflow as tf
from keras import ops

from klassterfork.registry import Registry
from klassterfork.training import multipliers

OPTIMIZERS = Registry("optimizer")
for _name in ("RMSprop", "Adagrad", "Adamax", "Nadam", "Lion", "Lamb"):
    OPTIMIZERS.add(_name, getattr(keras.optimizers, _name))

WEIGHT_DECAY_MODES = ("decoupled", "l2")


class PerVariableMixin:
    """Per-variable LR multipliers, decay mask and after-all-reduce clipping.

    Mixed into a Keras optimizer class (first base); the class must call
    `_init_per_variable` from `__init__`. TF backend only (it overrides the
    TF optimizer's `_all_reduce_sum_gradients`).
    """

    def _init_per_variable(
        self, lr_multipliers, layer_decay, no_decay, weight_decay_mode
    ):
        if weight_decay_mode not in WEIGHT_DECAY_MODES:
            raise ValueError(
                f"`weight_decay_mode` must be one of {list(WEIGHT_DECAY_MODES)}. "
                f"Received: weight_decay_mode={weight_decay_mode!r}"
            )
        # Validate the rules now (a bad regex fails at construction).
        multipliers.variable_multipliers([], lr_multipliers=lr_multipliers)
        multipliers.decay_mask([], no_decay)
        self.lr_multipliers = dict(lr_multipliers or {})
        self.layer_decay = layer_decay
        self.no_decay = list(no_decay or [])
        self.weight_decay_mode = weight_decay_mode
        self._multiplier_by_key = {}
        self._decay_by_key = {}

    def build(self, variables):
        paths = [v.path for v in variables]
        mults = multipliers.variable_multipliers(
            paths, lr_multipliers=self.lr_multipliers, layer_decay=self.layer_decay
        )
        mask = multipliers.decay_mask(paths, self.no_decay)
        for v in variables:
            key = self._var_key(v)
            self._multiplier_by_key[key] = mults[v.path]
            # Keras's own `exclude_from_weight_decay` is honoured as well.
            self._decay_by_key[key] = mask[v.path] and self._use_weight_decay(v)
        super().build(variables)

    def lr_multiplier(self, variable):
        """The learning-rate multiplier of a built variable (1.0 if unknown)."""
        return self._multiplier_by_key.get(self._var_key(variable), 1.0)

    def decays(self, variable):
        """Whether weight decay applies to a built variable."""
        return self.weight_decay is not None and self._decay_by_key.get(
            self._var_key(variable), True
        )

    def update_step(self, gradient, variable, learning_rate):
        # Called per variable (per replica copy under tf.distribute, which
        # `_var_key` maps back to the distributed container).
        mult = self.lr_multiplier(variable)
        if mult != 1.0:
            learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype), mult)
        if self.decays(variable) and self.weight_decay:
            wd = ops.cast(self.weight_decay, variable.dtype)
            if self.weight_decay_mode == "l2":
                gradient = ops.add(
                    gradient, ops.multiply(wd, ops.cast(variable, gradient.dtype))
                )
            else:
                lr = ops.cast(learning_rate, variable.dtype)
                self.assign_sub(variable, ops.multiply(variable, wd * lr))
        super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        pass  # per variable, with its multiplier, in `update_step`

    def _clip_gradients(self, grads):
        return grads  # clipped after the all-reduce, below

    def _all_reduce_sum_gradients(self, grads_and_vars):
        grads_and_vars = list(super()._all_reduce_sum_gradients(grads_and_vars))
        present = [i for i, (g, _) in enumerate(grads_and_vars) if g is not None]
        clipped = super()._clip_gradients([grads_and_vars[i][0] for i in present])
        for i, g in zip(present, clipped):
            grads_and_vars[i] = (g, grads_and_vars[i][1])
        return grads_and_vars

    def _backend_apply_gradients(self, grads, trainable_variables):
        context = tf.distribute.get_replica_context()
        if (
            not (
                self.gradient_accumulation_steps
                and tf.distribute.has_strategy()
                and context is not None
            )
            or self.use_ema
        ):
            return super()._backend_apply_gradients(grads, trainable_variables)
        # Keras 3.15's accumulation runs `ops.cond` in the replica context
        # with `merge_call`s in both branches, which tf.distribute refuses
        # ("...cross a synchronization boundary"). Here the gradients are
        # all-reduced first (so every replica's accumulator holds the same
        # sum and the checkpoint is consistent), the would-be update is
        # computed and clipped in the replica context, and the cond runs in
        # the cross-replica context, as `LossScaleOptimizer` does.
        steps = self.gradient_accumulation_steps
        accumulators = [
            self._accumulated_gradients[self._get_variable_index(v)]
            for v in trainable_variables
        ]
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))
        sums = [g + ops.cast(a, g.dtype) for g, a in zip(grads, accumulators)]
        update = super()._clip_gradients([s / steps for s in sums])
        context.merge_call(
            self._cross_replica_accumulate,
            args=(update, sums, trainable_variables, accumulators),
        )

    def _cross_replica_accumulate(
        self, distribution, update, sums, variables, accumulators
    ):
        steps = self.gradient_accumulation_steps
        is_update_step = (self._iterations + 1) % steps == 0
        learning_rate = self.learning_rate

        def unwrap(v):
            return v.value if isinstance(v, keras.Variable) else v

        def apply_update():
            for grad, var in zip(update, variables):
                distribution.extended.update(
                    unwrap(var),
                    lambda v, g: self.update_step(g, v, learning_rate),
                    args=(grad,),
                    group=False,
                )
            for acc in accumulators:
                distribution.extended.update(
                    unwrap(acc), lambda v: v.assign(tf.zeros_like(v)), group=False
                )

        def accumulate():
            for total, acc in zip(sums, accumulators):
                distribution.extended.update(
                    unwrap(acc),
                    lambda v, t: v.assign(tf.cast(t, v.dtype)),
                    args=(total,),
                    group=False,
                )

        tf.cond(is_update_step, apply_update, accumulate)

    def _per_variable_config(self):
        return {
            "lr_multipliers": self.lr_multipliers,
            "layer_decay": self.layer_decay,
            "no_decay": self.no_decay,
            "weight_decay_mode": self.weight_decay_mode,
        }


@OPTIMIZERS.register("SGD")
@keras.saving.register_keras_serializable(package="klassterfork")
class SGD(PerVariableMixin, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with per-variable multipliers (module doc).

    Args: those of `keras.optimizers.SGD`, plus `lr_multipliers`,
    `layer_decay`, `no_decay`, `weight_decay_mode` (see the module doc).
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        lr_multipliers=None,
        layer_decay=None,
        no_decay=None,
        weight_decay_mode="decoupled",
        name="SGD",
    ):
        super().__init__(
            learning_rate=learning_rate,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
        )
        self._init_per_variable(
            lr_multipliers, layer_decay, no_decay, weight_decay_mode
        )

    def get_config(self):
        return {**super().get_config(), **self._per_variable_config()}


@OPTIMIZERS.register("Adam")
@keras.saving.register_keras_serializable(package="klassterfork")
class Adam(PerVariableMixin, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with per-variable multipliers (module doc).

    Args: those of `keras.optimizers.Adam`, plus `lr_multipliers`,
    `layer_decay`, `no_decay`, `weight_decay_mode` (see the module doc).
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        lr_multipliers=None,
        layer_decay=None,
        no_decay=None,
        weight_decay_mode="decoupled",
        name="adam",
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
        )
        self._init_per_variable(
            lr_multipliers, layer_decay, no_decay, weight_decay_mode
        )

    def get_config(self):
        return {**super().get_config(), **self._per_variable_config()}


@OPTIMIZERS.register("AdamW")
@keras.saving.register_keras_serializable(package="klassterfork")
class AdamW(PerVariableMixin, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with per-variable multipliers (module doc).

    Decoupled decay `w -= lr * mult * wd * w` as in PyTorch's AdamW with
    parameter groups (VideoMAE: wd 0.05, `layer_decay` 0.75, `no_decay` for
    biases, norms and position embeddings).

    Args: those of `keras.optimizers.AdamW`, plus `lr_multipliers`,
    `layer_decay`, `no_decay`, `weight_decay_mode` (see the module doc).
    """

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        lr_multipliers=None,
        layer_decay=None,
        no_decay=None,
        weight_decay_mode="decoupled",
        name="adamw",
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
        )
        self._init_per_variable(
            lr_multipliers, layer_decay, no_decay, weight_decay_mode
        )

    def get_config(self):
        return {**super().get_config(), **self._per_variable_config()}
