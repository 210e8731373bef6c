"""Export a scikit-learn binary classifier to ONNX in the shape every predcache model has.

One graph input per column, each of shape [N, 1], named like the column; two outputs: ``score``
(float32 [N], the probability of class 1) and ``label`` (int64 [N], the predicted class). The
featurization (encoders, scalers) is part of the graph, so training and batch scoring cannot disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.core.card import InputSpec
from pipelines.errors import ModelCardError

if TYPE_CHECKING:
    import onnx

#: Opsets the graphs are exported with (skl2onnx may lower the default domain to what it needs).
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
GRAPH_NAME = "predcache_binary_classifier"
SCORE_OUTPUT = "score"
LABEL_OUTPUT = "label"
_PROBABILITIES = "probabilities"


def export_binary_classifier(
    pipeline: Any,
    inputs: list[InputSpec],
    *,
    target_opset: dict[str, int] | None = None,
    graph_name: str = GRAPH_NAME,
) -> onnx.ModelProto:
    """Convert a fitted sklearn classifier (or Pipeline ending in one) trained on labels 0 and 1.

    Args:
        pipeline: The fitted estimator; it must take a DataFrame with the ``inputs`` columns.
        inputs: The graph inputs, in card order.
        target_opset: Opset per domain; defaults to ``TARGET_OPSET``.
        graph_name: The graph's name (skl2onnx would pick a random one and break reproducible builds).

    Returns:
        The ONNX model with outputs ``score`` and ``label`` only.

    Raises:
        ModelCardError: the classifier was not trained on exactly the classes 0 and 1.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    tensor_types = {"string": StringTensorType, "int64": Int64TensorType, "float32": FloatTensorType}
    classifier = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    classes = np.asarray(getattr(classifier, "classes_", []))
    if classes.tolist() != [0, 1]:
        raise ModelCardError(
            f"a predcache model scores P(class 1) of a binary classifier; this one has classes "
            f"{classes.tolist()}, train it on integer labels 0 and 1"
        )
    model = convert_sklearn(
        pipeline,
        initial_types=[(spec.name, tensor_types[spec.dtype]([None, 1])) for spec in inputs],
        options={id(classifier): {"zipmap": False}},
        target_opset=target_opset or TARGET_OPSET,
        name=graph_name,
    )
    return with_score_output(model)


def with_score_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace a converted classifier's outputs (label, probabilities [N, 2]) by ``score`` and ``label``.

    ``score`` is column 1 of the probabilities (a Gather, so it is [N], not [N, 1]).

    Raises:
        ModelCardError: the graph lacks the ``label`` or ``probabilities`` output.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    outputs = {output.name: output for output in graph.output}
    if LABEL_OUTPUT not in outputs or _PROBABILITIES not in outputs:
        raise ModelCardError(
            f"the converted graph has outputs {sorted(outputs)}, expected '{LABEL_OUTPUT}' and "
            f"'{_PROBABILITIES}'; convert the classifier with the option zipmap=False"
        )
    label = outputs[LABEL_OUTPUT]
    graph.initializer.append(numpy_helper.from_array(np.array(1, dtype=np.int64), "score_class_index"))
    graph.node.append(
        helper.make_node(
            "Gather", [_PROBABILITIES, "score_class_index"], [SCORE_OUTPUT], axis=1, name="score"
        )
    )
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, [None]), label])
    onnx.checker.check_model(model)
    return model


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the graph imports."""
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
