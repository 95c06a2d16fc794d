"""The optimizer of the recipe: AdamW, warmup + cosine schedule, global-norm
clipping, no weight decay on 1-D weights (biases, norms), as timm does."""

import keras


def learning_rate_schedule(config, steps_per_epoch):
    """Linear warmup ``warmup_lr -> lr`` over ``warmup_epochs``, cosine to ``min_lr`` at
    the end of ``epochs``, then ``min_lr`` (the cooldown)."""
    warmup_steps = config.warmup_epochs * steps_per_epoch
    decay_steps = max(1, (config.epochs - config.warmup_epochs) * steps_per_epoch)
    kwargs = dict(decay_steps=decay_steps, alpha=config.min_lr / config.lr)
    if warmup_steps:
        return keras.optimizers.schedules.CosineDecay(
            config.warmup_lr, warmup_target=config.lr, warmup_steps=warmup_steps, **kwargs
        )
    return keras.optimizers.schedules.CosineDecay(config.lr, **kwargs)


def build_optimizer(config, model, steps_per_epoch):
    """AdamW with the schedule, global-norm clipping and no decay on 1-D weights."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        weight_decay=config.weight_decay,
        global_clipnorm=config.clip_grad,
    )
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if len(v.shape) <= 1]
    )
    return optimizer
