"""Writes docs/quickstart.ipynb from the cells below: `python docs/make_quickstart.py`.

The notebook is kept as source here so that a change is an ordinary diff, and
it is written without outputs. tests/test_notebook.py checks that the .ipynb
is what this script writes, and runs its code cells on tiny synthetic data.
"""

import json
from pathlib import Path

NOTEBOOK = Path(__file__).with_name("quickstart.ipynb")

# (cell id, kind, source). The first code cell holds the parameters, with the
# values a real run uses (the test swaps in tiny ones, line by line).
CELLS = [
    ("title", "markdown", r"""
# DavidNet quickstart: CIFAR-10 in your own Keras code

This notebook trains DavidNet (the ResNet-9 of David Page's DAWNBench entry) with plain
`model.compile` / `model.fit`, taking from this project only the pieces:

- `davidnet.models.davidnet`: the network, whose first layer (`pipelines.augment.BatchAugmentation`)
  normalises the uint8 images and, in training only, crops, flips and cuts them out on the accelerator;
- `davidnet.schedules.PiecewiseLinear`: the learning rate as a Keras callback;
- `davidnet.timing.TimeToAccuracy`: seconds of training to the target test accuracy;
- `davidnet.load_model`: loads the saved model back.

The parameters below are DavidNet's DAWNBench recipe (24 epochs, batch 512), meant for one GPU.
On a CPU, try `WIDTH = 0.25`, `SUBSET = 5000`, `EPOCHS = 4`; `SYNTHETIC = True` runs on
class-coloured noise and needs no data at all. The command-line version of the same recipe is
`python -m experiments.davidnet` (README.md).
"""),
    ("parameters", "code", r"""
# Parameters: the whole run at a glance.
DATA_DIR = None       # a CIFAR-10 folder (pickle batches or train/ + test/ images); None: $CIFAR10_DIR, the Keras cache, then tensorflow-datasets (downloads)
SYNTHETIC = False     # True: class-coloured noise instead of CIFAR-10 (a smoke run, not a result)
SUBSET = None         # train on the first N training images; None: all 50,000
EPOCHS = 24
BATCH_SIZE = 512
WIDTH = 1.0           # channel multiplier: 0.25 or 0.125 for a quick CPU run
PEAK_LR = 0.4         # learning rate 0 -> PEAK_LR -> 0, linear, peaking at WARMUP of the run
WARMUP = 5 / 24       # DavidNet: epoch 5 of 24
WEIGHT_DECAY = 5e-4   # PyTorch's coupled decay, as cifar10-fast
SEED = 0
HOST_AUGMENT = False  # True: train through tf.data with the host augmenter below (CPU work every batch)
OUT_DIR = "quickstart-run"  # the saved model and the figures go here
"""),
    ("install-md", "markdown", r"""
## Install

Once, in a clone of the repository (this notebook is `docs/quickstart.ipynb`, so the clone's root is
`..`): uncomment the line for your machine. The requirement files pin the versions the tests ran with.

- NVIDIA GPU (Linux): `requirements-jax-cuda.txt` (JAX, the fast path here) or
  `requirements-tensorflow-cuda.txt`; the CUDA libraries come as wheels, only the driver is needed.
- CPU only: `requirements.txt` (TensorFlow and JAX).
- As a package, with the same pins: `pip install ..` (CPU), `pip install "..[jax-cuda]"` or
  `pip install "..[tensorflow-cuda]"` (GPU).
- **Colab** (or any machine whose GPU stack is already installed): keep what is there, since the strict
  pins would replace its JAX/TensorFlow and CUDA libraries. Install the project without its
  dependencies, then Keras 3.15.1 (pure Python, the version our code is checked against), and check
  that the setup cell below prints `GPU: True`.
"""),
    ("install", "code", r"""
# !pip install -q -r ../requirements-jax-cuda.txt          # NVIDIA GPU, JAX backend
# !pip install -q -r ../requirements-tensorflow-cuda.txt   # NVIDIA GPU, TensorFlow backend
# !pip install -q -r ../requirements.txt                   # CPU only
# Colab: the project without its pins, on the preinstalled GPU stack (<repo url>: this repository's):
# !pip install -q --no-deps git+<repo url>
# !pip install -q keras==3.15.1
"""),
    ("setup", "code", r"""
import importlib.util
import os
import pathlib
import sys

# Keras reads its backend once, at its first import: JAX unless KERAS_BACKEND says otherwise
# ("tensorflow" works as well; restart the kernel to change it).
os.environ.setdefault("KERAS_BACKEND", "jax")
# A clone used without `pip install ..`: the library is one folder up from docs/.
if importlib.util.find_spec("davidnet") is None and pathlib.Path("../davidnet").is_dir():
    sys.path.insert(0, str(pathlib.Path("..").resolve()))

import keras
import matplotlib.pyplot as plt
import numpy as np

import davidnet
from davidnet import models
from davidnet.hardware import has_gpu
from davidnet.schedules import PiecewiseLinear
from davidnet.timing import TimeToAccuracy
from davidnet.torch_optimizers import TorchSGD
from pipelines.cifar10 import equivalent_target, load_cifar10, synthetic_cifar10
from pipelines.feeds import DeviceFeed, tfdata_feed

out_dir = pathlib.Path(OUT_DIR)
out_dir.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(SEED)
# bfloat16 compute on a GPU (the CLI's --precision auto); batch-norm statistics and the logits stay float32.
precision = "mixed_bfloat16" if has_gpu() else "float32"
keras.mixed_precision.set_global_policy(precision)
print(f"Keras {keras.__version__}, backend {keras.backend.backend()}, GPU: {has_gpu()}, precision {precision}")
"""),
    ("data-md", "markdown", r"""
## Data

`load_cifar10` returns uint8 NHWC arrays and says where they came from. The target is DAWNBench's
94% test accuracy, or 91% on the lossy JPEG copy of CIFAR-10 (about 3 points harder, so 91% there
stands for 94%): `equivalent_target` picks it from the data's image format.
"""),
    ("data", "code", r"""
data = synthetic_cifar10() if SYNTHETIC else load_cifar10(DATA_DIR)
print(data)
x_train, y_train = data.x_train[:SUBSET], data.y_train[:SUBSET]  # [:None] keeps them all
x_test, y_test = data.x_test, data.y_test
y_test_one_hot = keras.utils.to_categorical(y_test, len(data.class_names))
target = equivalent_target(data.image_format)
print(f"train {x_train.shape} {x_train.dtype}, test {x_test.shape}; target test accuracy {target}")
"""),
    ("model-md", "markdown", r"""
## The model, its learning rate and optimizer

The model takes raw uint8 images. Its first layer, `BatchAugmentation` (named `augment`), normalises
them and, when training, crops (4-pixel reflect padding), flips and cuts out an 8x8 square, per image,
inside the compiled train step: no augmentation work on the host. `predict` and `evaluate` see the
images unaugmented.

The learning rate is our callback, `PiecewiseLinear`. With `schedule.in_graph(total_steps)` as the
optimizer's learning rate, the train step looks its rate up in a table, so no Python runs between
steps; the callback in `fit` records the rates and puts each epoch's last one into the logs, so
`history.history["learning_rate"]` has it, as with Keras's `LearningRateScheduler`. (Left out of the
optimizer, `learning_rate=0.0`, the same callback sets the rate before every batch instead.)
The optimizer is PyTorch's SGD in Keras (`TorchSGD`: Nesterov momentum, weight decay added to the
gradient), as DavidNet was trained.
"""),
    ("model", "code", r"""
model = models.davidnet(
    width=WIDTH,
    augmentation={"crop_padding": 4, "crop_mode": "reflect", "flip": True, "cutout_size": 8, "seed": SEED},
)
print(f"{model.name}: {model.count_params():,} parameters; first layer: {type(model.layers[1]).__name__}")

steps_per_epoch = len(x_train) // BATCH_SIZE  # the feeds drop the last partial batch, as DavidNet
total_steps = EPOCHS * steps_per_epoch
# step_offset=1: optimizer step k trains at the schedule's step k + 1, as cifar10-fast counts.
schedule = PiecewiseLinear(
    [0, WARMUP * EPOCHS, EPOCHS], [0.0, PEAK_LR, 0.0], steps_per_epoch=steps_per_epoch, step_offset=1
)
model.compile(
    optimizer=TorchSGD(
        schedule.in_graph(total_steps), momentum=0.9, nesterov=True, weight_decay=WEIGHT_DECAY, lr_in_buffer=True
    ),
    loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
)
"""),
    ("host-md", "markdown", r"""
## A host augmenter (optional)

Augmentations that have no `keras.ops` version can run on the CPU, in the tf.data feed:
`tfdata_feed(..., host_augment=f)` (and `davidnet.training.train(..., host_augment=f)`), where `f`
takes a uint8 batch `(N, 32, 32, 3)` and returns one of the same shape and dtype. It costs CPU time
every batch, which a fast GPU may then wait for (the albumentations pipeline below: about 70 ms per
batch of 512 on one CPU core, 7 s per epoch of 50,000 images), so it is off unless `HOST_AUGMENT = True`.

Below: an albumentations pipeline when albumentations is installed (`pip install albumentations`;
2.0.8 works with NumPy 2), else the same idea in plain NumPy. imgaug 0.4.0 (and its forks imgaug3,
imgaug-denk) does not import on NumPy 2; pyimgaug 0.5.0 imports, but its crop and pad augmenters fail
on NumPy 2.4 (`TypeError: only 0-dimensional arrays can be converted to Python scalars`).
"""),
    ("host", "code", r"""
def numpy_augment(images, rng=np.random.default_rng(SEED)):
    # Brightness and contrast jitter per image, in NumPy: uint8 (N, 32, 32, 3) in, the same out.
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    contrast = rng.uniform(0.8, 1.2, (len(x), 1, 1, 1))
    brightness = rng.uniform(-25.0, 25.0, (len(x), 1, 1, 1))
    return np.clip((x - mean) * contrast + mean + brightness, 0, 255).astype(np.uint8)


try:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network at import
    import albumentations as A
    import cv2

    albumentations_pipeline = A.Compose([
        A.Affine(rotate=(-10, 10), border_mode=cv2.BORDER_REFLECT_101, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ])

    def host_augment(images):
        # albumentations transforms one image at a time.
        return np.stack([albumentations_pipeline(image=image)["image"] for image in images])

    print(f"host augmenter: albumentations {A.__version__}")
except ImportError:
    host_augment = numpy_augment
    print("host augmenter: NumPy (pip install albumentations for its transforms)")

originals = x_train[:8]
augmented = host_augment(originals)
assert augmented.dtype == np.uint8 and augmented.shape == originals.shape
fig, axes = plt.subplots(2, len(originals), figsize=(12, 3.2))
for column, (before, after) in enumerate(zip(originals, augmented)):
    axes[0, column].imshow(before)
    axes[1, column].imshow(after)
for ax in axes.flat:
    ax.axis("off")
axes[0, 0].set_title("original", loc="left")
axes[1, 0].set_title("host-augmented", loc="left")
fig.savefig(out_dir / "host_augment.png", dpi=100, bbox_inches="tight")
plt.show()
"""),
    ("train-md", "markdown", r"""
## Train, timed to the target

The feed yields `(uint8 images, one-hot labels)` batches. `DeviceFeed` keeps the whole training set on
the accelerator (one permutation per epoch, each batch a gather there) and works on every backend;
with the host augmenter the batches come from tf.data instead (TensorFlow must be installed, any
backend). Plain arrays work too: `model.fit(x_train, keras.utils.to_categorical(y_train), batch_size=...)`.

`TimeToAccuracy` keeps the clocks apart: the first train step (compilation) as `compile_s`, the rest of
the training as `train_s`, the test evaluations after each epoch as `eval_s`, and the training seconds
at the first epoch whose test accuracy reaches the target as `seconds_to_target`.
"""),
    ("train", "code", r"""
if HOST_AUGMENT:
    feed = tfdata_feed(x_train, y_train, BATCH_SIZE, seed=SEED, host_augment=host_augment)
else:
    feed = DeviceFeed(x_train, y_train, BATCH_SIZE, seed=SEED)

timer = TimeToAccuracy(target=target)
history = model.fit(
    feed,
    epochs=EPOCHS,
    validation_data=(x_test, y_test_one_hot),  # the test set, after every epoch
    validation_batch_size=1000,
    shuffle=False,  # the feeds shuffle once per epoch themselves
    callbacks=[schedule, timer],
    verbose=2,
)

if timer.target_epoch is not None:
    print(f"test accuracy {target} reached at epoch {timer.target_epoch}, after {timer.seconds_to_target:.1f} s of training")
else:
    print(f"test accuracy {target} not reached in {EPOCHS} epochs")
print(
    f"final test accuracy {history.history['val_accuracy'][-1]:.4f}; compile {timer.compile_s:.1f} s, "
    f"train {timer.train_s:.1f} s, test evaluations {timer.eval_s:.1f} s, wall {timer.wall_s:.1f} s"
)
print("learning rate at each epoch's end:", [round(lr, 4) for lr in history.history["learning_rate"]])
"""),
    ("plot", "code", r"""
epochs = [record["epoch"] for record in timer.epochs]
train_seconds = [record["train_s_total"] for record in timer.epochs]
fig, (by_epoch, by_time, lr_plot) = plt.subplots(1, 3, figsize=(15, 4))
by_epoch.plot(epochs, history.history["accuracy"], "o-", label="train (augmented)")
by_epoch.plot(epochs, history.history["val_accuracy"], "o-", label="test")
by_epoch.set_xlabel("epoch")
by_time.plot(train_seconds, history.history["val_accuracy"], "o-", color="C1", label="test")
by_time.set_xlabel("training seconds (compilation and evaluation excluded)")
for ax in (by_epoch, by_time):
    ax.axhline(target, color="grey", linestyle="--", label=f"target {target}")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
steps, rates = zip(*schedule.history)  # every step's learning rate
lr_plot.plot((np.asarray(steps) + 1) / steps_per_epoch, rates, label="schedule.history")
lr_plot.plot(epochs, history.history["learning_rate"], "o", label='history.history["learning_rate"]')
lr_plot.set_xlabel("epochs trained")
lr_plot.set_ylabel("learning rate")
lr_plot.grid(alpha=0.3)
lr_plot.legend()
fig.tight_layout()
fig.savefig(out_dir / "accuracy.png", dpi=100)
plt.show()
"""),
    ("predict-md", "markdown", r"""
## Save, load, predict

`model.save` writes architecture, weights and optimizer state into one `.keras` file.
`davidnet.load_model` registers our classes (the augmentation layer, the optimizer, the schedule
table) with Keras and loads it. The loaded model takes raw uint8 images and returns logits.
"""),
    ("predict", "code", r"""
model_path = out_dir / "model.keras"
model.save(model_path)
loaded = davidnet.load_model(model_path)

images, labels = x_test[:8], y_test[:8]
logits = loaded.predict(images, verbose=0)
print("the loaded model predicts as the trained one:", np.allclose(logits, model.predict(images, verbose=0), atol=1e-3))
predicted = [data.class_names[i] for i in np.argmax(logits, axis=1)]

fig, axes = plt.subplots(1, len(images), figsize=(14, 2.4))
for ax, image, name, label in zip(axes, images, predicted, labels):
    truth = data.class_names[label]
    ax.imshow(image)
    ax.set_title(f"{name}\n(true: {truth})", fontsize=9, color="green" if name == truth else "red")
    ax.axis("off")
fig.savefig(out_dir / "predictions.png", dpi=100, bbox_inches="tight")
plt.show()
"""),
    ("next-md", "markdown", r"""
## Where next

- The same recipe from the command line, with results files and checkpoints:
  `python -m experiments.davidnet --epochs 24` (`--preset fast` for airbench94_muon's recipe).
- `davidnet.training.train(Config(...), data, results_dir, host_augment=host_augment)` trains any
  recipe of the CLI from Python.
- Other schedules as callbacks: `davidnet.schedules.OneCycle`, `Cyclic`.
"""),
]


def notebook():
    """The notebook as a dict (nbformat 4.5, no outputs)."""
    cells = []
    for cell_id, kind, source in CELLS:
        lines = source.strip("\n").splitlines(keepends=True)
        cell = {"cell_type": kind, "id": cell_id, "metadata": {}, "source": lines}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": {
            "accelerator": "GPU",
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render():
    """The .ipynb text, as Jupyter writes it (one-space indent, sorted keys)."""
    return json.dumps(notebook(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    NOTEBOOK.write_text(render(), encoding="utf-8")
    print(f"wrote {NOTEBOOK}")
