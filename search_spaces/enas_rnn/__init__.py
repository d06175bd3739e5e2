"""The ENAS recurrent cell search space (paper 2.1, 3.2): ``cell.py`` is the readable
cell, the model and the space; ``kernels/`` holds the fast paths that compute the same
values (hand-written BPTT, the cell under torch.compile, the fused cross-entropy)."""
from .cell import (  # noqa: F401  the space's public names; importing registers "enas_rnn"
    ENAS_PTB_CELL, Args, EnasRNNSpace, ModelArgs, RNNModel, cell_edges, enas_cell, output_nodes, with_node0,
)
