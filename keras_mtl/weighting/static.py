"""`static`: the configured loss weights, L = sum_t lambda_t L_t."""

from keras import ops

from keras_mtl.weighting._base import LossWeighting, register


@register("static")
class Static(LossWeighting):
    """`sum_t lambda_t L_t` with the static lambdas (`loss_weight`)."""

    def task_weights(self, training=True):
        return ops.convert_to_tensor(self.lambdas)

    def current_weights(self):
        return list(self.static_lambdas)
