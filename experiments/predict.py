"""Show what a saved model predicts for chosen CIFAR-10 test images.

    python -m experiments.predict --model RUN_DIR/model.keras --images 0,5,17 --data-dir ~/cifar10
    python -m experiments.predict --smoke          # a tiny untrained model on synthetic images

Loads the `.keras` model a run saved (`--save-model`), runs it on the test
images at the given indices (no augmentation: the model's augmentation layer
only acts in training), and prints and plots, for each, its true label and the
top-k classes with their probabilities (softmax of the model's logits). Writes
predict.png into --results-dir (default: the model's folder).
"""

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before keras is imported

import numpy as np  # noqa: E402

from davidnet.studies import add_common_arguments, resolve_settings  # noqa: E402


@dataclasses.dataclass
class Settings:
    model: str = ""  # a saved .keras model (with --smoke: built here if not given)
    images: str = "0,1,2,3,4,5,6,7"  # test-set indices, comma-separated
    top: int = 3  # classes shown per image


SMOKE_WIDTH = 0.0625  # a DavidNet of 1/16 the channels: builds and runs in seconds


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


def parse_indices(text, size):
    """'0,5,17' -> [0, 5, 17]; raises ValueError with one line unless each is in 0..size-1."""
    try:
        indices = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--images expects comma-separated test-set indices like 0,5,17, got {text!r}") from None
    if not indices:
        raise ValueError("--images is empty: give test-set indices like 0,5,17")
    bad = [i for i in indices if not 0 <= i < size]
    if bad:
        raise ValueError(f"--images {bad[0]} is out of range: the test set has {size} images (indices 0..{size - 1})")
    return indices


def load_model(path):
    """A saved .keras model. Raises ValueError with one line if it cannot be loaded."""
    import davidnet

    try:
        return davidnet.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - a zip, JSON or unknown-layer problem all mean "not loadable"
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"cannot load {path} as a Keras model ({type(e).__name__}: {first})") from None


def build_smoke_model(path):
    """Saves an untrained DavidNet of width 1/16 at `path` (for --smoke)."""
    from davidnet.models import davidnet

    davidnet(width=SMOKE_WIDTH).save(path)
    return path


def model_caption(model_path, smoke_built):
    """One line saying what the model is: from the run's results.json when it sits beside the model."""
    if smoke_built:
        return f"tiny untrained DavidNet (width {SMOKE_WIDTH}), built by --smoke: its predictions are noise"
    results_path = Path(model_path).parent / "results.json"
    try:
        results = json.loads(results_path.read_text())
        config = results.get("config", {})
        accuracy = results.get("final_accuracy")
        data = results.get("data", {})
        on = "JPEG copy of CIFAR-10" if data.get("jpeg_copy") else data.get("image_format", "?")
        accuracy = f"{accuracy:.2%}" if isinstance(accuracy, float) else "unknown"
        return (
            f"{config.get('model', 'model')} width {config.get('width', '?')}, "
            f"{results.get('epochs_completed', '?')} epochs on {data.get('train_images', '?')} images ({on}); "
            f"final test accuracy {accuracy}"
        )
    except (OSError, ValueError, AttributeError, TypeError):
        return f"{model_path} (no results.json beside it)"


def predictions(model, images, top):
    """Top-`top` (class, probability) per image, from the model's logits."""
    from keras import ops

    logits = ops.convert_to_numpy(model(ops.convert_to_tensor(images, "float32"), training=False))
    return top_k(softmax(logits), top)


def plot_predictions(images, labels, indices, tops, class_names, path, caption, data_line, per_row=4):
    """Each image with its true label, beside a bar chart of its top classes; `per_row` images a row."""
    from davidnet.results import pyplot, save_figure

    plt = pyplot()
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
    parser = argparse.ArgumentParser(
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
    if not settings.model and not args.smoke:
        print("error: no model given: pass --model RUN_DIR/model.keras (saved by experiments.davidnet --save-model), or --smoke", file=sys.stderr)
        return 2
    if settings.model and not Path(settings.model).is_file():
        print(f"error: model file {settings.model} does not exist: pass --model RUN_DIR/model.keras", file=sys.stderr)
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
        if settings.top < 1:
            raise ValueError(f"--top must be >= 1, got {settings.top}")
        model_path = build_smoke_model(results_dir / "smoke_model.keras") if smoke_built else settings.model
        model = load_model(model_path)
        classes = model.output_shape[-1]
        if classes != len(data.class_names):
            raise ValueError(f"{model_path} predicts {classes} classes, the data has {len(data.class_names)}: not a model of this data")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    images, labels = data.x_test[indices], data.y_test[indices]
    tops = predictions(model, images, min(settings.top, classes))
    caption = model_caption(model_path, smoke_built)
    data_line = "JPEG copy of CIFAR-10" if data.image_format == "jpeg" else (
        "synthetic images, not CIFAR-10" if data.image_format == "synthetic" else f"CIFAR-10 ({data.image_format})")
    print(f"model: {model_path}: {caption}")
    print(f"data: {data.source}")
    names = data.class_names
    for index, label, top in zip(indices, labels, tops):
        guesses = ", ".join(f"{names[c]} {p:.3f}" for c, p in top)
        verdict = "right" if top[0][0] == label else "wrong"
        print(f"test image {index}: true {names[label]}; top-{len(top)}: {guesses} ({verdict})")
    plot_predictions(images, labels, indices, tops, names, results_dir / "predict.png", caption, f"test images of the {data_line}")
    print(f"written: {results_dir / 'predict.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
