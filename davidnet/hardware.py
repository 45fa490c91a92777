"""What the run ran on: backend, accelerator and versions, for results files
and the line every run prints before it trains."""

import contextlib
import os
import platform
import shutil
import sys

import keras


def describe():
    """Returns {"backend", "platform" ("gpu"/"cpu"/...), "device", "device_count", "versions"}."""
    backend = keras.backend.backend()
    info = {"backend": backend, "platform": "cpu", "device": platform.processor() or platform.machine()}
    count = 1
    if backend == "jax":
        import jax

        devices = jax.devices()
        info.update(platform=devices[0].platform, device=devices[0].device_kind)
        count = len(devices)
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            info.update(platform="gpu", device=details.get("device_name", "GPU"))
            count = len(gpus)
    info["device_count"] = count
    info["versions"] = {
        "python": sys.version.split()[0],
        "keras": keras.__version__,
        backend: _backend_version(backend),
    }
    return info


def device_line(precision, devices_used=1):
    """One line: backend, the devices it sees, how many the run uses, precision.

    >>> device_line("float32")  # doctest: +SKIP
    'backend: jax 0.10.2 (Keras 3.15.1); devices: 1 cpu (x86_64); using 1; precision: float32'
    """
    info = describe()
    versions = info["versions"]
    found = f"{info['device_count']} {info['platform']} ({info['device']})"
    return (
        f"backend: {info['backend']} {versions.get(info['backend'], '')} (Keras {versions['keras']}); "
        f"devices: {found}; using {devices_used}; precision: {precision}"
    )


# What an NVIDIA driver leaves on a Linux machine, with or without a GPU build
# of the backend. Overridable for tests.
NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia",)
GPU_ROUTE = {
    "jax": "pip install -r requirements-jax-cuda.txt (jax[cuda12] at the pinned version)",
    "tensorflow": "pip install -r requirements-tensorflow-cuda.txt (tensorflow[and-cuda] at the pinned version)",
}


def nvidia_gpu_present():
    """Whether this machine has an NVIDIA GPU and driver, whatever the backend sees."""
    return any(os.path.exists(path) for path in NVIDIA_DRIVER_PATHS) or shutil.which("nvidia-smi") is not None


def unseen_gpu_warning():
    """One warning line when an NVIDIA GPU is here but the backend trains on
    the CPU (a CPU-only jaxlib or TensorFlow), else None."""
    info = describe()
    if info["platform"] == "gpu" or not nvidia_gpu_present():
        return None
    fix = GPU_ROUTE.get(info["backend"], "install the backend's CUDA build")
    return (
        f"warning: this machine has an NVIDIA GPU but {info['backend']} sees only {info['platform']}: "
        f"training runs on the CPU; for the GPU, {fix} (README, Set-up)"
    )


def _backend_version(backend):
    module = __import__({"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}.get(backend, backend))
    return getattr(module, "__version__", "unknown")


def use_compilation_cache(cache_dir):
    """Keeps compiled XLA programs in `cache_dir` across processes (JAX backend),
    so a second run in the same environment skips most of its compilation;
    tracing still happens. No-op on other backends. Returns whether it is on."""
    if keras.backend.backend() != "jax" or not cache_dir:
        return False
    import jax

    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    # Cache everything: on CPU even the small random-initialiser programs take
    # most of a second each to compile.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True


@contextlib.contextmanager
def one_off_compiles():
    """Inside: JAX compiles with XLA's `jax_disable_most_optimizations`, for
    programs run once, such as each new kernel shape's random initializer,
    where optimising costs far more than it could save. On a 2-core CPU,
    building DavidNet takes 2.0 s instead of 11.2 s at width 0.125 and 1.9 s
    instead of 6.0 s at width 1 (3 runs each; its initialisers are each a
    threefry program of their own). The random bits
    are integers, so the weights are the same up to the rounding of their
    scaling (at most 1.5e-8 apart). No-op on other backends."""
    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


def device_memory_free():
    """Free bytes on this process's first accelerator, or None where that is
    not known (the CPU, or a backend that does not say)."""
    if keras.backend.backend() == "jax":
        import jax

        # Its own device: in a multi-process run jax.devices()[0] is process
        # 0's, whose memory the others cannot ask about.
        stats = jax.local_devices()[0].memory_stats()
        if stats and "bytes_limit" in stats:
            return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return None


def is_out_of_memory(error):
    """Whether an exception from a train step is the accelerator running out of memory."""
    text = f"{type(error).__name__}: {error}"
    return any(mark in text for mark in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM when allocating"))


def has_gpu():
    return describe()["platform"] == "gpu"
