"""Every backward rule of ``featapp.explain.backward``, against central differences.

Each case is a graph of one operator (or a small block: swish, a squeeze-and-excitation
gate) written with ``onnx.helper``. ``differentiate`` adds its backward pass; ONNX Runtime
runs it with a random seed on the output, and every input cell's derivative of
``sum(seed * output)`` is compared with ``(f(x + h) - f(x - h)) / 2h`` from ONNX Runtime
on the forward graph (float32, summed in float64). Inputs keep every value at least
``CLEARANCE`` from the operator's kinks and from each other, with ``h`` below it, so a
piecewise-linear operator's difference quotient is its derivative up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from featapp.explain.backward import SUPPORTED_OPS, UnsupportedLayer, differentiate
from tests.helpers.gradgraphs import away_from_kinks, make_model

STEP = 1e-2
CLEARANCE = 3e-2
TOLERANCE = 2e-3
"""Largest |numeric - gradient| allowed, relative to the gradient's largest value."""


@dataclass
class Case:
    nodes: list
    inputs: dict[str, np.ndarray]
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17
    wrt: tuple[str, ...] = ("x",)
    output: str = "y"
    free: tuple[str, ...] = ("x",)
    """Inputs whose first axis is a free size in the graph (the batch), as exporters write them."""


def _session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _model(case: Case):
    shapes: dict[str, list[int | str]] = {
        name: (["batch", *value.shape[1:]] if name in case.free else list(value.shape))
        for name, value in case.inputs.items()
    }
    return make_model(case.nodes, shapes, case.output, case.initializers, case.opset)


def check_against_finite_differences(case: Case, tamper: Callable[[object], None] | None = None) -> dict[str, float]:
    """The gradient of every ``wrt`` input against central differences, cell by cell;
    returns the largest error of each, relative to that gradient's largest value.
    ``tamper`` may change the backward model first (to see the check fail)."""
    forward = _model(case)
    run_forward = _session(forward)
    differentiated = differentiate(forward, case.output, case.wrt)
    if tamper is not None:
        tamper(differentiated)
    backward = _session(differentiated)
    base = run_forward.run([case.output], case.inputs)[0]
    seed = np.random.default_rng(1).normal(size=base.shape).astype(np.float32)
    got = backward.run([f"grad/{name}" for name in case.wrt], {**case.inputs, "seed": seed})
    errors = {}
    for name, gradient in zip(case.wrt, got, strict=True):
        x = case.inputs[name]
        assert gradient.shape == x.shape
        numeric = np.zeros(x.shape, np.float64)
        for cell in np.ndindex(*x.shape):
            values = []
            for sign in (1, -1):
                moved = x.copy()
                moved[cell] += sign * STEP
                out = run_forward.run([case.output], {**case.inputs, name: moved})[0]
                values.append(float((out.astype(np.float64) * seed).sum()))
            numeric[cell] = (values[0] - values[1]) / (2 * STEP)
        scale = float(np.abs(gradient).max())
        assert scale > 0, f"the gradient with respect to {name} is zero everywhere: nothing was checked"
        errors[name] = float(np.abs(numeric - gradient).max()) / scale
    return errors


def _x(*shape: int, low: float = -2.0, high: float = 2.0, kinks=(0.0,), seed: int = 0) -> np.ndarray:
    return away_from_kinks(shape, low, high, kinks, CLEARANCE, seed)


def _w(*shape: int, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.5, shape).astype(np.float32)


def _node(op: str, inputs: list[str], output: str = "y", **attrs) -> object:
    return helper.make_node(op, inputs, [output], **attrs)


def _one(op: str, x: np.ndarray, extra: list[str] = (), initializers=None, opset: int = 17, **attrs) -> Case:  # type: ignore[assignment]
    return Case([_node(op, ["x", *extra], **attrs)], {"x": x}, dict(initializers or {}), opset)


CASES: dict[str, Callable[[], Case]] = {
    # activations
    "Relu": lambda: _one("Relu", _x(2, 3, 4)),
    "LeakyRelu": lambda: _one("LeakyRelu", _x(2, 3, 4), alpha=0.1),
    "Sigmoid": lambda: _one("Sigmoid", _x(2, 3, 4)),
    "Tanh": lambda: _one("Tanh", _x(2, 3, 4)),
    "Softmax (last axis)": lambda: _one("Softmax", _x(2, 5)),
    "Softmax (channels of a map)": lambda: _one("Softmax", _x(2, 3, 2, 2), axis=1),
    "Softmax (opset 11, flattened from axis 1)": lambda: _one("Softmax", _x(2, 3, 4), opset=11),
    "Clip as ReLU6 (bounds as inputs)": lambda: _one(
        "Clip",
        _x(2, 3, 5, low=-2, high=8, kinks=(0, 6)),
        ["lo", "hi"],
        {"lo": np.float32(0), "hi": np.float32(6)},
    ),
    "Clip with a min only": lambda: _one("Clip", _x(2, 3, 4, kinks=(-0.5,)), ["lo"], {"lo": np.float32(-0.5)}),
    "Clip with a max only": lambda: _one("Clip", _x(2, 3, 4, kinks=(0.7,)), ["", "hi"], {"hi": np.float32(0.7)}),
    "Clip with no bounds": lambda: _one("Clip", _x(2, 3)),
    "Clip bounds from Constant nodes": lambda: Case(
        [
            _node("Constant", [], "lo", value=helper.make_tensor("v", 1, [], [-1.0])),
            _node("Constant", [], "hi", value=helper.make_tensor("v", 1, [], [1.0])),
            _node("Clip", ["x", "lo", "hi"]),
        ],
        {"x": _x(2, 3, 4, kinks=(-1, 1))},
    ),
    "Clip with bounds as attributes (opset 10)": lambda: _one(
        "Clip", _x(2, 3, 4, low=-2, high=8, kinks=(0, 6)), opset=10, min=0.0, max=6.0
    ),
    "Clip with a max attribute only (opset 7)": lambda: _one("Clip", _x(2, 3, 4, kinks=(0.5,)), opset=7, max=0.5),
    "HardSigmoid (defaults)": lambda: _one("HardSigmoid", _x(2, 3, 5, low=-4, high=4, kinks=(-2.5, 2.5))),
    "HardSigmoid (PyTorch's 1/6, 1/2)": lambda: _one(
        "HardSigmoid", _x(2, 3, 5, low=-5, high=5, kinks=(-3, 3)), alpha=1 / 6, beta=0.5
    ),
    "HardSwish": lambda: _one("HardSwish", _x(2, 3, 6, low=-5, high=5, kinks=(-3, 3))),
    # padding and joining
    "Pad (zero, rows and columns)": lambda: _one(
        "Pad", _x(2, 2, 3, 4), ["pads"], {"pads": np.array([0, 0, 1, 0, 0, 0, 2, 1], np.int64)}
    ),
    "Pad (a fill value, channels too)": lambda: _one(
        "Pad",
        _x(2, 2, 3, 3),
        ["pads", "fill"],
        {"pads": np.array([0, 1, 1, 1, 0, 2, 0, 1], np.int64), "fill": np.float32(0.5)},
    ),
    "Pad (axes input, opset 18)": lambda: _one(
        "Pad",
        _x(2, 2, 3, 3),
        ["pads", "", "axes"],
        {"pads": np.array([1, 2, 0, 1], np.int64), "axes": np.array([-1, 2], np.int64)},
        opset=18,
    ),
    "Pad (negative amounts crop)": lambda: _one(
        "Pad", _x(2, 2, 4, 5), ["pads"], {"pads": np.array([0, 0, -1, 1, 0, 0, 1, -2], np.int64)}
    ),
    "Pad (attribute, opset 10)": lambda: _one("Pad", _x(2, 2, 3, 3), opset=10, pads=[0, 0, 1, 2, 0, 0, 2, 0]),
    "Concat (two computed inputs)": lambda: Case(
        [_node("Relu", ["x"], "r"), _node("Sigmoid", ["x"], "s"), _node("Concat", ["r", "x", "s"], axis=1)],
        {"x": _x(2, 2, 3, 3)},
    ),
    "Concat (a constant, a negative axis)": lambda: Case(
        [_node("Concat", ["c", "x", "x"], axis=-1)], {"x": _x(2, 3, 2)}, {"c": _w(2, 3, 4)}
    ),
    # broadcasting
    "Mul (squeeze-and-excitation gate)": lambda: Case(
        [
            _node("GlobalAveragePool", ["x"], "pooled"),
            _node("Sigmoid", ["pooled"], "gate"),
            _node("Mul", ["x", "gate"]),
        ],
        {"x": _x(2, 3, 4, 4)},
    ),
    "Mul (swish, x * sigmoid(x))": lambda: Case(
        [_node("Sigmoid", ["x"], "s"), _node("Mul", ["x", "s"])], {"x": _x(2, 3, 4)}
    ),
    "Mul (x * x)": lambda: _one("Mul", _x(2, 3), ["x"]),
    "Mul (a gate of one image for a batch)": lambda: Case(
        [_node("Mul", ["x", "gate"])], {"x": _x(2, 3, 2, 2), "gate": _x(1, 3, 1, 1, seed=1)}, wrt=("x", "gate")
    ),
    "Add (a lower-rank input)": lambda: Case(
        [_node("Add", ["x", "v"])], {"x": _x(2, 3, 2, 4), "v": _x(4, seed=1)}, wrt=("x", "v")
    ),
    "Sub (broadcast both ways)": lambda: Case(
        [_node("Sub", ["a", "b"])], {"a": _x(2, 3, 1), "b": _x(1, 3, 4, seed=1)}, wrt=("a", "b"), free=("a",)
    ),
    "Div (a broadcast denominator)": lambda: Case(
        [_node("Div", ["a", "b"])],
        {"a": _x(2, 3, 4), "b": _x(2, 3, 1, low=0.5, high=2, seed=1)},
        wrt=("a", "b"),
        free=("a", "b"),
    ),
    "Div (a constant numerator)": lambda: Case(
        [_node("Div", ["c", "x"])], {"x": _x(2, 3, low=0.5, high=2)}, {"c": _w(3)}
    ),
    "Add (bias from a constant)": lambda: _one("Add", _x(2, 3, 2, 2), ["b"], {"b": _w(1, 3, 1, 1)}),
    # convolutions and normalisation
    "Conv": lambda: _one("Conv", _x(2, 3, 6, 6), ["w", "b"], {"w": _w(4, 3, 3, 3), "b": _w(4)}),
    "Conv (stride 2, pads)": lambda: _one(
        "Conv", _x(2, 3, 7, 7), ["w"], {"w": _w(4, 3, 3, 3)}, strides=[2, 2], pads=[1, 0, 1, 1]
    ),
    "Conv (dilation 2)": lambda: _one("Conv", _x(2, 2, 7, 7), ["w"], {"w": _w(3, 2, 3, 3)}, dilations=[2, 2]),
    "Conv (depthwise, stride 2, same padding)": lambda: _one(
        "Conv", _x(2, 4, 7, 7), ["w"], {"w": _w(4, 1, 3, 3)}, group=4, strides=[2, 2], auto_pad="SAME_UPPER"
    ),
    "Conv (2 groups)": lambda: _one("Conv", _x(2, 4, 5, 5), ["w"], {"w": _w(6, 2, 3, 3)}, group=2, pads=[1, 1, 1, 1]),
    "BatchNormalization": lambda: _one(
        "BatchNormalization",
        _x(2, 3, 2, 2),
        ["scale", "bias", "mean", "var"],
        {"scale": _w(3), "bias": _w(3, seed=6), "mean": _w(3, seed=7), "var": np.float32([0.5, 1.0, 2.0])},
    ),
    # pooling and reductions
    "MaxPool (2x2)": lambda: _one("MaxPool", _x(2, 2, 4, 6), kernel_shape=[2, 2], strides=[2, 2]),
    "MaxPool (3x3 stride 2, overlapping, padded)": lambda: _one(
        "MaxPool", _x(2, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
    ),
    "MaxPool (3x3 stride 1, opset 15)": lambda: _one(
        "MaxPool", _x(2, 2, 5, 5), kernel_shape=[3, 3], pads=[1, 1, 1, 1], opset=15
    ),
    "MaxPool (2x2, dilation 2)": lambda: _one("MaxPool", _x(2, 2, 5, 6), kernel_shape=[2, 2], dilations=[2, 2]),
    "AveragePool (2x2)": lambda: _one("AveragePool", _x(2, 2, 4, 6), kernel_shape=[2, 2], strides=[2, 2]),
    "AveragePool (3x3 stride 1, zeros counted)": lambda: _one(
        "AveragePool", _x(2, 2, 4, 4), kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1
    ),
    "GlobalAveragePool": lambda: _one("GlobalAveragePool", _x(2, 3, 3, 4)),
    "ReduceMean (axes attribute, no kept dims)": lambda: _one("ReduceMean", _x(2, 3, 2, 4), axes=[2, 3], keepdims=0),
    "ReduceMean (axes input, opset 18)": lambda: _one(
        "ReduceMean", _x(2, 3, 2, 4), ["axes"], {"axes": np.array([-1], np.int64)}, opset=18
    ),
    # reshaping and the head
    "Flatten": lambda: _one("Flatten", _x(2, 3, 2, 2)),
    "Reshape": lambda: _one("Reshape", _x(2, 3, 4), ["shape"], {"shape": np.array([0, 2, -1], np.int64)}),
    "Transpose": lambda: _one("Transpose", _x(2, 3, 4), perm=[0, 2, 1]),
    "Squeeze": lambda: _one("Squeeze", _x(2, 3, 1), ["axes"], {"axes": np.array([2], np.int64)}),
    "Unsqueeze": lambda: _one("Unsqueeze", _x(2, 3), ["axes"], {"axes": np.array([1], np.int64)}),
    "Gemm (transposed weights, bias, alpha)": lambda: _one(
        "Gemm", _x(2, 5), ["w", "b"], {"w": _w(3, 5), "b": _w(3)}, transB=1, alpha=0.5
    ),
    "Gemm": lambda: _one("Gemm", _x(2, 5), ["w"], {"w": _w(5, 3)}),
    "MatMul": lambda: _one("MatMul", _x(2, 5), ["w"], {"w": _w(5, 3)}),
    "Dropout": lambda: _one("Dropout", _x(2, 3)),
    "Identity": lambda: _one("Identity", _x(2, 3)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rule_matches_finite_differences(name):
    errors = check_against_finite_differences(CASES[name]())
    assert max(errors.values()) <= TOLERANCE, errors


def test_every_supported_operator_has_a_case():
    tested = {node.op_type for make in CASES.values() for node in make().nodes}
    assert set(SUPPORTED_OPS) <= tested, sorted(set(SUPPORTED_OPS) - tested)


def test_a_wrong_rule_is_caught():
    """The check can fail: HardSwish's backward with the middle slope x/6 + 1/2 instead of x/3 + 1/2."""
    from onnx import numpy_helper

    def halve_the_slope(model) -> None:
        third = next(init for init in model.graph.initializer if init.name.startswith("grad/third"))
        third.CopyFrom(numpy_helper.from_array(np.float32(1 / 6), third.name))

    case = CASES["HardSwish"]()
    assert max(check_against_finite_differences(case).values()) <= TOLERANCE
    assert max(check_against_finite_differences(case, halve_the_slope).values()) > 0.1


def _padded(mode: str) -> Case:
    return _one("Pad", _x(1, 1, 3, 3), ["pads"], {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, mode=mode)


@pytest.mark.parametrize(
    ("case", "op"),
    [
        (_padded("reflect"), "Pad"),
        (_padded("edge"), "Pad"),
        (Case([_node("Relu", ["x"], "r"), _node("Clip", ["x", "r"])], {"x": _x(2, 3)}), "Clip"),
        (_one("Elu", _x(2, 3)), "Elu"),
        # (n, 3) times (4, 3): whether the first input is broadcast is only known when it runs.
        (Case([_node("Mul", ["x", "v"])], {"x": _x(2, 3), "v": _x(4, 3, seed=1)}, wrt=("x",)), "Mul"),
    ],
    ids=["reflect pad", "edge pad", "clip bound computed in the graph", "elu", "free size against a fixed one"],
)
def test_what_cannot_be_differentiated_says_which_operator(case, op):
    with pytest.raises(UnsupportedLayer, match=f"ONNX operator {op}"):
        differentiate(_model(case), "y", case.wrt)
