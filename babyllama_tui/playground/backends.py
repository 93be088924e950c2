"""What runs the Playground's checkpoints: `serve --backend ... --precision ...`, the fastest available first.

llama.cpp is offered where llama-cpp-python is installed (found without importing it: the app
stays light), q8_0 first: on the CPU it is the fastest (README, "Which backend"). numpy float32 is
always there, and the only choice without llama-cpp-python.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # as serve's --backend takes it
    precision: str  # as --precision takes it; f32 for numpy
    label: str  # for people: "llama.cpp q8_0"

    @property
    def generate_settings(self) -> dict[str, str]:
        """What a saved session adds to a generation's settings so that `babyllama generate` makes it
        again on this backend: nothing for numpy, generate's default."""
        return {} if self.backend == "numpy" else {"backend": self.backend, "precision": self.precision}

    @property
    def serve_args(self) -> tuple[str, ...]:
        if self.backend == "numpy":
            return ("--backend", "numpy")
        return ("--backend", self.backend, "--precision", self.precision)


NUMPY = BackendChoice("numpy", "f32", "numpy f32")
LLAMACPP = tuple(BackendChoice("llamacpp", precision, f"llama.cpp {precision}") for precision in ("q8_0", "f16", "f32"))


def available_backends() -> tuple[BackendChoice, ...]:
    """The choices this machine has, fastest first."""
    if importlib.util.find_spec("llama_cpp") is None:
        return (NUMPY,)
    return (*LLAMACPP, NUMPY)


def served_label(ready: dict) -> str | None:
    """What a server's ready event says runs its model: "llama.cpp q8_0"; None when it does not say."""
    backend, precision = ready.get("backend"), ready.get("precision")
    if not isinstance(backend, str):
        return None
    name = {"llamacpp": "llama.cpp", "mindspore": "MindSpore"}.get(backend, backend)
    return f"{name} {precision}" if isinstance(precision, str) else name
