"""Sparse TFLite weights made dense, for converters that cannot read them.

A TFLite model may store weights sparse (block-compressed), each expanded at load by a DENSIFY op;
tf2onnx reads such a tensor as if it were dense and fails ("cannot reshape array of size 96 into
shape (16,1,1,24)"). Here the TFLite interpreter itself runs the DENSIFY ops once (on the reference
kernels, every tensor kept), and the model is rewritten with their dense results as constants and
the DENSIFY ops removed. The source's outputs are unchanged; the caller verifies what it converts.
"""

from __future__ import annotations

from pathlib import Path


def densify_count(path: Path) -> int:
    """How many DENSIFY ops the model runs (0: nothing to do)."""
    from edgepack.model_files import tflite_interpreter

    return sum(op["op_name"] == "DENSIFY" for op in tflite_interpreter(path, delegates=False)._get_ops_details())


def densify_tflite(path: Path, out: Path) -> int:
    """Write the model with its DENSIFY results as constants to ``out``; the count of ops removed."""
    import numpy as np

    from edgepack.quiet import captured_output, import_tensorflow

    tf = import_tensorflow()
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    with captured_output():
        interpreter = tf.lite.Interpreter(
            model_path=str(path), experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
        interpreter.invoke()  # DENSIFY does not depend on the input: zeros will do
    removed = 0
    for graph in model.subgraphs[:1]:
        kept = []
        for op in graph.operators:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.DENSIFY:
                kept.append(op)
                continue
            dense = interpreter.get_tensor(op.outputs[0])
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(dense.tobytes(), np.uint8)
            model.buffers.append(buffer)
            for index in (op.outputs[0], op.inputs[0]):  # the sparse tensor, now unread, is made consistent
                tensor = graph.tensors[index]
                tensor.buffer, tensor.sparsity = len(model.buffers) - 1, None
                tensor.shape = np.array(dense.shape, np.int32)
            removed += 1
        graph.operators = kept
    flatbuffer_utils.write_model(model, str(out))
    return removed
