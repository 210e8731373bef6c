"""Reading an exported ONNX graph into card specs: inputs, outputs, ZipMap unwrapping.

Exporters' defaults are accepted as they are: skl2onnx's ZipMap output (a sequence of maps) is
replaced by the probability tensor it wraps, under the ZipMap's output name; nothing else of the
graph is rewritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.core.card import BATCH, InputDType, InputSpec
from pipelines.errors import ModelCardError, flat_message

if TYPE_CHECKING:
    import onnx

#: ONNX TensorProto element types a graph input may have, as card dtypes.
_INPUT_DTYPES: dict[int, InputDType] = {
    1: "float32",
    11: "float64",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
}
#: Ops the static int8 quantizer rewrites; a graph without any stays fp32 only.
QUANTIZABLE_OP_TYPES = ("MatMul", "Gemm")


def load_graph(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file.

    Raises:
        ModelCardError: the file is missing or is not a valid ONNX model.
    """
    import onnx

    if not path.is_file():
        raise ModelCardError(f"ONNX file {path} does not exist; pass the exported model with --onnx")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        detail = flat_message(exc, limit=200)
        raise ModelCardError(f"{path} does not load as an ONNX model ({detail}); export it again") from exc
    return model


def unwrap_zipmap(model: onnx.ModelProto) -> bool:
    """Replace every ZipMap feeding a graph output by an Identity of its probability tensor.

    The output keeps its name and becomes a float tensor ``[N, C]``. Returns True if the graph changed.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    outputs = {output.name: index for index, output in enumerate(graph.output)}
    changed = False
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "ZipMap" or node.output[0] not in outputs:
            continue
        classes = next(
            (len(a.ints) or len(a.strings) for a in node.attribute if a.name.startswith("classlabels")), None
        )
        name = node.output[0]
        graph.node.remove(node)
        graph.node.insert(
            index, helper.make_node("Identity", [node.input[0]], [name], name=f"{name}_unzipped")
        )
        position = outputs[name]
        graph.output.remove(graph.output[position])
        graph.output.insert(position, helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, classes]))
        changed = True
    return changed


def graph_inputs(model: onnx.ModelProto, columns: dict[str, list[str]]) -> list[InputSpec]:
    """One card input per graph input: its dtype, shape and how it is fed.

    Args:
        model: The graph.
        columns: ``--columns``: input name -> the columns stacked into it, in order.

    Raises:
        ModelCardError: an unsupported element type or rank, a dynamic non-batch dimension, or
            ``--columns`` naming no input or the wrong number of columns.
    """
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    names = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        names.append(value.name)
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor.elem_type not in _INPUT_DTYPES:
            raise ModelCardError(
                f"graph input '{value.name}' is not a tensor of float, double, int32, int64, string or "
                "bool; export the model with such inputs"
            )
        dims = tensor.shape.dim
        if len(dims) not in (1, 2):
            raise ModelCardError(
                f"graph input '{value.name}' has rank {len(dims)}; predcache feeds [N], [N, 1] or [N, K] "
                "inputs"
            )
        shape: list[int | str] = [BATCH]
        if len(dims) == 2:
            if not dims[1].HasField("dim_value") or dims[1].dim_value < 1:
                raise ModelCardError(
                    f"graph input '{value.name}' has a dynamic second dimension "
                    f"('{dims[1].dim_param or '?'}'); only the batch dimension may be dynamic, export it "
                    "with a fixed width"
                )
            shape.append(int(dims[1].dim_value))
        stacked = columns.get(value.name)
        width = int(shape[1]) if len(shape) == 2 else 1
        if stacked is not None and len(stacked) != width:
            raise ModelCardError(
                f"--columns {value.name}= names {len(stacked)} column(s) but the input is {width} wide"
            )
        specs.append(
            InputSpec(name=value.name, dtype=_INPUT_DTYPES[tensor.elem_type], shape=shape, columns=stacked)
        )
    unknown = sorted(set(columns) - set(names))
    if unknown:
        raise ModelCardError(
            f"--columns names {', '.join(unknown)}, not an input of the graph ({', '.join(names)})"
        )
    return specs


def check_output_types(model: onnx.ModelProto) -> None:
    """Raise ModelCardError for an output that is not a tensor of rank <= 2 (after ZipMap unwrapping)."""
    for value in model.graph.output:
        if not value.type.HasField("tensor_type"):
            raise ModelCardError(
                f"graph output '{value.name}' is a sequence or map that is not a ZipMap; predcache stores "
                "tensor outputs only, export it as a tensor"
            )
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and len(tensor.shape.dim) > 2:
            raise ModelCardError(
                f"graph output '{value.name}' has rank {len(tensor.shape.dim)}; predcache stores [N], "
                "[N, 1] and [N, K] outputs"
            )


def quantizable(model: onnx.ModelProto) -> bool:
    """True when the graph has an op the int8 quantizer rewrites (tree ensembles have none)."""
    return any(node.op_type in QUANTIZABLE_OP_TYPES for node in model.graph.node)


def opset(model: onnx.ModelProto) -> int | None:
    return next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), None)
