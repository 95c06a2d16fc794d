"""The training recipe's optimizer, registered with Keras when the package is
imported, so that a checkpoint written by a training run (``best.keras``, with
its optimizer) loads with only ``keras_sequencer`` imported: AdamW whose RNN
biases are stepped as PyTorch's pairs (:class:`RecipeAdamW`)."""

import keras

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
    step is applied, so a rebuilt or restored model needs nothing else.

    With ``torch_epsilon``, ``epsilon`` is added where PyTorch's AdamW adds it:
    to the square root of the bias-corrected second moment. Keras adds it to
    the uncorrected one, which at update ``t`` is PyTorch's step with
    ``epsilon / sqrt(1 - beta_2**t)``: 31x larger at the first update, 1.6x at
    the 500th. Where a gradient is as small as that (a model whose head starts
    at zero gets such gradients everywhere else at first), the two take
    different steps. Keras's formula with ``epsilon * sqrt(1 - beta_2**t)``
    takes PyTorch's. The default (``False``) is Keras's AdamW, and the
    optimizer of a checkpoint saved before this option loads as it was."""

    def __init__(self, *args, torch_rnn_biases=True, torch_epsilon=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.torch_rnn_biases = bool(torch_rnn_biases)
        self.torch_epsilon = bool(torch_epsilon)

    def update_step(self, gradient, variable, learning_rate):
        if not self.torch_epsilon or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        epsilon = self.epsilon
        step = keras.ops.cast(self.iterations + 1, variable.dtype)
        correction = keras.ops.sqrt(1 - keras.ops.power(keras.ops.cast(self.beta_2, variable.dtype), step))
        self.epsilon = epsilon * correction  # for this update only
        try:
            return super().update_step(gradient, variable, learning_rate)
        finally:
            self.epsilon = epsilon

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
        return {
            **super().get_config(),
            "torch_rnn_biases": self.torch_rnn_biases,
            "torch_epsilon": self.torch_epsilon,
        }
