"""Verify and write a converted model's gradient model (``MODEL.grad.onnx``).

The backward graph itself is built by :mod:`featapp.explain.backward` (ONNX and NumPy only, so the
app can also say why a model has none). Here it is checked against ``tf.GradientTape``
on a replay of the forward graph in TensorFlow, and written only when they agree.

``python -m convert export`` calls :func:`write_gradient_model` after writing the forward
model; ``python -m convert gradients MODEL.onnx`` does it for an existing file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from convert.common import cpu_session
from convert.errors import ConversionError
from convert.verification import relative_error
from featapp.explain.backward import (
    GRADIENTS_KEY,
    UnsupportedLayer,
    _analyse,
    _attrs,
    _nchw,
    _same_value_chain,
    build_gradient_model,
    gradient_path,
    target_graph,
)

__all__ = ["verify_gradients", "write_gradient_model"]


# -- verification -------------------------------------------------------------------------
RELU_TIE = 1e-5
"""How near zero, relative to the largest value of its input, a ReLU input may be for
ONNX Runtime and TensorFlow to see it on different sides of the kink (float32 rounding of
the sums before it): there the replay follows ONNX Runtime (see :func:`_replay`)."""


def _replay(
    forward,
    fed,
    argmax: dict[str, np.ndarray] | None = None,
    relu_outputs: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Run the forward ONNX graph again with TensorFlow operations (float ops on the tape;
    shape arithmetic in NumPy), so that ``tf.GradientTape`` can differentiate it.

    ``argmax`` gives, per MaxPool output, where ONNX Runtime found each maximum. Where a
    window holds equal values (flat parts of a photo), both frameworks are right but may
    pick different pixels, and so route the gradient differently. So the replay takes the
    values at ONNX Runtime's positions (a gather, which the tape differentiates) after
    checking they are the window maxima TensorFlow finds; the check then tests every
    other part of the backward graph exactly.

    ``relu_outputs`` does the same for ReLUs and Clips (ReLU6), by output name: an input at
    rounding distance from a kink (one of a trained network's many) can be on one side in
    one framework and on the other in the other, which sends its whole gradient another
    way. The replay takes ONNX Runtime's 0/1 mask of where the gradient passes after
    checking that every cell where the two disagree is within :data:`RELU_TIE` of the kink."""
    import tensorflow as tf
    from onnx import numpy_helper

    values: dict[str, Any] = {init.name: numpy_helper.to_array(init) for init in forward.graph.initializer}
    values[forward.graph.input[0].name] = fed

    def nhwc(x):
        return tf.transpose(x, (0, 2, 3, 1))

    def nchw(x):
        return tf.transpose(x, (0, 3, 1, 2))

    for node in forward.graph.node:
        a = _attrs(node)
        # Values are numpy arrays or TensorFlow tensors as the graph mixes them: typed as Any.
        ins: list[Any] = [values[name] if name else None for name in node.input]
        op = node.op_type
        x: Any = ins[0] if ins else None
        if op == "Constant":
            out = numpy_helper.to_array(node.attribute[0].t)
        elif op == "Shape":
            out = np.array(x.shape, np.int64)
        elif op == "Gather":
            out = np.take(np.asarray(x), np.asarray(ins[1]), axis=a.get("axis", 0))
        elif op == "Cast":
            out = (
                np.asarray(x).astype(_numpy_type(a["to"])) if not tf.is_tensor(x) else tf.cast(x, _numpy_type(a["to"]))
            )
        elif op == "Slice":
            arr = np.asarray(x)
            starts, ends = np.asarray(ins[1]), np.asarray(ins[2])
            axes: Any = np.asarray(ins[3]) if len(ins) > 3 and ins[3] is not None else np.arange(len(starts))
            steps: Any = np.asarray(ins[4]) if len(ins) > 4 and ins[4] is not None else np.ones(len(starts), np.int64)
            index = [slice(None)] * arr.ndim
            for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
                index[int(ax)] = slice(int(s), int(min(e, np.iinfo(np.int64).max)), int(st))
            out = arr[tuple(index)]
        elif op == "Concat" and not any(tf.is_tensor(i) for i in ins):
            out = np.concatenate([np.asarray(i) for i in ins], axis=a["axis"])
        elif op == "Concat":
            out = tf.concat(ins, axis=a["axis"])
        elif op == "Unsqueeze" and not tf.is_tensor(x):
            out = np.expand_dims(np.asarray(x), tuple(int(i) for i in np.asarray(ins[1])))
        elif op == "Squeeze" and not tf.is_tensor(x):
            out = np.squeeze(np.asarray(x), tuple(int(i) for i in np.asarray(ins[1])))
        elif op in ("Reshape", "Squeeze", "Unsqueeze", "Flatten"):
            if op == "Reshape":
                shape = [int(d) for d in np.asarray(ins[1])]
                shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            elif op == "Flatten":
                axis = a.get("axis", 1)
                shape = [int(np.prod(x.shape[:axis])), -1]
            else:
                axes = [int(i) for i in np.asarray(ins[1])]
                out = tf.squeeze(x, axes) if op == "Squeeze" else x
                if op == "Unsqueeze":
                    for axis in sorted(axes):
                        out = tf.expand_dims(out, axis)
                values[node.output[0]] = out
                continue
            out = tf.reshape(x, shape)
        elif op == "Transpose":
            out = tf.transpose(x, a["perm"])
        elif op in ("Identity", "Dropout"):
            out = tf.identity(x)
        elif op == "Conv":
            strides = list(a.get("strides", [1, 1]))
            dilations = list(a.get("dilations", [1, 1]))
            pads = list(a.get("pads", [0, 0, 0, 0]))
            auto_pad = a.get("auto_pad", b"NOTSET")
            auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
            w = np.transpose(np.asarray(ins[1]), (2, 3, 1, 0))  # OIHW -> HWIO
            group = int(a.get("group", 1))
            padding: Any
            if auto_pad.startswith("SAME"):
                padding = "SAME"
            else:
                padding = [[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]]
            if group == 1:

                def conv(t, padding, strides=strides, dilations=dilations, w=w):
                    return tf.nn.conv2d(t, w, strides=strides, padding=padding, dilations=dilations)

            elif group == x.shape[1] and w.shape[2] == 1:
                dw = np.transpose(np.asarray(ins[1]), (2, 3, 0, 1)).reshape(w.shape[0], w.shape[1], group, -1)

                def conv(t, padding, strides=strides, dilations=dilations, dw=dw):
                    return tf.nn.depthwise_conv2d(t, dw, strides=[1, *strides, 1], padding=padding, dilations=dilations)

            else:
                raise ConversionError(f"the gradient check cannot replay a grouped convolution ({node.name})")
            if any(d > 1 for d in dilations):
                # TensorFlow's CPU kernels cannot differentiate a dilated convolution
                # (Conv2DBackpropInput refuses rates above 1): the same convolution, undilated,
                # on a space-to-batch view of the padded input can be.
                if any(s > 1 for s in strides):
                    raise ConversionError(
                        f"the gradient check cannot replay a convolution with both strides and dilations ({node.name})"
                    )
                if padding == "SAME":
                    pads = _same_pads(w.shape[:2], dilations, auto_pad)
                padded = tf.pad(nhwc(x), [[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]])
                y = tf.nn.with_space_to_batch(
                    padded,
                    dilation_rate=dilations,
                    padding="VALID",
                    op=lambda t, num_spatial_dims, padding, conv=conv: conv(t, padding, [1, 1], [1, 1]),
                )
            else:
                y = conv(nhwc(x), padding)
            if len(ins) > 2 and ins[2] is not None:
                y = y + np.asarray(ins[2])
            out = nchw(y)
        elif op in ("MaxPool", "AveragePool"):
            kernel = list(a["kernel_shape"])
            strides = list(a.get("strides", [1, 1]))
            pads = list(a.get("pads", [0, 0, 0, 0]))
            t = nhwc(x)
            if any(pads):
                fill = -np.inf if op == "MaxPool" else 0.0
                t = tf.pad(t, [[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]], constant_values=fill)
            pool = tf.nn.max_pool2d if op == "MaxPool" else tf.nn.avg_pool2d
            out = nchw(pool(t, kernel, strides, "VALID"))
            where = (argmax or {}).get(f"{node.output[0]}__indices")
            if op == "MaxPool" and where is not None:
                picked = tf.reshape(tf.gather(tf.reshape(x, [-1]), where.reshape(-1)), where.shape)
                gap = float(tf.reduce_max(tf.abs(picked - out)))
                if gap > 1e-5 * max(float(tf.reduce_max(tf.abs(out))), 1e-6):
                    raise ConversionError(f"MaxPool '{node.name}' gives positions that are not the window maxima.")
                out = picked
        elif op == "GlobalAveragePool":
            out = tf.reduce_mean(x, axis=[2, 3], keepdims=True)
        elif op == "ReduceMean":
            axes = a.get("axes", np.asarray(ins[1]) if len(ins) > 1 and ins[1] is not None else None)
            axes = None if axes is None else [int(i) for i in np.ravel(axes)]
            out = tf.reduce_mean(x, axis=axes, keepdims=bool(a.get("keepdims", 1)))
        elif op == "BatchNormalization":
            scale, bias, mean, var = (np.asarray(i).reshape(1, -1, 1, 1) for i in ins[1:5])
            out = (x - mean) / np.sqrt(var + a.get("epsilon", 1e-5)) * scale + bias
        elif op == "MatMul":
            out = tf.matmul(x, ins[1])
        elif op == "Gemm":
            left = tf.transpose(x) if a.get("transA", 0) else x
            right = tf.transpose(ins[1]) if a.get("transB", 0) else ins[1]
            out = a.get("alpha", 1.0) * tf.matmul(left, right)
            if len(ins) > 2 and ins[2] is not None:
                out = out + a.get("beta", 1.0) * ins[2]
        elif op in ("Add", "Sub", "Mul", "Div"):
            fn = {"Add": tf.add, "Sub": tf.subtract, "Mul": tf.multiply, "Div": tf.divide}[op]
            out = fn(x, ins[1])
        elif op == "Relu" and (relu_outputs or {}).get(node.output[0]) is not None:
            out = x * _relu_mask(node, x, relu_outputs[node.output[0]])  # type: ignore[index]
        elif op == "Relu":
            out = tf.nn.relu(x)
        elif op == "Clip":
            out = _clip(node, x, a, ins, (relu_outputs or {}).get(node.output[0]))
        elif op == "HardSigmoid":
            out = tf.clip_by_value(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0, 1.0)
        elif op == "HardSwish":
            out = x * tf.clip_by_value(x / 6.0 + 0.5, 0.0, 1.0)
        elif op == "Pad":
            out = _pad(node, x, a, ins)
        elif op == "LeakyRelu":
            out = tf.nn.leaky_relu(x, a.get("alpha", 0.01))
        elif op == "Sigmoid":
            out = tf.sigmoid(x)
        elif op == "Tanh":
            out = tf.tanh(x)
        elif op == "Softmax":
            out = tf.nn.softmax(x, axis=a.get("axis", -1))
        else:
            raise ConversionError(f"the gradient check cannot replay ONNX operator {op} ({node.name})")
        values[node.output[0]] = out
    return values


def _same_pads(kernel, dilations, auto_pad: str) -> list[int]:
    """ONNX's explicit (top, left, bottom, right) padding of a stride-1 'SAME_UPPER'/'SAME_LOWER'
    window (at stride 1 the output keeps the input's size, so the input's size does not matter)."""
    totals = [(int(k) - 1) * int(d) for k, d in zip(kernel, dilations, strict=True)]
    early = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
    return [early[0], early[1], totals[0] - early[0], totals[1] - early[1]]


def _relu_mask(node, x, ort_output: np.ndarray) -> np.ndarray:
    """ONNX Runtime's ReLU mask (1 where it passed the value), once the cells where it and
    TensorFlow disagree are all at rounding distance from zero."""
    values = np.asarray(x)
    return _tied_mask(node, "ReLU", values, ort_output > 0, values > 0, np.abs(values))


def _tied_mask(
    node, what: str, values: np.ndarray, ort_mask: np.ndarray, tf_mask: np.ndarray, distance: np.ndarray
) -> np.ndarray:
    """ONNX Runtime's mask of where a kinked operator passes its gradient, after checking that
    where TensorFlow's differs the input is within :data:`RELU_TIE` (``distance``) of the kink."""
    disagree = ort_mask != tf_mask
    if disagree.any():
        limit = RELU_TIE * max(float(np.abs(values).max()), 1e-12)
        worst = float(distance[disagree].max())
        if worst > limit:
            raise ConversionError(
                f"{what} '{node.name}' passes values ONNX Runtime and TensorFlow disagree on by more than rounding "
                f"({worst:.2e}, allowed {limit:.1e}); the gradient model was not written."
            )
    return ort_mask.astype(np.float32)


def _clip(node, x, a: dict[str, Any], ins: list[Any], ort_output: np.ndarray | None):
    """Clip (ReLU6) in TensorFlow; with ONNX Runtime's output, its mask decides where the
    gradient passes (see :func:`_replay`)."""
    import tensorflow as tf

    lo = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
    lo = None if lo is None else float(np.asarray(lo))
    hi = None if hi is None else float(np.asarray(hi))
    clipped = tf.clip_by_value(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)
    if ort_output is None:
        return clipped
    values = np.asarray(x)

    def inside(v: np.ndarray) -> np.ndarray:
        return (v > (-np.inf if lo is None else lo)) & (v < (np.inf if hi is None else hi))

    distance = np.minimum(
        np.abs(values - (lo if lo is not None else -np.inf)), np.abs(values - (hi if hi is not None else np.inf))
    )
    mask = _tied_mask(node, "Clip", values, inside(ort_output), inside(values), distance)
    # The input where ONNX Runtime passed it, its output (a bound, no gradient) elsewhere.
    return x * mask + ort_output * (1 - mask)


def _pad(node, x, a: dict[str, Any], ins: list[Any]):
    """A constant Pad in TensorFlow (the backward graph refuses the other modes)."""
    import tensorflow as tf

    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise ConversionError(f"the gradient check cannot replay a Pad in mode '{mode}' ({node.name})")
    amounts = [int(v) for v in np.ravel(a["pads"] if "pads" in a else np.asarray(ins[1]))]
    rank = len(x.shape)
    axes = [int(v) % rank for v in np.ravel(ins[3])] if len(ins) > 3 and ins[3] is not None else list(range(rank))
    begins, ends = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begins[axis], ends[axis] = amounts[i], amounts[len(axes) + i]
    if any(v < 0 for v in begins + ends):
        raise ConversionError(f"the gradient check cannot replay a Pad that crops ({node.name})")
    fill = float(np.ravel(np.asarray(ins[2]))[0]) if len(ins) > 2 and ins[2] is not None else float(a.get("value", 0.0))
    return tf.pad(x, list(zip(begins, ends, strict=True)), constant_values=fill)


def _numpy_type(onnx_type: int):
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(onnx_type)


GRADIENT_FLOOR = 1e-6
"""Gradients are often far below 1e-3: their relative error is floored lower than activations'."""


def verify_gradients(
    forward, gradient_model, images: np.ndarray, tolerance: float = 1e-3, log: Callable[[str], None] = print
) -> dict[str, float]:
    """Compare ONNX Runtime's gradients with ``tf.GradientTape`` on ``images`` (float32 NHWC,
    already scaled like the graph's input).

    Targets: the logit of each image's class (for a classifier), and for every conv layer
    the mean of one channel (the most active one on these images). For each target the
    gradient with respect to the input and to every layer below is compared, the error
    scaled to that gradient's largest value. Raises :class:`ConversionError` when one
    exceeds ``tolerance``; returns the largest error per target.
    """
    import tensorflow as tf

    from featapp.engine.metadata import METADATA_KEY, ModelSpec

    meta = {p.key: p.value for p in gradient_model.metadata_props}
    spec = ModelSpec.from_json(meta[METADATA_KEY])
    info = json.loads(meta[GRADIENTS_KEY])
    layers = {layer.name: layer for layer in spec.layers}
    graph = _analyse(forward, list(layers))
    count = len(images)
    names_in_order = [layer.name for layer in spec.layers]
    errors: dict[str, float] = {}
    acts: dict[str, np.ndarray] = {}
    for target in info["targets"]:
        layer = layers[target["layer"]]
        if not target["logit"] and layer.kind not in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
            continue
        try:
            pruned = target_graph(gradient_model, target["name"], names_in_order)
            import onnx

            pooled = [n.output[1] for n in pruned.graph.node if n.op_type == "MaxPool" and len(n.output) > 1]
            for name in pooled:  # read back where each max came from (see _replay)
                pruned.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
            outputs = {value.name for value in pruned.graph.output}
            relus = [n.output[0] for n in pruned.graph.node if n.op_type in ("Relu", "Clip")]
            for name in relus:  # and which side of zero each ReLU input was on
                if name not in outputs:
                    pruned.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            session = cpu_session(pruned.SerializeToString())
        except Exception as err:  # noqa: BLE001 - ORT raises its own types; the cause stays chained
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise ConversionError(
                f"ONNX Runtime cannot run the gradient graph ({first}); the gradient model was not written."
            ) from err
        position = names_in_order.index(layer.name)
        forward_names = names_in_order[: position + 1]
        acts.update(zip(forward_names, _forward(forward, images, forward_names), strict=True))
        if target["logit"]:
            units = layer.channels
            if units == 1:
                seed = np.ones((count, 1), np.float32)  # the logit of p(positive class)
            else:
                seed = np.eye(units, dtype=np.float32)[acts[layer.name].argmax(axis=1)]
            label = f"logit of {layer.name}"
        else:
            channels, rows, cols = _nchw(layer)
            channel = int(acts[layer.name].mean(axis=(0, 2, 3)).argmax())
            seed = np.zeros((count, channels, rows, cols), np.float32)
            seed[:, channel] = 1.0 / (rows * cols)
            label = f"{target['name']} channel {channel + 1} mean"
        names = list(target["gradients"].values())
        results = session.run([*names, *pooled, *relus], {spec.input_name: images, target["seed"]: seed})
        got = dict(zip(target["gradients"], results[: len(names)], strict=True))
        argmax = dict(zip(pooled, results[len(names) : len(names) + len(pooled)], strict=True))
        relu_outputs = dict(zip(relus, results[len(names) + len(pooled) :], strict=True))

        watched: dict[str, Any] = {}
        x = tf.Variable(images)

        with tf.GradientTape() as tape:
            values = _replay(forward, x, argmax, relu_outputs)
            if target["logit"] or target["preactivation"]:
                value = values[graph_producer_input(forward, layer.name)]
            else:
                value = values[layer.name]
            scalar = tf.reduce_sum(value * seed)
            watched = {name: values[name] for name in target["gradients"] if name != "input"}
        chains = {name: _same_value_chain(graph, name) for name in watched}
        # One backward pass for the input and every layer: a pass per layer made the check
        # grow with the square of the depth (bench/results/convert_gradients.md).
        sources = list(dict.fromkeys(t for chain in chains.values() for t, _ in chain if tf.is_tensor(values[t])))
        found = tape.gradient(scalar, [x, *(values[t] for t in sources)])
        del tape
        taped = {t: grad.numpy() for t, grad in zip(sources, found[1:], strict=True) if grad is not None}
        want = {"input": found[0].numpy()}
        for name in watched:
            want[name] = _tape_gradient(taped, chains[name], acts[name].shape)
        worst = 0.0
        for name, expected in want.items():
            if name not in got:
                continue
            if got[name].shape != expected.shape:
                raise ConversionError(
                    f"gradient of {label} w.r.t. {name}: shape {got[name].shape}, TensorFlow {expected.shape}"
                )
            error = relative_error(expected, got[name], floor=GRADIENT_FLOOR)
            worst = max(worst, error)
            if not error <= tolerance:
                raise ConversionError(
                    f"ONNX Runtime and tf.GradientTape disagree on the gradient of {label} with respect to {name} "
                    f"(error {error:.2e} of its largest value, tolerance {tolerance:.0e}); "
                    "the gradient model was not written."
                )
        errors[label] = worst
        log(
            f"  d({label}) / d(input and {len(want) - 1} layers): max error {worst:.1e} of each gradient's largest value"
        )
    return errors


def _forward(forward, images: np.ndarray, names: list[str]) -> list[np.ndarray]:

    session = cpu_session(forward.SerializeToString())
    return session.run(names, {forward.graph.input[0].name: images})


def _tape_gradient(taped: dict[str, np.ndarray], chain: list, shape: tuple[int, ...]) -> np.ndarray:
    """TensorFlow's gradient for a layer output (``taped``: the tape's gradients by tensor
    name); one that nothing reads (an NCHW copy made by Transpose, dropout's Identity) gets
    the gradient of the tensor it copies."""
    for position, (tensor, _) in enumerate(chain):
        grad = taped.get(tensor)
        if grad is None:
            continue
        for _, step in reversed(chain[:position]):
            if step.op_type == "Transpose":
                grad = np.transpose(grad, list(_attrs(step)["perm"]))
        return grad
    return np.zeros(shape, np.float32)


def graph_producer_input(forward, tensor: str) -> str:
    """The input of the node that produces ``tensor`` (the logit under a sigmoid or softmax)."""
    for node in forward.graph.node:
        if tensor in node.output:
            return node.input[0]
    raise KeyError(tensor)


def write_gradient_model(
    forward_path: str | Path,
    images: np.ndarray | None = None,
    tolerance: float = 1e-3,
    log: Callable[[str], None] = print,
) -> Path | None:
    """Build, verify and write ``<name>.grad.onnx`` next to a converted model.

    ``images`` are float32 NHWC inputs already scaled for the graph (default: the
    converter's verification images). Returns the path written, or ``None`` when a
    layer cannot be differentiated (said in the log, and any older gradient file is
    removed so it cannot be mistaken for this model's). Raises :class:`ConversionError`
    when the gradients disagree with TensorFlow.
    """

    from convert.common import verification_images, write_atomically

    forward_path = Path(forward_path)
    forward, spec, target, model = _gradient_model_of(forward_path, log)
    if model is None:
        return None
    if images is None:
        raw = verification_images(spec.input.height, spec.input.width, spec.input.channels)
        images = raw.astype(np.float32) * np.float32(spec.input_scale) + np.float32(spec.input_offset)
    log(f"Verifying the gradient graph against tf.GradientTape ({len(images)} images) ...")
    verify_gradients(forward, model, images.astype(np.float32), tolerance, log)
    payload = model.SerializeToString()
    write_atomically(target, payload)
    log(f"Wrote {target} ({len(payload) / 1e6:.1f} MB)")
    return target


# -- without TensorFlow: finite differences ------------------------------------------------------------
def _scalar_model(forward, tensor: str):
    """The forward graph with ``tensor`` (the value a target's seed weighs) as its one output."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(forward)
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return model


def check_gradients_numerically(
    forward, gradient_model, images: np.ndarray, tolerance: float = 1e-2, log: Callable[[str], None] = print
) -> dict[str, float]:
    """Compare ONNX Runtime's input gradients with central differences of the forward graph.

    For each target checked (each class logit, and the channel mean of the first and the
    deepest convolution), the derivative along two directions (the gradient itself, and
    a random one) is compared with ``(f(x + h v) - f(x - h v)) / 2h``, the error relative
    to ``|gradient| |v|``. The step is small against the input's range, so few ReLU or
    max-pool kinks lie within it, and the check needs no other framework. Raises
    :class:`ConversionError` beyond ``tolerance``; returns the largest error per target.
    """

    from featapp.engine.metadata import METADATA_KEY, ModelSpec

    meta = {p.key: p.value for p in gradient_model.metadata_props}
    spec = ModelSpec.from_json(meta[METADATA_KEY])
    info = json.loads(meta[GRADIENTS_KEY])
    layers = {layer.name: layer for layer in spec.layers}
    names_in_order = [layer.name for layer in spec.layers]
    convs = [
        t
        for t in info["targets"]
        if not t["logit"] and not t["preactivation"] and layers[t["layer"]].kind.endswith("Conv2D")
    ]
    chosen = [t for t in info["targets"] if t["logit"]] + ([convs[0], convs[-1]] if convs else [])
    rng = np.random.default_rng(0)
    x = images.astype(np.float64)
    reach = max(float(np.abs(x).max()), 1e-3)
    errors: dict[str, float] = {}
    for target in {t["name"]: t for t in chosen}.values():
        layer = layers[target["layer"]]
        tensor = graph_producer_input(forward, layer.name) if target["logit"] else layer.name
        forward_session = cpu_session(_scalar_model(forward, tensor).SerializeToString())
        pruned = target_graph(gradient_model, target["name"], names_in_order)
        session = cpu_session(pruned.SerializeToString())
        base = forward_session.run(None, {spec.input_name: images.astype(np.float32)})[0]
        if target["logit"]:
            units = layer.channels
            seed = np.ones_like(base) if units == 1 else np.eye(units, dtype=np.float32)[base.argmax(axis=1)]
            label = f"logit of {layer.name}"
        else:
            channel = int(base.mean(axis=(0, 2, 3)).argmax())
            seed = np.zeros_like(base)
            seed[:, channel] = 1.0 / (base.shape[2] * base.shape[3])
            label = f"{layer.name} channel {channel + 1} mean"
        gradient = session.run([target["gradients"]["input"]], {spec.input_name: images, target["seed"]: seed})[0]
        gradient = gradient.astype(np.float64)

        def value(inputs: np.ndarray, session=forward_session, seed=seed) -> float:
            out = session.run(None, {spec.input_name: inputs.astype(np.float32)})[0]
            return float((out.astype(np.float64) * seed).sum())

        worst = 0.0
        for direction in (gradient, rng.standard_normal(x.shape)):
            norm = float(np.abs(direction).max())
            if norm == 0:
                continue
            v = direction / norm
            step = 1e-4 * reach
            numeric = (value(x + step * v) - value(x - step * v)) / (2 * step)
            analytic = float((gradient * v).sum())
            scale = max(float(np.linalg.norm(gradient) * np.linalg.norm(v)), 1e-12)
            worst = max(worst, abs(numeric - analytic) / scale)
        errors[label] = worst
        log(f"  d({label}) / d(input) against finite differences: error {worst:.1e} of |gradient| |direction|")
        if not worst <= tolerance:
            raise ConversionError(
                f"the gradient of {label} disagrees with finite differences of the forward graph (error {worst:.2e}, "
                f"tolerance {tolerance:.0e}); the gradient model was not written."
            )
    return errors


def write_gradient_model_checked_numerically(
    forward_path: str | Path, tolerance: float = 1e-2, log: Callable[[str], None] = print
) -> Path | None:
    """:func:`write_gradient_model` for a model converted from an ONNX file, with no
    TensorFlow: checked by :func:`check_gradients_numerically` instead of the tape."""

    from convert.common import verification_images, write_atomically, written_without_gradients
    from featapp.engine.model import graph_input

    forward_path = Path(forward_path)
    forward, spec, target, model = _gradient_model_of(forward_path, log)
    if model is None:
        return None
    # The flat grey test image is left out: its max-pool windows are all ties, where a
    # gradient is right but a finite difference along a random direction picks another winner.
    raw = verification_images(spec.input.height, spec.input.width, spec.input.channels)[:3]
    log(f"Checking the gradient graph against finite differences ({len(raw)} images) ...")
    try:
        check_gradients_numerically(forward, model, graph_input(spec, raw), tolerance, log)
    except ConversionError as err:
        target.unlink(missing_ok=True)
        raise ConversionError(written_without_gradients(forward_path, err)) from err
    payload = model.SerializeToString()
    write_atomically(target, payload)
    log(f"Wrote {target} ({len(payload) / 1e6:.1f} MB)")
    return target


def converted_from_onnx(forward_path: str | Path) -> bool:
    """Whether a featapp model was converted from an ONNX file (``convert.onnx_source``), whose
    gradient model is checked by finite differences rather than by a TensorFlow replay."""
    import onnx

    from featapp.engine.metadata import METADATA_KEY, ModelSpec

    model = onnx.load(str(forward_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in meta:
        raise ConversionError(f"'{Path(forward_path).name}' is not a featapp model (no '{METADATA_KEY}' metadata).")
    return "source_layout" in ModelSpec.from_json(meta[METADATA_KEY]).extra


def _gradient_model_of(forward_path: Path, log: Callable[[str], None]):
    """The forward file's proto, spec, gradient file's path and gradient model; ``None`` for
    the model when the graph has a layer the backward builder cannot differentiate (then any
    old gradient file is removed, so it cannot be taken for this model's)."""
    import onnx

    from featapp.engine.metadata import METADATA_KEY, ModelSpec

    data = forward_path.read_bytes()
    forward = onnx.load_from_string(data)
    meta = {p.key: p.value for p in forward.metadata_props}
    if METADATA_KEY not in meta:
        raise ConversionError(f"'{forward_path.name}' is not a featapp model (no '{METADATA_KEY}' metadata).")
    spec = ModelSpec.from_json(meta[METADATA_KEY])
    target = gradient_path(forward_path)
    try:
        model = build_gradient_model(forward, meta[METADATA_KEY], hashlib.sha256(data).hexdigest())
    except UnsupportedLayer as err:
        target.unlink(missing_ok=True)
        log(f"No gradient model: {err}. Saliency, Grad-CAM and feature visualisation will be unavailable.")
        model = None
    return forward, spec, target, model
