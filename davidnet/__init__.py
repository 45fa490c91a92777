"""DavidNet: fast CIFAR-10 training with Keras 3 (models, LR callbacks, timing, training).

`import davidnet` stays light (no Keras); `davidnet.load_model(path)` loads a
run's model.keras in one's own code.
"""

# The modules whose classes (layers, optimizers, schedules, initializers) a
# saved model may name; each registers its classes with Keras on import.
_SERIALIZABLE_MODULES = (
    "pipelines.augment",
    "davidnet.initializers",
    "davidnet.schedules.table",
    "davidnet.schedules.closed_form",
    "davidnet.schedules.cyclic",
    "davidnet.torch_optimizers",
    "davidnet.muon",
    "davidnet.lookahead",
    "davidnet.fastnet",
    "davidnet.tta",
)


def register_custom_objects():
    """Registers every class a saved DavidNet model may use with Keras
    (`keras.saving.register_keras_serializable`), so that
    `keras.saving.load_model` finds them. Idempotent."""
    import importlib

    for name in _SERIALIZABLE_MODULES:
        importlib.import_module(name)


def load_model(path, compile=True, **kwargs):
    """Loads a model.keras written by a run (`runs/<run>/model.keras`).

    Args:
        path: the .keras file.
        compile: also restore the optimizer (our SGD/Adam/Muon with its
            schedule) and loss, ready to train on; False loads the network only.
        **kwargs: passed to `keras.saving.load_model`.

    Returns:
        The `keras.Model`, whose `predict` takes uint8 or float images
        (N, 32, 32, 3) in 0..255 and returns logits.
    """
    register_custom_objects()
    import keras

    return keras.saving.load_model(path, compile=compile, **kwargs)
