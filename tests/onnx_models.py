"""Small ONNX models built with onnx.helper for the tests (nothing is downloaded), and a
ResNet-18-like graph (He et al. 2015, table 1: 7x7/2 stem, 3x3/2 max pooling, four stages of two
basic blocks with 64, 128, 256, 512 channels, 1x1/2 projections, global average pooling, a
classifier)."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Graph:
    """Nodes, initializers (zeros unless given) and value names for one onnx.helper graph."""

    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def weight(self, shape, values=None):
        name = self.name("w")
        data = np.zeros(shape, np.float32) if values is None else np.asarray(values, np.float32)
        self.inits.append(numpy_helper.from_array(data, name))
        return name

    def node(self, op, inputs, n_out=1, name=None, **attrs):
        outs = [self.name("t") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name or self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, inputs, output, opset=18):
        g = helper.make_graph(self.nodes, "g", inputs,
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                              self.inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def resnet18(batch="N", size=224, classes=1000) -> onnx.ModelProto:
    g = Graph()

    def conv(x, cin, cout, k, s, p, name):
        return g.node("Conv", [x, g.weight((cout, cin, k, k)), g.weight((cout,))], name=name,
                      kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])

    x = g.node("Relu", [conv("input", 3, 64, 7, 2, 3, "conv1")])
    x = g.node("MaxPool", [x], name="maxpool", kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            s = 2 if (block == 0 and stage > 1) else 1
            name = f"layer{stage}.{block}"
            h = g.node("Relu", [conv(x, cin, cout, 3, s, 1, f"{name}.conv1")])
            h = conv(h, cout, cout, 3, 1, 1, f"{name}.conv2")
            skip = conv(x, cin, cout, 1, s, 0, f"{name}.downsample") if (s != 1 or cin != cout) \
                else x
            x = g.node("Relu", [g.node("Add", [h, skip])])
            cin = cout
    x = g.node("GlobalAveragePool", [x], name="avgpool")
    x = g.node("Flatten", [x], axis=1)
    x = g.node("Gemm", [x, g.weight((classes, 512)), g.weight((classes,))], name="fc", transB=1)
    return g.model([tensor("input", [batch, 3, size, size])], x)


def single(op, x_shape, weights=(), n_out=1, opset=18, extra_inputs=(), **attrs):
    """A one-node model: input 'x', the given weights (arrays, or '' for an absent optional
    input) as initializers, the node's first output as the graph's output."""
    g = Graph()
    names = []
    for w in weights:
        names.append("" if isinstance(w, str) else g.weight(np.shape(w), w))
    out = g.node(op, ["x"] + names + list(extra_inputs), n_out, name="the_node", **attrs)
    out = out if n_out == 1 else out[0]
    return g.model([tensor("x", list(x_shape))], out, opset)
