"""The test accuracy a run times: DAWNBench's 94% on CIFAR-10, and its equivalent
on each copy of the data (the lossy JPEG copy's is 91%).

A run's target is ``resolve_target(target, data.image_format)``: the one given,
or the data's equivalent; with it, the line that says which and why.
"""

# DAWNBench's bar is 94% test accuracy on CIFAR-10. The JPEG copy is lossy and
# about 3 points harder (shared/data/README): 91% there is the same bar.
DAWNBENCH_TARGET = 0.94
_EQUIVALENT_TARGET = {"jpeg": 0.91}


def equivalent_target(image_format):
    """The test accuracy on data of `image_format` ("pickle", "png", "jpeg",
    "tfds", "synthetic") that stands for DAWNBench's 94% on CIFAR-10: 0.91 on
    the JPEG copy, 0.94 elsewhere. A run's default `--target`."""
    return _EQUIVALENT_TARGET.get(image_format, DAWNBENCH_TARGET)


def resolve_target(target, image_format):
    """(the accuracy a run times, the line that says which and why): `target`,
    or when None the equivalent of DAWNBench's 94% on data of `image_format`."""
    given = target is not None
    value = target if given else equivalent_target(image_format)
    return value, target_note(image_format, value, given)


def target_note(image_format, target, given):
    """One line saying which accuracy a run times and why (`given`: the user chose it)."""
    if given:
        return f"target: test accuracy {target:g} (--target)"
    if image_format == "jpeg":
        return f"target: test accuracy {target:g}, the JPEG copy's equivalent of DAWNBench's {DAWNBENCH_TARGET:g} on CIFAR-10 (--target to change)"
    return f"target: test accuracy {target:g}, DAWNBench's bar (--target to change)"
