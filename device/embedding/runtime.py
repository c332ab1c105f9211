"""Load the TFLite interpreter from whichever runtime is installed.

ai-edge-litert is the maintained successor; tflite-runtime 2.14 is what older Pi images
ship. Both expose the same ``Interpreter`` class, so everything above this module is
runtime-agnostic. XNNPACK is the default CPU delegate in both.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from typing import Any

RUNTIMES = {
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
}


class RuntimeMissingError(RuntimeError):
    """No TFLite runtime could be imported."""


def available_runtimes() -> list[str]:
    """Names of the runtimes importable here, preferred first."""
    found = []
    for name, module in RUNTIMES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        found.append(name)
    return found


def resolve_runtime(name: str = "auto") -> str:
    """Pick a runtime: ``name`` if given, else $LENSBOX_RUNTIME, else the first importable."""
    if name == "auto":
        name = os.environ.get("LENSBOX_RUNTIME", "auto")
    found = available_runtimes()
    if name == "auto":
        if not found:
            raise RuntimeMissingError(
                "no TFLite runtime installed: pip install ai-edge-litert (or tflite-runtime)"
            )
        return found[0]
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; choose one of {sorted(RUNTIMES)} or 'auto'")
    if name not in found:
        raise RuntimeMissingError(
            f"runtime {name!r} is not installed (installed: {found or 'none'})"
        )
    return name


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the C++ "Created TensorFlow Lite XNNPACK delegate" line on fd 2.

    It is printed once per interpreter, i.e. once per build worker and per query pool
    thread, and drowns the progress bar; Python-level errors still raise normally.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def make_interpreter(model_path: str, num_threads: int = 2, runtime: str = "auto") -> Any:
    """Create an interpreter for ``model_path`` with ``num_threads`` XNNPACK threads."""
    module = importlib.import_module(RUNTIMES[resolve_runtime(runtime)])
    with _quiet_stderr():
        threads = max(1, int(num_threads))
        interp = module.Interpreter(model_path=str(model_path), num_threads=threads)
        interp.allocate_tensors()
    return interp
