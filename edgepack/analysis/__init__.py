"""Static analysis of a model graph: parameters, MACs per layer, ops, activation memory, estimates."""
