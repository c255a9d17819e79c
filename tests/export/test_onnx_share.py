"""share_weights: one weights file for several ONNX graphs, and no orphaned external data left behind."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from melody_edge.export.onnx_export import share_weights


def _graph(weight: np.ndarray, scale: float) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])
    w = numpy_helper.from_array(weight, "w")
    s = numpy_helper.from_array(np.array(scale, dtype=np.float32), "s")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "s"], ["y"])]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], [w, s]), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    return model


def test_shared_weights_replace_each_graphs_own_external_data(tmp_path):
    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    paths = []
    for name, scale in (("prefill", 1.0), ("decode", 2.0)):
        path = tmp_path / f"lm.{name}.onnx"
        # How a graph over 2 GB is saved by the exporter: its weights in its own `<file>.data`.
        onnx.save_model(_graph(weight, scale), str(path), save_as_external_data=True, location=f"{path.name}.data")
        paths.append(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lm.decode.onnx",
        "lm.decode.onnx.data",
        "lm.prefill.onnx",
        "lm.prefill.onnx.data",
    ]
    saved = share_weights(paths, tmp_path / "lm.weights")
    assert saved == weight.nbytes
    # The per-graph data files are gone: only the graphs and the one shared weights file remain.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm.decode.onnx", "lm.prefill.onnx", "lm.weights"]
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    for path, scale in zip(paths, (1.0, 2.0), strict=True):
        (y,) = ort.InferenceSession(str(path)).run(None, {"x": x})
        np.testing.assert_allclose(y, scale * (x @ weight), rtol=1e-5, atol=1e-5)
