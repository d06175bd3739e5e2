"""Fast paths of the ENAS RNN cell; each computes what ``enas_cell`` (../cell.py) does,
and tests/test_fast_paths.py checks values and gradients against it."""
