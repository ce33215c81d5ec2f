"""Compression: quantization (quantize.py and its backends), pruning and distillation."""
