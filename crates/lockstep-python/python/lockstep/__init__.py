"""lockstep: one INT4 ONNX Gemma on several runtimes, identical tokens.

    import lockstep
    model = lockstep.Model("gemma3-270m")      # a built-in name or a converted directory
    backend = model.backend("ort-cpu")         # or "gpu"
    session = backend.session(256)             # KV budget: prompt + generated tokens
    for token in session.generate("The three primary colors are", max_new_tokens=32):
        print(token.text, end="", flush=True)

`conform(...)` and `bench(...)` return the reports `lockstep conform --json` and
`lockstep bench --json` print, as dicts.
"""

from ._native import (
    Backend,
    BackendRuntimeError,
    BusyError,
    ChecksumError,
    ContextOverflowError,
    FetchError,
    FileError,
    Generation,
    InvalidInputError,
    LockstepError,
    Model,
    ModelError,
    Session,
    Token,
    UnavailableError,
    bench,
    conform,
    version,
)

__version__ = version()

__all__ = [
    "Backend",
    "BackendRuntimeError",
    "BusyError",
    "ChecksumError",
    "ContextOverflowError",
    "FetchError",
    "FileError",
    "Generation",
    "InvalidInputError",
    "LockstepError",
    "Model",
    "ModelError",
    "Session",
    "Token",
    "UnavailableError",
    "bench",
    "conform",
    "version",
]
