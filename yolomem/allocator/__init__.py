"""PyTorch's CUDA caching allocator, simulated, and the one replay of a trace through it."""
