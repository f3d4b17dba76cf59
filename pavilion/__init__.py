"""Pavilion's shared kernel: CLI, settings, logging, metrics and the gRPC server bootstrap."""

__version__ = "0.1.0"
