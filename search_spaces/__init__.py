"""Search spaces; importing this package registers every space in enas.nas.space.SPACES."""
from . import ops  # noqa: F401  (the op registry every space builds from)
from . import enas_macro, enas_micro, enas_rnn, nb201  # noqa: F401
