"""What the run ran on: backend, accelerator and versions, for results files."""

import platform
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


def device_memory_free():
    """Free bytes on the first accelerator, or None where that is not known
    (the CPU, or a backend that does not say)."""
    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        if stats and "bytes_limit" in stats:
            return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return None


def is_out_of_memory(error):
    """Whether an exception from a train step is the accelerator running out of memory."""
    text = f"{type(error).__name__}: {error}"
    return any(mark in text for mark in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM when allocating"))


def has_gpu():
    return describe()["platform"] == "gpu"
