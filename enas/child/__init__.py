"""The derived architecture as a network of its own: retrained from scratch and tested."""
