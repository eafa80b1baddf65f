"""Differentiable ops: each module holds Functions whose forward and backward sit side by side."""
