"""The SyncTalk_2D networks (numerics §5) as ONNX graphs, built from numpy weights.

One description of each architecture serves twice: walked without weights
it yields the checkpoint's key -> shape table (:func:`state_dict_spec`);
walked with a state dict it checks every shape, folds each BatchNorm into
the convolution before it and emits ONNX nodes (:func:`build_unet`,
:func:`build_audio_encoder`). No torch is involved.

Graphs have a dynamic batch dimension and fixed names: the U-Net takes
``image`` [N, 6, 320, 320] and ``audio`` [N, C, H, W] and gives ``output``
[N, 3, 320, 320]; the audio encoder takes ``mel`` [N, 1, 80, 16] and gives
``embedding`` [N, 512].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ModelError
from ..runtime import cpu_session
from ..shapes import AUDIO_SHAPES, EMBEDDING, IMAGE_SHAPE, MEL_SHAPE, PRED_SHAPE

__all__ = [
    "OPSET",
    "BN_EPS",
    "AUDIO_SHAPES",
    "ModelError",
    "state_dict_spec",
    "residual_blocks",
    "build_unet",
    "build_audio_encoder",
    "build",
    "batch_statistics",
]

OPSET = 17
BN_EPS = 1e-5  # torch.nn.BatchNorm2d default
OUTPUT_SHAPE = PRED_SHAPE
KINDS = ("unet", "audio_encoder")
_CH = (32, 64, 128, 256, 512)


class _Walker:
    """Walks a network description, recording its parameters and, when it
    holds weights, emitting the ONNX graph.

    Invariant: parameters are recorded in the order the reference PyTorch
    modules register them within each block.
    """

    def __init__(self, state: Mapping[str, np.ndarray] | None, batch_stats: bool = False):
        self.state = state
        # batch_stats: BatchNorm normalises with the batch's own statistics
        # (training-mode BN) and exposes them as graph outputs; used to set
        # running statistics from data (see random_weights).
        self.batch_stats = batch_stats
        self.stat_outputs: list[tuple[str, str, str, int]] = []  # (bn prefix, mean, var, channels)
        self.spec: dict[str, tuple[int, ...]] = {}
        self.residual_blocks: list[str] = []  # prefixes of blocks computing x + f(x)
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    # -- parameters -----------------------------------------------------
    def param(self, key: str, shape: Sequence[int]) -> np.ndarray | None:
        shape = tuple(int(s) for s in shape)
        self.spec[key] = shape
        if self.state is None:
            return None
        if key not in self.state:
            raise ModelError(f"checkpoint is missing {key!r} (expected shape {list(shape)})")
        value = np.asarray(self.state[key])
        if value.shape != shape:
            raise ModelError(f"checkpoint key {key!r} has shape {list(value.shape)}, expected {list(shape)}")
        return value

    def batchnorm(self, prefix: str, channels: int):
        names = ("weight", "bias", "running_mean", "running_var")
        values = [self.param(f"{prefix}.{n}", (channels,)) for n in names]
        self.spec[f"{prefix}.num_batches_tracked"] = ()  # recorded by torch, unused in inference
        return None if self.state is None else values

    # -- graph ----------------------------------------------------------
    @property
    def emitting(self) -> bool:
        return self.state is not None

    def _name(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def _const(self, base: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._name(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], **attrs) -> str:
        from onnx import helper

        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def conv_bn(
        self,
        x: str,
        conv: str,
        bn: str | None,
        cin: int,
        cout: int,
        kernel: int,
        stride=1,
        pad: int = 0,
        groups: int = 1,
        bias: bool = False,
    ) -> str:
        """Conv2d (+ BatchNorm2d folded into it: w * g / sqrt(v + eps),
        (b - m) * g / sqrt(v + eps) + beta, computed in float64)."""
        w = self.param(f"{conv}.weight", (cout, cin // groups, kernel, kernel))
        b = self.param(f"{conv}.bias", (cout,)) if bias else None
        stats = self.batchnorm(bn, cout) if bn is not None else None
        if not self.emitting:
            return x
        assert w is not None, "weights exist while emitting"
        w = w.astype(np.float64)
        b = np.zeros(cout) if b is None else b.astype(np.float64)
        strides = list(stride) if isinstance(stride, tuple) else [stride, stride]
        conv_attrs = dict(kernel_shape=[kernel, kernel], strides=strides, pads=[pad] * 4, group=groups)
        if stats is not None and self.batch_stats:
            assert bn is not None
            y = self.node(
                "Conv",
                [x, self._const(f"{conv}.w", w.astype(np.float32)), self._const(f"{conv}.b", b.astype(np.float32))],
                **conv_attrs,
            )
            return self._batch_norm(y, bn, stats[0], stats[1])
        if stats is not None:
            gamma, beta, mean, var = (s.astype(np.float64) for s in stats)
            scale = gamma / np.sqrt(var + BN_EPS)
            w = w * scale[:, None, None, None]
            b = (b - mean) * scale + beta
        return self.node(
            "Conv",
            [x, self._const(f"{conv}.w", w.astype(np.float32)), self._const(f"{conv}.b", b.astype(np.float32))],
            **conv_attrs,
        )

    def _batch_norm(self, y: str, bn: str, gamma: np.ndarray, beta: np.ndarray) -> str:
        """(y - mean) / sqrt(var + eps) * gamma + beta over the batch's N, H, W."""
        mean = self.node("ReduceMean", [y], axes=[0, 2, 3], keepdims=1)
        d = self.node("Sub", [y, mean])
        var = self.node("ReduceMean", [self.node("Mul", [d, d])], axes=[0, 2, 3], keepdims=1)
        eps = self._const("eps", np.array(BN_EPS, np.float32))
        norm = self.node("Div", [d, self.node("Sqrt", [self.node("Add", [var, eps])])])
        self.stat_outputs.append((bn, mean, var, len(gamma)))
        g = self._const(f"{bn}.g", gamma.astype(np.float32).reshape(1, -1, 1, 1))
        b = self._const(f"{bn}.b", beta.astype(np.float32).reshape(1, -1, 1, 1))
        return self.node("Add", [self.node("Mul", [norm, g]), b])

    def relu(self, x: str) -> str:
        return self.node("Relu", [x]) if self.emitting else x

    def add(self, a: str, b: str) -> str:
        return self.node("Add", [a, b]) if self.emitting else a

    def concat(self, a: str, b: str) -> str:
        return self.node("Concat", [a, b], axis=1) if self.emitting else a

    def upsample2x(self, x: str) -> str:
        """Bilinear x2 with align_corners=True (torch nn.Upsample)."""
        if not self.emitting:
            return x
        scales = self._const("scales", np.array([1.0, 1.0, 2.0, 2.0], np.float32))
        return self.node("Resize", [x, "", scales], mode="linear", coordinate_transformation_mode="align_corners")


# --- building blocks (names as in the reference modules) -------------------


def _inverted_residual(g: _Walker, x: str, prefix: str, inp: int, oup: int, stride=1, residual=False) -> str:
    """1x1 expand (x2) + BN + ReLU, 3x3 depthwise + BN + ReLU, 1x1 project + BN (+ x)."""
    hid = inp * 2
    if residual:
        g.residual_blocks.append(prefix)
    y = g.relu(g.conv_bn(x, f"{prefix}.conv.0", f"{prefix}.conv.1", inp, hid, 1))
    y = g.relu(g.conv_bn(y, f"{prefix}.conv.3", f"{prefix}.conv.4", hid, hid, 3, stride=stride, pad=1, groups=hid))
    y = g.conv_bn(y, f"{prefix}.conv.6", f"{prefix}.conv.7", hid, oup, 1)
    return g.add(x, y) if residual else y


def _double_conv_dw(g: _Walker, x: str, prefix: str, inp: int, oup: int, stride: int) -> str:
    y = _inverted_residual(g, x, f"{prefix}.double_conv.0", inp, oup, stride)
    return _inverted_residual(g, y, f"{prefix}.double_conv.1", oup, oup, 1, residual=True)


def _audio_branch(g: _Walker, x: str, mode: str) -> str:
    p = "audio_model"
    if mode == "wenet":
        x = _inverted_residual(g, x, f"{p}.conv1", 256, 256, residual=True)
        x = _inverted_residual(g, x, f"{p}.conv2", 256, 256, residual=True)
        x = g.relu(g.conv_bn(x, f"{p}.conv3", f"{p}.bn3", 256, 256, 3, stride=(1, 2), pad=1, bias=True))
    else:
        x = _inverted_residual(g, x, f"{p}.conv1", 32, 64)
        x = _inverted_residual(g, x, f"{p}.conv2", 64, 128)
        stride = 2 if mode == "hubert" else 1
        x = g.relu(g.conv_bn(x, f"{p}.conv3", f"{p}.bn3", 128, 256, 3, stride=stride, pad=1, bias=True))
    x = _inverted_residual(g, x, f"{p}.conv4", 256, 256, residual=True)
    x = g.relu(g.conv_bn(x, f"{p}.conv5", f"{p}.bn5", 256, 512, 3, stride=2, pad=3, bias=True))
    x = _inverted_residual(g, x, f"{p}.conv6", 512, 512, residual=True)
    return _inverted_residual(g, x, f"{p}.conv7", 512, 512, residual=True)


def _unet(g: _Walker, image: str, audio: str, mode: str) -> str:
    c = _CH
    a = _audio_branch(g, audio, mode)
    x1 = _inverted_residual(g, image, "inc.inconv.0", 6, c[0])
    skips = [x1]
    downs = [(c[0], c[0]), (c[0], c[1]), (c[1], c[2]), (c[2], c[3]), (c[3], c[4])]
    for i, (cin, cout) in enumerate(downs, start=1):
        skips.append(_double_conv_dw(g, skips[-1], f"down{i}.maxpool_conv.0", cin, cout, 2))
    x = g.concat(skips.pop(), a)  # [down5 (512), audio (512)]
    x = _double_conv_dw(g, x, "fuse_conv.0", c[4] * 2, c[4], 1)
    x = _double_conv_dw(g, x, "fuse_conv.1", c[4], c[3], 1)
    ups = [(c[4], c[3] // 2), (c[3], c[2] // 2), (c[2], c[1] // 2), (c[1], c[0]), (c[1], c[0] // 2)]
    for i, (cin, cout) in enumerate(ups, start=1):
        # Sizes double exactly (10 -> 320), so the reference's pad to the skip is a no-op.
        x = _double_conv_dw(g, g.concat(g.upsample2x(x), skips.pop()), f"up{i}.conv", cin, cout, 1)
    x = g.conv_bn(x, "outc.conv", None, c[0] // 2, 3, 1, bias=True)
    return g.node("Sigmoid", [x]) if g.emitting else x


_ENCODER_LAYERS = [  # cin, cout, kernel, stride, pad, residual
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
]


def _audio_encoder(g: _Walker, mel: str) -> str:
    x = mel
    for i, (cin, cout, k, stride, pad, residual) in enumerate(_ENCODER_LAYERS):
        if residual:
            g.residual_blocks.append(f"{i}.conv_block")
        y = g.conv_bn(x, f"{i}.conv_block.0", f"{i}.conv_block.1", cin, cout, k, stride=stride, pad=pad, bias=True)
        x = g.relu(g.add(y, x) if residual else y)
    return g.node("Flatten", [x], axis=1) if g.emitting else x  # [N, 512, 1, 1] -> [N, 512]


# --- public -----------------------------------------------------------------


def _check_kind_mode(kind: str, mode: str) -> None:
    if kind not in KINDS:
        raise ModelError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "unet" and mode not in AUDIO_SHAPES:
        raise ModelError(f"unknown mode {mode!r}; expected one of {', '.join(AUDIO_SHAPES)}")


def _walk_without_weights(kind: str, mode: str) -> _Walker:
    _check_kind_mode(kind, mode)
    g = _Walker(None)
    if kind == "unet":
        _unet(g, "image", "audio", mode)
    else:
        _audio_encoder(g, "mel")
    return g


def residual_blocks(kind: str, *, mode: str = "ave") -> list[str]:
    """Key prefixes of the blocks that add their input back (x + f(x))."""
    return _walk_without_weights(kind, mode).residual_blocks


def state_dict_spec(kind: str, *, mode: str = "ave") -> dict[str, tuple[int, ...]]:
    """Every checkpoint key of a network and its shape.

    Parameters
    ----------
    kind : {"unet", "audio_encoder"}
    mode : {"ave", "hubert", "wenet"}, keyword-only
        U-Net audio branch (ignored for the encoder).

    Returns
    -------
    dict
        key -> shape, in the reference modules' order within each block;
        ``num_batches_tracked`` entries have shape ``()``. The encoder's keys
        carry no ``audio_encoder.`` prefix (the standalone checkpoint form).
    """
    return _walk_without_weights(kind, mode).spec


def _model(g: _Walker, inputs, output: str, out_shape, name: str):
    import onnx
    from onnx import TensorProto, helper

    g.nodes[-1].output[0] = output  # the last node produces the graph output
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", *out_shape])]
    for _, mean, var, channels in g.stat_outputs:
        outputs += [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, channels, 1, 1]) for t in (mean, var)]
    graph = helper.make_graph(
        g.nodes,
        name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *s]) for n, s in inputs],
        outputs,
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="synctalk_fast")
    model.ir_version = min(model.ir_version, 9)  # readable by older ONNX Runtime releases too
    onnx.checker.check_model(model)
    return model


def build_unet(state: Mapping[str, np.ndarray], *, mode: str = "ave"):
    """The U-Net as an ``onnx.ModelProto`` (inputs ``image``, ``audio``; output ``output``).

    Parameters
    ----------
    state : mapping of str to np.ndarray
        A U-Net state dict with the reference's keys (see
        :func:`state_dict_spec`); ``num_batches_tracked`` entries are optional.
    mode : {"ave", "hubert", "wenet"}, keyword-only

    Raises
    ------
    ModelError
        A key is missing or has the wrong shape (the message names both).
    """
    _check_kind_mode("unet", mode)
    g = _Walker(state)
    _unet(g, "image", "audio", mode)
    return _model(
        g, [("image", IMAGE_SHAPE), ("audio", AUDIO_SHAPES[mode])], "output", OUTPUT_SHAPE, f"synctalk_unet_{mode}"
    )


def build_audio_encoder(state: Mapping[str, np.ndarray]):
    """The audio encoder as an ``onnx.ModelProto`` (input ``mel``; output ``embedding``).

    ``state`` has the standalone encoder's keys (``0.conv_block.0.weight``,
    ...); see :func:`build_unet` for the errors.
    """
    g = _Walker(state)
    _audio_encoder(g, "mel")
    return _model(g, [("mel", MEL_SHAPE)], "embedding", (EMBEDDING,), "synctalk_audio_encoder")


def batch_statistics(
    state: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray], *, kind: str, mode: str = "ave"
):
    """Per-BatchNorm mean and variance of its input over a batch, every BN
    normalising with the batch's own statistics (training-mode BatchNorm).

    Returns ``{bn prefix: (mean [C], var [C])}`` as float32 (biased
    variance). Setting these as running statistics makes the network behave
    on such data as a trained one does: every BatchNorm sees normalised
    activations. Runs one ONNX Runtime pass on CPU.
    """
    _check_kind_mode(kind, mode)
    g = _Walker(state, batch_stats=True)
    if kind == "unet":
        _unet(g, "image", "audio", mode)
        model = _model(g, [("image", IMAGE_SHAPE), ("audio", AUDIO_SHAPES[mode])], "output", OUTPUT_SHAPE, "stats")
    else:
        _audio_encoder(g, "mel")
        model = _model(g, [("mel", MEL_SHAPE)], "embedding", (EMBEDDING,), "stats")
    values = cpu_session(model.SerializeToString()).run(dict(inputs))[1:]
    return {bn: (values[2 * i].reshape(-1), values[2 * i + 1].reshape(-1)) for i, (bn, *_) in enumerate(g.stat_outputs)}


def build(state: Mapping[str, np.ndarray], *, kind: str, mode: str = "ave"):
    """:func:`build_unet` or :func:`build_audio_encoder` by ``kind``."""
    _check_kind_mode(kind, mode)
    return build_unet(state, mode=mode) if kind == "unet" else build_audio_encoder(state)
