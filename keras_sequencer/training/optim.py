"""The optimizer of the recipe: AdamW, timm's warmup + cosine schedule, global-norm
clipping, no weight decay on 1-D weights (biases, norms), as timm does, and the
RNN biases stepped as PyTorch's two biases move (:class:`RecipeAdamW`)."""

from keras_sequencer.optimizers import (  # noqa: F401 (the recipe's optimizer, importable from here)
    TWO_BIAS_CELLS,
    RecipeAdamW,
    is_two_bias,
    two_bias_variables,
)
from keras_sequencer.schedules import TimmCosineSchedule

# timm's AdamW (``create_optimizer_v2("adamw")`` is ``torch.optim.AdamW``) uses
# eps 1e-8; Keras's default is 1e-7. Keras adds eps to the uncorrected sqrt(v),
# so its effective eps is ``eps / sqrt(1 - beta_2 ** t)``: equal to PyTorch's
# after the first few thousand updates, larger before.
ADAMW_EPSILON = 1e-8


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
    biases stepped as PyTorch's pairs; with ``config.adam_eps == "torch"``,
    epsilon added where PyTorch adds it (:class:`RecipeAdamW`)."""
    optimizer = RecipeAdamW(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        weight_decay=config.weight_decay,
        epsilon=ADAMW_EPSILON,
        global_clipnorm=config.clip_grad,
        torch_rnn_biases=config.rnn_bias_step == "torch",
        torch_epsilon=config.adam_eps == "torch",
    )
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) <= 1])
    return optimizer
