"""Search spaces; importing this package registers every space in enas.space.SPACES."""
import importlib

from . import ops  # noqa: F401

# TODO(lead): explicit imports once every space file has landed.
for _name in ("enas_rnn", "enas_micro", "enas_macro", "nb201"):
    try:
        importlib.import_module(f".{_name}", __name__)
    except ModuleNotFoundError as _e:
        if _e.name != f"{__name__}.{_name}":
            raise
