"""Every private Keras API the project uses, in one place.

Checked against Keras 3.15.1 (the pinned version; requirements.txt). Each
function names the private attribute it relies on and what it is for;
`check()` verifies that each is still there and behaves as relied on, and
tests/test_keras_private.py fails, naming this module, when a Keras upgrade
changes one. Nothing else in davidnet/, pipelines/ or experiments/ touches a
private Keras name (that test also greps for them).

It sits in `pipelines`, the lowest layer, so that both packages can use it.

The names:
- `Model._symbolic_build(data_batch=...)`: builds the model, its optimizer
  and metrics on one batch before `fit`, as `fit` itself would (the scanned
  loop and --precompile need the model built before the first step); and its
  condition for drawing that batch (`_flatten_layers`, `_compile_metrics`,
  `_compile_loss`), which --precompile mirrors so that a precompiled run
  draws the same batches as a plain one.
- JAX trainer `_get_jax_state(...)` and the `train_function(state,
  iterator) -> (logs, state)` contract: compiling the steps on a copy of the
  state (--precompile), and putting a scanned epoch in place of the step
  (davidnet/scan.py).
- `Layer._allow_non_tensor_positional_args`: lets a layer take a Python value
  (the `training` flag of BatchAugmentation) as a positional argument.
- A callback's `async_safe` attribute: `CallbackList` then lets it run on
  worker threads, so a progress bar does not make the host wait for the
  device at every step.
- `Callback.model` under JAX calls `model.jax_state_sync()`: reading it in a
  batch callback is what makes an assignment to the optimizer's learning rate
  take effect mid-epoch (the per-batch schedule callbacks rely on it).
- `saving_lib.save_model(model, io.BytesIO)` and `saving_lib.H5IOStore` with
  `saving_lib._save_state`: a model (`.keras` zip) and its weights
  (`.weights.h5`, optimizer included) serialized in memory. The public
  `save` and `save_weights` take only paths and write in place; in memory,
  the bytes then go to disk through a temporary file and a rename
  (`davidnet.results.write_bytes_atomic`), so a full disk is one clean
  OSError and never a half-written file (HDF5 writing to a full disk was
  seen to crash the process).
- `keras.src.utils.module_utils.tensorflow._available`: Keras's lazy
  TensorFlow module, asked by `keras.utils.set_random_seed` (to seed
  TensorFlow too) and by model saving (is a config value a tf.TensorShape?)
  on every backend. Where TensorFlow is installed, that asking imports it:
  3 to 4.5 s of a JAX run on a 2-core CPU, and TensorFlow's memory, for
  nothing (no TensorFlow object exists before TensorFlow is imported).
  `without_importing_tensorflow` makes the module answer "not available"
  while TensorFlow is not imported yet.
"""

import contextlib
import inspect
import io
import sys

import keras

CHECKED_WITH = "3.15.1"


def build_on_batch(model, batch):
    """Builds `model` (and its optimizer and metrics) on one batch, as `fit` would."""
    model._symbolic_build(data_batch=batch)


def fit_builds_on_a_batch(model):
    """Whether `fit` would first build `model` on a batch it draws from its data
    (`Model._symbolic_build`'s condition: a layer, the compiled loss or the
    compiled metrics not built yet; an unbuilt optimizer alone is built without
    a batch). Drawing that batch starts an epoch of the feed."""
    unbuilt = [not all(layer.built for layer in model._flatten_layers())]
    for compiled in (model._compile_metrics, model._compile_loss):
        unbuilt.append(compiled is not None and not compiled.built)
    return any(unbuilt)


def jax_state(model, optimizer=True):
    """The JAX trainer's state tuple (trainable, non-trainable, optimizer
    (if `optimizer`), metrics variables), as its `train_function` takes it."""
    return model._get_jax_state(
        trainable_variables=True, non_trainable_variables=True, optimizer_variables=optimizer, metrics_variables=True,
    )


def set_train_function(model, function):
    """Puts `function(state, iterator) -> (logs, state)` in place of the JAX
    trainer's compiled step; `fit` calls it once per item of its data."""
    model.train_function = function


def allow_non_tensor_positional_args(layer):
    """Lets `layer` be called with Python values as positional arguments."""
    layer._allow_non_tensor_positional_args = True


def async_safe(callback_class):
    """Class decorator: Keras may dispatch this callback's batch hooks on
    worker threads (the class must then be thread-safe itself)."""
    callback_class.async_safe = True
    return callback_class


def model_bytes(model):
    """`model.save(path)`'s .keras zip, as bytes."""
    from keras.src.saving import saving_lib

    buffer = io.BytesIO()
    with without_importing_tensorflow():
        saving_lib.save_model(model, buffer)
    return buffer.getvalue()


@contextlib.contextmanager
def without_importing_tensorflow():
    """Inside, Keras takes TensorFlow for not installed unless it is imported
    already, so that Keras code which merely asks about TensorFlow does not
    import it (on the TensorFlow backend, or once imported: no change)."""
    from keras.src.utils import module_utils

    lazy = module_utils.tensorflow
    if "tensorflow" in sys.modules or lazy._available is not None:
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = None


_tensorflow_seed = None  # set_random_seed's seed, for TensorFlow when something imports it later


def set_random_seed(seed):
    """`keras.utils.set_random_seed(seed)` (Python, NumPy, Keras's global
    seed generator, TensorFlow's global seed) without importing TensorFlow
    for it: where TensorFlow is not imported yet, its seed is kept and set by
    `seed_tensorflow`, which code that imports TensorFlow later (the tf.data
    feed on JAX) calls. TensorFlow then starts from the same global seed as
    if Keras had set it here: no TensorFlow op runs in between."""
    global _tensorflow_seed
    with without_importing_tensorflow():
        keras.utils.set_random_seed(seed)
    _tensorflow_seed = None if "tensorflow" in sys.modules else seed


def seed_tensorflow():
    """Sets TensorFlow's global seed to the one `set_random_seed` kept, if it
    kept one (TensorFlow was not imported then). Call right after importing
    TensorFlow, before any TensorFlow random op."""
    global _tensorflow_seed
    if _tensorflow_seed is not None:
        import tensorflow as tf

        tf.random.set_seed(_tensorflow_seed)
        _tensorflow_seed = None


def weights_bytes(model):
    """`model.save_weights(path)`'s .weights.h5 file (the optimizer's variables
    included), as bytes; `model.load_weights` reads the file back."""
    from keras.src.saving import saving_lib

    if not model.built:
        raise ValueError("cannot save the weights of a model that is not built")
    buffer = io.BytesIO()
    store = saving_lib.H5IOStore(buffer, mode="w")
    saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())
    store.close()
    return buffer.getvalue()


def check():
    """Raises RuntimeError naming this module and the API that changed, if
    the installed Keras no longer has one of the private names relied on."""
    from keras.src.callbacks import callback as callback_module
    from keras.src.callbacks import callback_list
    from keras.src.layers import layer as layer_module
    from keras.src.trainers import trainer

    problems = []
    if "data_batch" not in inspect.signature(trainer.Trainer._symbolic_build).parameters:
        problems.append("Model._symbolic_build(data_batch=...)")
    build_source = inspect.getsource(trainer.Trainer._symbolic_build)
    if not all(name in build_source for name in ("_flatten_layers", "_compile_metrics", "_compile_loss",
                                                 "if model_unbuilt or compile_metrics_unbuilt or compile_loss_unbuilt")):
        problems.append("Model._symbolic_build's condition for building on a batch")
    if "async_safe" not in inspect.getsource(callback_list.CallbackList):
        problems.append("CallbackList's async_safe attribute")
    if "_allow_non_tensor_positional_args" not in inspect.getsource(layer_module.Layer):
        problems.append("Layer._allow_non_tensor_positional_args")
    if "jax_state_sync" not in inspect.getsource(callback_module.Callback):
        problems.append("Callback.model's jax_state_sync under JAX")
    from keras.src.saving import saving_lib

    if "IOBase" not in inspect.getsource(saving_lib.save_model):
        problems.append("saving_lib.save_model(model, io.BytesIO)")
    if "BytesIO" not in inspect.getsource(saving_lib.H5IOStore.__init__) or not hasattr(saving_lib, "_save_state"):
        problems.append("saving_lib.H5IOStore(io.BytesIO) and saving_lib._save_state")
    from keras.src.saving import serialization_lib
    from keras.src.utils import module_utils, rng_utils

    uses = inspect.getsource(rng_utils.set_random_seed) + inspect.getsource(serialization_lib.serialize_keras_object)
    if not hasattr(module_utils.tensorflow, "_available") or "tf.available" not in uses:
        problems.append("module_utils.tensorflow._available, asked by set_random_seed and saving")
    if keras.backend.backend() == "jax":
        from keras.src.backend.jax import trainer as jax_trainer

        parameters = inspect.signature(jax_trainer.JAXTrainer._get_jax_state).parameters
        if not {"trainable_variables", "non_trainable_variables", "optimizer_variables", "metrics_variables"} <= set(parameters):
            problems.append("JAXTrainer._get_jax_state(...)")
        if "self.train_function(" not in inspect.getsource(jax_trainer.JAXTrainer.fit):
            problems.append("JAXTrainer.fit calling self.train_function(state, iterator)")
    if problems:
        raise RuntimeError(
            f"Keras {keras.__version__} changed private APIs that pipelines/keras_private.py relies on "
            f"(checked with {CHECKED_WITH}): {'; '.join(problems)}"
        )
