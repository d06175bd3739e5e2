"""Search spaces; importing this package registers every space in enas.space.SPACES."""
from . import ops  # noqa: F401
from . import enas_rnn  # noqa: F401
from . import enas_micro  # noqa: F401
from . import enas_macro  # noqa: F401
from . import nb201  # noqa: F401
