"""The optimizer of the recipe: AdamW, timm's warmup + cosine schedule, global-norm
clipping, no weight decay on 1-D weights (biases, norms), as timm does, and the
RNN biases stepped as PyTorch's two biases move (:class:`RecipeAdamW`)."""

import keras

from keras_sequencer.schedules import TimmCosineSchedule

# timm's AdamW (``create_optimizer_v2("adamw")`` is ``torch.optim.AdamW``) uses
# eps 1e-8; Keras's default is 1e-7. Keras adds eps to the uncorrected sqrt(v),
# so its effective eps is ``eps / sqrt(1 - beta_2 ** t)``: equal to PyTorch's
# after the first few thousand updates, larger before.
ADAMW_EPSILON = 1e-8

# The Keras cells whose one bias stands for PyTorch's two (a GRU's Keras bias
# already keeps the input and the recurrent rows apart).
TWO_BIAS_CELLS = ("lstm_cell", "simple_rnn_cell")


def is_two_bias(variable):
    """Whether ``variable`` is the bias of an LSTM or SimpleRNN cell (its
    path ends ``lstm_cell/bias``): PyTorch's ``b_ih + b_hh`` in one Keras
    variable, ``(gates * units,)``."""
    return variable.path.split("/")[-2:] in ([cell, "bias"] for cell in TWO_BIAS_CELLS)


def two_bias_variables(model):
    """The trainable variables of ``model`` that :func:`is_two_bias`."""
    return [v for v in model.trainable_variables if is_two_bias(v)]


@keras.saving.register_keras_serializable(package="keras_sequencer")
class RecipeAdamW(keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` that, with ``torch_rnn_biases``, doubles
    the Adam step of every RNN bias that stands for PyTorch's two
    (:func:`is_two_bias`).

    PyTorch's LSTM keeps ``b_ih`` and ``b_hh``, both with the gradient of
    their sum; AdamW moves each by the same step (their moments are equal), so
    the sum moves by twice the step of Keras's one bias. Doubling that
    variable's step (its weight decay, if any, is untouched) gives the Keras
    bias exactly the trajectory of timm's sum, and the checkpoint format
    stays one bias. The variables are recognised by their paths when each
    step is applied, so a rebuilt or restored model needs nothing else."""

    def __init__(self, *args, torch_rnn_biases=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.torch_rnn_biases = bool(torch_rnn_biases)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        pairs = list(zip(grads, trainable_variables))
        doubled = [self.torch_rnn_biases and is_two_bias(variable) for _, variable in pairs]
        groups = (
            ([p for p, d in zip(pairs, doubled) if not d], learning_rate),
            ([p for p, d in zip(pairs, doubled) if d], learning_rate * 2),
        )
        for group, rate in groups:
            if group:
                group_grads, group_variables = zip(*group)
                super()._backend_update_step(list(group_grads), list(group_variables), rate)

    def get_config(self):
        return {**super().get_config(), "torch_rnn_biases": self.torch_rnn_biases}


def learning_rate_schedule(config, steps_per_epoch):
    """The schedule of ``config`` (:class:`TimmCosineSchedule`): per epoch, or
    per update with ``config.sched_on_updates``."""
    return TimmCosineSchedule(
        config.lr,
        config.min_lr,
        config.epochs,
        config.warmup_lr,
        config.warmup_epochs,
        steps_per_epoch,
        on_updates=config.sched_on_updates,
    )


def build_optimizer(config, model, steps_per_epoch):
    """AdamW (timm's epsilon) with the schedule, global-norm clipping, no decay
    on 1-D weights and, with ``config.rnn_bias_step == "torch"``, the RNN
    biases stepped as PyTorch's pairs (:class:`RecipeAdamW`)."""
    optimizer = RecipeAdamW(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        weight_decay=config.weight_decay,
        epsilon=ADAMW_EPSILON,
        global_clipnorm=config.clip_grad,
        torch_rnn_biases=config.rnn_bias_step == "torch",
    )
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) <= 1])
    return optimizer
