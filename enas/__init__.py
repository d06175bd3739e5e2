"""enas: Efficient Neural Architecture Search (Pham et al., ICML 2018) in PyTorch."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("enas")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "unknown"
