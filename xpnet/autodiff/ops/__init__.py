"""Differentiable operations (filled in by the ops modules)."""

__all__: list = []
