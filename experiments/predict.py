"""Show what a saved model predicts for chosen CIFAR-10 test images.

    python -m experiments.predict --model RUN_DIR/model.keras --images 0,5,17 --data-dir ~/cifar10
    python -m experiments.predict --smoke          # a tiny untrained model on synthetic images

Loads the `.keras` model a run saved (`--save-model`), runs it on the test
images at the given indices (no augmentation: the model's augmentation layer
only acts in training), and prints and plots, for each, its true label and the
top-k classes with their probabilities (softmax of the model's logits). Writes
predict.png into --results-dir (default: the model's folder).
"""

import dataclasses
import os
import re
import sys
import warnings
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before keras is imported

import numpy as np  # noqa: E402

from davidnet import cli  # noqa: E402
from davidnet.run_results import path_text  # noqa: E402
from davidnet.studies import add_common_arguments, resolve_settings  # noqa: E402


@dataclasses.dataclass
class Settings:
    model: str = ""  # a saved .keras model (with --smoke: built here if not given)
    images: str = "0,1,2,3,4,5,6,7"  # test-set indices, comma-separated
    top: int = 3  # classes shown per image


SMOKE_WIDTH = 0.0625  # a DavidNet of 1/16 the channels: builds and runs in seconds
MAX_IMAGES = 64  # one figure: 16 rows of 4; more would not be readable (nor drawable)


def softmax(logits):
    """Row-wise softmax, computed in float64 and stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probabilities, k):
    """[(class index, probability)] of the k most probable classes, most probable first, per row."""
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return [[(int(c), float(p[c])) for c in row] for p, row in zip(probabilities, order)]


def parse_indices(text, size=None):
    """'0,5,17' -> [0, 5, 17]; raises ValueError with one line unless each is in
    0..size-1 (without `size`: >= 0), and there are at most MAX_IMAGES."""
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if not all(part.isascii() and part.lstrip("-").isdigit() and len(part) < 20 for part in parts):
        raise ValueError(f"--images expects comma-separated test-set indices like 0,5,17, got {ascii(text)[:60]}")
    indices = [int(part) for part in parts]
    if not indices:
        raise ValueError("--images is empty: give test-set indices like 0,5,17")
    if len(indices) > MAX_IMAGES:
        raise ValueError(f"--images gives {len(indices)} images: at most {MAX_IMAGES} fit in one figure")
    bad = [i for i in indices if i < 0 or (size is not None and i >= size)]
    if bad and size is None:
        raise ValueError(f"--images {bad[0]} is out of range: test-set indices are >= 0")
    if bad:
        raise ValueError(f"--images {bad[0]} is out of range: the test set has {size} images (indices 0..{size - 1})")
    return indices


def check_settings(settings):
    """Checks --top and --images' form before any data is loaded (their range
    once it is). Raises ValueError with one line."""
    top = settings.top
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ValueError(f"--top must be a whole number >= 1, got {top!r}")
    parse_indices(settings.images)


def check_model_file(path):
    """Raises ValueError with one line unless `path` is a file (a .keras model is one zip file)."""
    path = Path(path)
    shown = path_text(path)
    if path.is_dir():
        raise ValueError(f"model {shown} is a directory: pass the .keras file a run saved (RUN_DIR/model.keras)")
    if not path.exists():
        raise ValueError(f"model file {shown} does not exist: pass --model RUN_DIR/model.keras")
    if not path.is_file():
        raise ValueError(f"model {shown} is not a regular file: pass --model RUN_DIR/model.keras")
    try:
        path.open("rb").close()
    except OSError as e:
        raise ValueError(f"cannot read model {shown}: {e.strerror or e}") from None


def check_model(model, path, image_shape, classes):
    """Checks that `model` takes one batch of images of `image_shape` and
    returns one score per class, before anything is predicted.

    Returns:
        Whether the model's outputs are probabilities (a softmax last) rather than logits.

    Raises:
        ValueError: one line saying what the model takes or gives, and what the data needs.
    """
    name = path_text(path)
    expected = f"images of shape {_shape_text((None, *image_shape))}"
    try:
        inputs, input_shape, output_shape = len(model.inputs), model.input_shape, model.output_shape
    except Exception:  # noqa: BLE001 - a subclassed or unbuilt model has no shapes to check
        raise ValueError(f"{name} does not say what it takes and gives (no input or output shape): expected a "
                         f"functional model of {expected}") from None
    if inputs != 1:
        raise ValueError(f"{name} takes {inputs} inputs, expected one: {expected}")
    if not _is_shape(input_shape):
        raise ValueError(f"{name} takes inputs of no fixed shape ({input_shape!r:.60}), expected {expected}")
    if len(input_shape) != 1 + len(image_shape) or any(
            want is not None and want != got for want, got in zip(input_shape[1:], image_shape)):
        raise ValueError(f"{name} takes inputs of shape {_shape_text(input_shape)}, the data's are {expected}: "
                         "not a model of this data")
    if not _is_shape(output_shape) or len(output_shape) != 2:
        shown = _shape_text(output_shape) if _is_shape(output_shape) else f"{len(output_shape)} outputs"
        raise ValueError(f"{name} gives {shown}, expected one score per class: (None, {classes})")
    if output_shape[-1] != classes:
        raise ValueError(f"{name} predicts {output_shape[-1]} classes, the data has {classes}: not a model of this data")
    import keras

    last = model.layers[-1] if model.layers else None
    return isinstance(last, keras.layers.Softmax) or getattr(last, "activation", None) is keras.activations.softmax


def _is_shape(shape):
    return isinstance(shape, tuple) and all(d is None or (isinstance(d, int) and d > 0) for d in shape)


def _shape_text(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def load_model(path):
    """A saved .keras model, with all its weights. Raises ValueError with one
    line if it cannot be loaded, or loads only in part (Keras warns and keeps
    freshly initialized weights: an untrained model's predictions)."""
    import davidnet

    shown = path_text(path)
    if str(path).endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(f"cannot load {shown}: not a .keras model (not a zip archive: truncated, or another format)")
    with warnings.catch_warnings(record=True) as caught:  # Keras's warnings become our one line
        warnings.simplefilter("always")
        try:
            model = davidnet.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001 - a zip, JSON or unknown-layer problem all mean "not loadable"
            raise ValueError(f"cannot load {shown} as a Keras model ({type(e).__name__}: {_load_error(e)})") from None
    skipped = [str(w.message) for w in caught if issubclass(w.category, UserWarning) and "skipping" in str(w.message).lower()]
    if skipped:
        raise ValueError(f"{shown}: Keras loaded only some of its weights ({skipped[0].splitlines()[0][:150]})")
    return model


def _load_error(error):
    """The line of a load error that says what is wrong: the unknown class, if that is it."""
    unknown = re.search(r"Could not locate (class|function) '([^']{1,100})'", str(error))
    if unknown:
        kind, name = unknown.groups()
        return (f"it uses a {kind} Keras does not know, {name!r}: a custom object; import the module that "
                "registers it with @keras.saving.register_keras_serializable")
    first = (str(error).strip().splitlines() or [""])[0]
    return first if len(first) <= 200 else first[:197] + "..."


def build_smoke_model(path):
    """Saves an untrained DavidNet of width 1/16 at `path` (for --smoke)."""
    from davidnet.models import davidnet

    davidnet(width=SMOKE_WIDTH).save(path)
    return path


def model_caption(model_path, smoke_built):
    """One line saying what the model is: from the run's results.json when it sits beside the model."""
    if smoke_built:
        return f"tiny untrained DavidNet (width {SMOKE_WIDTH}), built by --smoke: its predictions are noise"
    from davidnet.run_results import ResultsError, read_json_file

    try:
        results = read_json_file(Path(model_path).parent / "results.json")
    except ResultsError:
        results = None
    if not isinstance(results, dict):
        return f"{path_text(model_path)} (no readable results.json beside it)"
    config, data = _object(results.get("config")), _object(results.get("data"))
    accuracy = results.get("final_accuracy")
    accuracy = f"{accuracy:.2%}" if isinstance(accuracy, float) and 0 <= accuracy <= 1 else "unknown"
    on = "JPEG copy of CIFAR-10" if data.get("jpeg_copy") is True else _field(data.get("image_format"))
    return (
        f"{_field(config.get('model'), 'model')} width {_field(config.get('width'))}, "
        f"{_field(results.get('epochs_completed'))} epochs on {_field(data.get('train_images'))} images ({on}); "
        f"final test accuracy {accuracy}"
    )


def _object(value):
    return value if isinstance(value, dict) else {}


def _field(value, missing="?"):
    """A results.json value in the caption: short text or a number, else `missing`."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return missing
    text = str(value)
    return text if len(text) <= 40 and text.isprintable() else missing


def predictions(model, images, top, probabilities=False):
    """Top-`top` (class, probability) per image, from the model's logits (or
    its probabilities, when its last layer is a softmax).

    Raises:
        ValueError: the model fails on the images, or gives NaN or infinite
            scores (broken weights); the message follows the model's name.
    """
    from keras import ops

    try:
        scores = model(ops.convert_to_tensor(images, "float32"), training=False)
        scores = np.asarray(ops.convert_to_numpy(scores), np.float64)
    except Exception as e:  # noqa: BLE001 - the model is the user's file: whatever fails in it, say so in one line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"failed on the test images ({type(e).__name__}: {first})") from None
    if not np.isfinite(scores).all():
        raise ValueError(f"gives NaN or infinite scores for {(~np.isfinite(scores).all(axis=-1)).sum()} of "
                         f"{len(scores)} images: its weights are broken (saved from a diverged run?)")
    return top_k(scores if probabilities else softmax(scores), top)


def plot_predictions(images, labels, indices, tops, class_names, path, caption, data_line, per_row=4):
    """Each image with its true label, beside a bar chart of its top classes; `per_row` images a row."""
    from davidnet.results import pyplot

    plt = pyplot()
    # The caption names files and a results.json's fields: a "$" there is a dollar, not mathtext.
    with plt.rc_context({"text.parse_math": False}):
        _draw_predictions(plt, images, labels, indices, tops, class_names, path, caption, data_line, per_row)


def _draw_predictions(plt, images, labels, indices, tops, class_names, path, caption, data_line, per_row):
    """Draws and saves `plot_predictions`' figure."""
    from davidnet.results import save_figure

    n = len(images)
    columns = min(n, per_row)
    rows = -(-n // columns)
    fig = plt.figure(figsize=(3.6 * columns + 0.3, 1.75 * rows + 0.75))
    grid = fig.add_gridspec(rows, 2 * columns, width_ratios=[1, 1.25] * columns, left=0.02, right=0.98,
                            bottom=0.1 / rows, top=1 - 0.75 / (1.75 * rows + 0.75), wspace=0.55, hspace=0.55)
    for k, (image, label, index, top) in enumerate(zip(images, labels, indices, tops)):
        row, col = divmod(k, columns)
        ax = fig.add_subplot(grid[row, 2 * col])
        ax.imshow(image, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        correct = top[0][0] == label
        ax.set_title(f"test #{index}: {class_names[label]}", fontsize=8, color="tab:green" if correct else "black")
        bars = fig.add_subplot(grid[row, 2 * col + 1])
        probs = [p for _, p in top]
        bars.barh(range(len(top)), probs, color=["tab:green" if c == label else "tab:gray" for c, _ in top])
        bars.set_yticks(range(len(top)), [class_names[c] for c, _ in top], fontsize=7)
        bars.set_ylim(len(top) - 0.5, -0.5)
        bars.set_xlim(0, 1)
        bars.set_xticks([0, 0.5, 1], ["0", ".5", "1"], fontsize=7)
        bars.set_title("top-%d" % len(top), fontsize=7)
        for y, p in enumerate(probs):
            inside = p > 0.75  # inside the bar, in white, where there is no room after it
            bars.text(p - 0.03 if inside else p + 0.03, y, f"{p:.2f}", va="center", ha="right" if inside else "left",
                      fontsize=7, color="white" if inside else "black")
    fig.suptitle(f"{caption}\n{data_line}; green bar: the true class (green title: top-1 right)", fontsize=8)
    save_figure(fig, path, compact=True)
    plt.close(fig)


def build_parser():
    parser = cli.ArgumentParser(
        prog="python -m experiments.predict",
        description=__doc__.split("\n\n")[0],
    )
    add_common_arguments(parser, None)
    parser.add_argument("--model", help="a saved .keras model, e.g. RUN_DIR/model.keras (--smoke builds a tiny one if none is given)")
    parser.add_argument("--images", help="test-set indices, comma-separated (default 0,1,...,7)")
    parser.add_argument("--top", type=int, help="classes shown per image (default 3)")
    return parser


def main(argv=None):
    parser = build_parser()
    args, settings = resolve_settings(parser, argv, Settings)
    from davidnet.results import check_writable

    smoke_built = args.smoke and not settings.model
    try:  # before the data loads: a bad flag or path costs a second, not a download
        if not settings.model and not args.smoke:
            raise ValueError("no model given: pass --model RUN_DIR/model.keras (saved by experiments.davidnet --save-model), or --smoke")
        check_settings(settings)
        if settings.model:
            check_model_file(settings.model)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    default_dir = "runs/predict-smoke" if smoke_built else Path(settings.model).parent
    from davidnet.studies import load_data

    data = load_data(args, smoke_sizes=(20, 100))
    try:  # once the data has loaded: a failed start leaves no empty folder
        results_dir = check_writable(args.results_dir or default_dir)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        indices = parse_indices(settings.images, len(data.x_test))
        model_path = build_smoke_model(results_dir / "smoke_model.keras") if smoke_built else settings.model
        model = load_model(model_path)
        classes = len(data.class_names)
        probabilities = check_model(model, model_path, data.x_test.shape[1:], classes)
        images, labels = data.x_test[indices], data.y_test[indices]
        try:
            tops = predictions(model, images, min(settings.top, classes), probabilities)
        except ValueError as e:
            raise ValueError(f"{path_text(model_path)} {e}") from None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    caption = model_caption(model_path, smoke_built)
    data_line = "JPEG copy of CIFAR-10" if data.image_format == "jpeg" else (
        "synthetic images, not CIFAR-10" if data.image_format == "synthetic" else f"CIFAR-10 ({data.image_format})")
    print(f"model: {path_text(model_path)}: {caption}")
    print(f"data: {data.source}")
    names = data.class_names
    for index, label, top in zip(indices, labels, tops):
        guesses = ", ".join(f"{names[c]} {p:.3f}" for c, p in top)
        verdict = "right" if top[0][0] == label else "wrong"
        print(f"test image {index}: true {names[label]}; top-{len(top)}: {guesses} ({verdict})")
    plot_predictions(images, labels, indices, tops, names, results_dir / "predict.png", caption, f"test images of the {data_line}")
    print(f"written: {path_text(results_dir / 'predict.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
