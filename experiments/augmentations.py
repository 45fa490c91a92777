"""Preview the training augmentations, made by the very functions training uses.

    python -m experiments.augmentations --data-dir ~/cifar10      # real images
    python -m experiments.augmentations --smoke                   # synthetic images, seconds

One row per augmentation, in pixel space: the originals (one per class);
random crop (4 px reflect padding) + flip; cutout (two images, each with its
fixed-size square at a random place); mixup (each image mixed with its partner,
weight lambda in the title); batch augmentation (one image, M copies, each
augmented differently by the model's `BatchAugmentation` layer). Crop, flip and
cutout act on normalised images, as in the model; they are un-normalised
(x * std + mean) for display. Writes augmentations.png (and, with --per-kind,
one PNG per row) into --results-dir (default runs/augmentations,
runs/augmentations-smoke for --smoke).
"""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before keras is imported

import numpy as np  # noqa: E402

from davidnet.studies import prepare_study_dir, resolve_study_settings, study_parser  # noqa: E402


@dataclasses.dataclass
class Settings:
    images: int = 8  # originals shown, one per class while classes last
    seed: int = 0
    crop_padding: int = 4  # as DavidNet
    crop_mode: str = "reflect"
    cutout: int = 8  # side of the cutout square
    cutout_images: int = 2  # images shown with cutout, each several times
    mixup: float = 1.0  # Beta(alpha, alpha) parameter of mixup's lambda
    copies: int = 8  # batch augmentation: copies of one image
    per_kind: bool = False  # also one PNG per augmentation


HELP = {
    "images": "originals shown, one per class while classes last (an even number: mixup pairs them)",
    "seed": "random seed",
    "crop_padding": "crop padding in pixels",
    "crop_mode": "crop padding mode",
    "cutout": "cutout square side",
    "cutout_images": "images shown with cutout",
    "mixup": "mixup Beta(alpha) parameter",
    "copies": "batch augmentation copies of one image",
    "per_kind": "also one PNG per augmentation",
}
RESULTS_DIR = "runs/augmentations"  # --smoke: runs/augmentations-smoke


ROWS = ("original", "crop_flip", "cutout", "mixup", "batch_augmentation")
ROW_TITLES = {
    "original": "original",
    "crop_flip": "crop + flip",
    "cutout": "cutout",
    "mixup": "mixup",
    "batch_augmentation": "batch aug.",
}
CELL_INCHES = (1.3, 1.5)  # width, height of one image with its title
MARGIN_INCHES = (1.0, 0.8)  # left (row names), top (title)
DPI = 100  # davidnet.results.save_figure's


def figure_inches(rows, columns):
    """(width, height) of the preview figure; at DPI 100 the PNG is 100x that in pixels."""
    return (columns * CELL_INCHES[0] + MARGIN_INCHES[0], rows * CELL_INCHES[1] + MARGIN_INCHES[1])


def to_pixels(normalised):
    """Normalised images back to uint8 pixels: x * std + mean, rounded, clipped to 0..255."""
    from pipelines.augment import CIFAR10_MEAN, CIFAR10_STD

    x = np.asarray(normalised, dtype=np.float32) * np.float32(CIFAR10_STD) + np.float32(CIFAR10_MEAN)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def preview_batches(images, seed=0, settings=Settings()):
    """Runs the real augmentations on `images` and returns what the preview shows.

    Args:
        images: uint8 (N, 32, 32, 3), N even for mixup pairs.
        seed: an int; every augmentation draws from one `keras.random.SeedGenerator(seed)`.
        settings: a `Settings`.

    Returns:
        A dict of numpy arrays, all images uint8 in pixel units:
        "original" (N), "crop_flip" (N), "cutout" (cutout_images x copies each,
        image i repeated `len // cutout_images` times), "cutout_masks" (bool,
        where each cutout image was zeroed in normalised space), "cutout_source"
        (index into `images` of each cutout image), "mixup" (N), "mixup_lam"
        (N,), "mixup_partner" (N,), "batch_augmentation" (copies of image 0).
    """
    import keras
    from keras import ops

    from pipelines import augment

    images = np.asarray(images, dtype=np.uint8)
    n = len(images)
    generator = keras.random.SeedGenerator(seed)
    normalised = augment.normalize(images)

    crop_flip = augment.random_crop(normalised, generator, settings.crop_padding, settings.crop_mode)
    crop_flip = augment.random_flip(crop_flip, generator)

    # Cutout on a few images, each repeated: the same square, at different places.
    shown = min(settings.cutout_images, n)
    repeats = max(1, n // shown)
    source = np.repeat(np.arange(shown), repeats)
    cut = ops.convert_to_numpy(augment.cutout(ops.take(normalised, source, axis=0), generator, settings.cutout))
    # Exactly zero in all channels only where cutout wrote: a normalised pixel is
    # never exactly 0, since the mean is not a whole number of pixel units.
    masks = np.all(cut == 0.0, axis=-1)

    # Mixup in pixel units, as the feed does it (before the model normalises).
    # Identity labels make the mixed labels name each image's partner and weight.
    mixed, mixed_labels, lam = augment.mixup(images, np.eye(n, dtype="float32"), generator, settings.mixup)
    mixed_labels = ops.convert_to_numpy(mixed_labels)
    partner = np.array([_partner(row, i) for i, row in enumerate(mixed_labels)])

    # Batch augmentation: one image, M copies, through the model's own layer.
    copies, _ = augment.repeat_batch(images[:1], np.zeros((1, 1), "float32"), settings.copies)
    layer = augment.BatchAugmentation(
        crop_padding=settings.crop_padding, crop_mode=settings.crop_mode, flip=True,
        cutout_size=settings.cutout, seed=seed + 1,  # its own draws, not a replay of the rows above
    )
    batch_augmented = layer(ops.cast(copies, "float32"), training=True)

    return {
        "original": images,
        "crop_flip": to_pixels(ops.convert_to_numpy(crop_flip)),
        "cutout": to_pixels(cut),
        "cutout_masks": masks,
        "cutout_source": source,
        "mixup": np.clip(np.rint(ops.convert_to_numpy(mixed)), 0, 255).astype(np.uint8),
        "mixup_lam": ops.convert_to_numpy(lam).astype(np.float32),
        "mixup_partner": partner,
        "batch_augmentation": to_pixels(ops.convert_to_numpy(batch_augmented)),
    }


def _partner(mixed_label, index):
    """The other image in a mixed identity label (itself if it was mixed with itself)."""
    others = [j for j in np.flatnonzero(mixed_label > 1e-6) if j != index]
    return int(others[0]) if others else index


def square_of(mask):
    """(top, left, height, width) of the True pixels' bounding box, or None."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(ys.min()), int(xs.min()), int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def panel_titles(panels, labels, class_names):
    """The title of each image, row by row."""
    name = lambda i: class_names[labels[i]]  # noqa: E731
    titles = {"original": [name(i) for i in range(len(labels))], "crop_flip": [""] * len(labels)}
    titles["cutout"] = []
    for i, mask in zip(panels["cutout_source"], panels["cutout_masks"]):
        box = square_of(mask)
        titles["cutout"].append(f"{name(i)}: {box[2]}x{box[3]}\nat ({box[0]},{box[1]})" if box else name(i))
    titles["mixup"] = [
        f"λ={lam:.2f} {name(i)}\n+ {1 - lam:.2f} {name(j)}"
        for i, (lam, j) in enumerate(zip(panels["mixup_lam"], panels["mixup_partner"]))
    ]
    titles["batch_augmentation"] = [f"{name(0)}, copy {k + 1}" for k in range(len(panels["batch_augmentation"]))]
    return titles


def plot_preview(panels, titles, path, heading, rows=ROWS):
    """One row of images per augmentation (`rows`), titles above each image."""
    from davidnet.results import pyplot, save_figure

    plt = pyplot()
    columns = max(len(panels[row]) for row in rows)
    width, height = figure_inches(len(rows), columns)
    fig, axes = plt.subplots(len(rows), columns, figsize=(width, height), squeeze=False)
    for r, row in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(panels[row]):
                ax.axis("off")
                continue
            ax.imshow(panels[row][c], interpolation="nearest")
            ax.set_title(titles[row][c], fontsize=7)
            if row == "cutout":
                box = square_of(panels["cutout_masks"][c])
                if box:  # outline the square: on the mean colour it can be hard to see
                    ax.add_patch(plt.Rectangle((box[1] - 0.5, box[0] - 0.5), box[3], box[2], fill=False, edgecolor="red", linewidth=1))
        axes[r][0].set_ylabel(ROW_TITLES[row], fontsize=9)
    fig.suptitle(heading, fontsize=10)
    fig.subplots_adjust(
        left=MARGIN_INCHES[0] / width, right=0.99, bottom=0.01,
        top=1 - MARGIN_INCHES[1] / height, hspace=0.45, wspace=0.08,
    )
    save_figure(fig, path, compact=True)
    plt.close(fig)


def pick_examples(labels, n):
    """Indices of n images: the first of each class in turn, then the next ones in order."""
    chosen, seen = [], set()
    for i, label in enumerate(labels):
        if label not in seen:
            chosen.append(i)
            seen.add(label)
        if len(chosen) == n:
            return np.array(chosen)
    taken = set(chosen)
    rest = [i for i in range(len(labels)) if i not in taken]
    return np.array(chosen + rest[: n - len(chosen)])


def build_parser():
    return study_parser(
        "python -m experiments.augmentations", __doc__, RESULTS_DIR, Settings, HELP, {"crop_mode": ("reflect", "constant")},
        results_help="the previews' folder: the PNGs and config.json", smoke_help="synthetic images, in seconds",
    )


def load_images(args):
    """The data to preview: synthetic for --smoke; else CIFAR-10 from --data-dir,
    $CIFAR10_DIR or the Keras cache; synthetic, with a note, when none is found."""
    from davidnet.hardware import use_compilation_cache
    from pipelines.cifar10 import DataError, load_cifar10, synthetic_cifar10

    use_compilation_cache(args.compile_cache)
    if args.smoke:
        return synthetic_cifar10(64, 10)
    try:
        return load_cifar10(args.data_dir, verify=not args.no_verify, download=False)
    except DataError as e:
        if args.data_dir or os.environ.get("CIFAR10_DIR"):
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        print("note: no CIFAR-10 found (pass --data-dir): showing synthetic images")
        return synthetic_cifar10(64, 10)


def describe_data(data):
    if data.image_format == "synthetic":
        return "synthetic class-coloured noise, not CIFAR-10"
    if data.image_format == "jpeg":
        return "CIFAR-10 train images, JPEG copy"
    return f"CIFAR-10 train images ({data.image_format})"


def main(argv=None):
    parser = build_parser()
    args, settings = resolve_study_settings(parser, argv, Settings, Settings, RESULTS_DIR)
    for name in ("images", "copies", "cutout_images"):
        if getattr(settings, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(settings, name)}")
    if settings.images % 2 or settings.mixup <= 0 or settings.crop_padding < 0 or not 0 <= settings.cutout <= 32:
        parser.error("expected an even --images, --mixup > 0, --crop-padding >= 0 and --cutout in 0..32")
    data = load_images(args)
    results_dir = prepare_study_dir(args.results_dir, settings)  # once the data has loaded: no empty folder
    chosen = pick_examples(data.y_train, settings.images)
    images, labels = data.x_train[chosen], data.y_train[chosen]

    panels = preview_batches(images, settings.seed, settings)
    titles = panel_titles(panels, labels, data.class_names)
    heading = (
        f"Augmentations as training applies them: {describe_data(data)}; seed {settings.seed}, "
        f"crop {settings.crop_padding} px {settings.crop_mode}, cutout {settings.cutout}x{settings.cutout}, "
        f"mixup Beta({settings.mixup:g}), {settings.copies} copies"
    )
    plot_preview(panels, titles, results_dir / "augmentations.png", heading)
    written = [results_dir / "augmentations.png"]
    if settings.per_kind:
        for row in ROWS:
            path = results_dir / f"augmentations_{row}.png"
            plot_preview(panels, titles, path, f"{ROW_TITLES[row]}: {describe_data(data)}", rows=(row,))
            written.append(path)
    print(f"data: {data.source}")
    for row in ROWS[1:]:
        print(f"{ROW_TITLES[row]:>11}: {len(panels[row])} images")
    print("written: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
