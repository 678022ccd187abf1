"""Benchmarks: scitensor side by side with PyTorch."""
