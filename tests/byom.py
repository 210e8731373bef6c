"""Models as their ecosystems export them by default, and rows to calibrate and score them with.

Used by the bring-your-own-model tests (tests/modeling, tests/engines, tests/api). Every model is
built here with the real exporter: skl2onnx (ZipMap classifier, regressor), onnxmltools (LightGBM),
and ``onnx.helper`` for a TopK recommender graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = ["f0", "f1", "f2", "f3"]
USER_WIDTH = 8
ITEMS = 50
TOP_K = 10


def rows(n: int, *, seed: int = 0, start: int = 0) -> pa.Table:
    """``n`` rows: string key ``id``, int64 key ``uid``, four float features as columns, the same
    four as a variable-length list column ``input``, a fixed-size list ``user`` of 8 float32, and
    true labels ``y`` (0/1) and ``target`` (float)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    user = rng.normal(size=(n, USER_WIDTH)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    target = 2.0 * x[:, 0] - x[:, 3] + 0.1 * rng.normal(size=n)
    ids = np.arange(start, start + n)
    return pa.table(
        {
            "id": pa.array([f"k{i:07d}" for i in ids]),
            "uid": pa.array(ids * 7 + 1, pa.int64()),
            **{name: pa.array(x[:, i]) for i, name in enumerate(FEATURES)},
            "input": pa.array(list(x), pa.list_(pa.float64())),
            "user": pa.FixedSizeListArray.from_arrays(pa.array(user.reshape(-1)), USER_WIDTH),
            "y": pa.array(y),
            "target": pa.array(target),
        }
    )


def write_rows(path: Path, n: int, *, seed: int = 0, start: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows(n, seed=seed, start=start), path)
    return path


def _x(table: pa.Table) -> np.ndarray:
    return np.column_stack([table[name].to_numpy() for name in FEATURES]).astype(np.float32)


def sklearn_classifier(train: pa.Table) -> onnx.ModelProto:
    """MLPClassifier through skl2onnx with its defaults: ``output_label`` [N] + ZipMap probabilities."""
    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, random_state=0)
        model.fit(_x(train), train["y"].to_numpy())
    return to_onnx(model, _x(train)[:1], target_opset={"": 17, "ai.onnx.ml": 3})


def sklearn_regressor(train: pa.Table) -> onnx.ModelProto:
    """LinearRegression through skl2onnx: input ``input`` [N, 4], output ``variable`` [N, 1]."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(_x(train), train["target"].to_numpy())
    return convert_sklearn(
        model, initial_types=[("input", FloatTensorType([None, 4]))], target_opset={"": 17, "ai.onnx.ml": 3}
    )


def lightgbm_classifier(train: pa.Table) -> onnx.ModelProto:
    """LGBMClassifier through onnxmltools: ``label`` [N] + ``probabilities`` (ZipMap)."""
    import lightgbm
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, random_state=0, verbose=-1)
    model.fit(_x(train), train["y"].to_numpy())
    return convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, 4]))], target_opset=15)


def topk_recommender(train: pa.Table) -> onnx.ModelProto:
    """user [N, 8] -> affinity = user @ items -> TopK: ``scores`` [N, 10] float, ``items`` [N, 10] int64."""
    from onnx import TensorProto, helper, numpy_helper

    items = np.random.default_rng(1).normal(size=(USER_WIDTH, ITEMS)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["user", "item_factors"], ["affinity"]),
            helper.make_node("TopK", ["affinity", "k"], ["scores", "items"], axis=1),
        ],
        "topk_recommender",
        [helper.make_tensor_value_info("user", TensorProto.FLOAT, [None, USER_WIDTH])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, TOP_K]),
            helper.make_tensor_value_info("items", TensorProto.INT64, [None, TOP_K]),
        ],
        [numpy_helper.from_array(items, "item_factors"), numpy_helper.from_array(np.array([TOP_K]), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@dataclass(frozen=True)
class Shape:
    """One model shape of the acceptance tests and how it is imported."""

    name: str
    build: Callable[[pa.Table], onnx.ModelProto]
    key: str
    columns: tuple[str, ...] = ()
    label_column: str | None = None

    def import_args(self, onnx_path: Path, calibration: Path) -> list[str]:
        args = ["models", "import", self.name, "--onnx", str(onnx_path), "--key", self.key]
        args += ["--calibration", str(calibration)]
        for item in self.columns:
            args += ["--columns", item]
        if self.label_column:
            args += ["--label-column", self.label_column]
        return args


SHAPES = [
    Shape("sk_classifier", sklearn_classifier, "id", ("X=f0,f1,f2,f3",), "y"),
    Shape("sk_regressor", sklearn_regressor, "id", (), "target"),
    Shape("lgbm_classifier", lightgbm_classifier, "uid", (), "y"),
    Shape("recommender", topk_recommender, "id"),
]


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def direct_outputs(version_dir: Path, card: Any, table: pa.Table) -> dict[str, dict[str, Any]]:
    """Reference: onnxruntime on the card's default signature file, all valid rows in one call.

    Returns key -> output name -> value as numpy scalars / arrays (no predcache scoring code).
    """
    import onnxruntime as ort

    from pipelines.core.model import to_feed
    from pipelines.core.validate import validate

    good = validate(table, card).good
    # One intra-op thread, as predcache scores by default: with more, onnxruntime's tree ensembles
    # split the trees over threads and the float sums (last bit) depend on the batch size.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(version_dir / card.signatures["default"]), options, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in card.outputs]
    results = dict(zip(names, session.run(names, to_feed(card, good)), strict=True))
    keys = good[card.key].to_pylist()
    out: dict[str, dict[str, Any]] = {}
    for i, key in enumerate(keys):
        out[key] = {}
        for spec in card.outputs:
            value = np.asarray(results[spec.name])
            out[key][spec.name] = value[i].reshape(-1) if spec.width is not None else value.reshape(-1)[i]
    return out


def equal_to_stored(expected: dict[str, Any], stored: dict[str, Any], card: Any) -> bool:
    """Stored JSON outputs equal onnxruntime's bit for bit (floats compared after casting to the dtype)."""
    if set(stored) != set(expected):
        return False
    for spec in card.outputs:
        want = np.asarray(expected[spec.name])
        got = np.asarray(stored[spec.name], dtype=want.dtype if spec.dtype != "string" else object)
        if want.shape != got.shape or want.tobytes() != got.tobytes():
            return False
    return True


def import_all(models_dir: Path, work: Path, *, calibration_rows: int = 400) -> dict[str, Path]:
    """Build every shape with its exporter and import it into ``models_dir``; name -> version folder."""
    from pipelines.modeling.importer import ImportRequest, import_model, parse_columns

    calibration = write_rows(work / "calibration.parquet", calibration_rows, seed=3)
    train = rows(1500, seed=5)
    out = {}
    for shape in SHAPES:
        request = ImportRequest(
            name=shape.name,
            onnx=save(shape.build(train), work / f"{shape.name}.onnx"),
            key=shape.key,
            calibration=calibration,
            columns=parse_columns(list(shape.columns)),
            label_column=shape.label_column,
            timing_repeats=2,
        )
        out[shape.name] = import_model(models_dir, request)[1]
    return out


def scoring_input(folder: Path, n: int = 500) -> Path:
    """Rows to score in two files, with a few bad ones (null feature, short list) that become rejects."""
    table = rows(n, seed=11, start=10_000)
    f1 = table["f1"].to_pylist()
    lists = table["input"].to_pylist()
    for i in (3, 77):
        f1[i] = None
        lists[i] = lists[i][:3]
    table = table.set_column(table.schema.get_field_index("f1"), "f1", pa.array(f1, pa.float64()))
    table = table.set_column(
        table.schema.get_field_index("input"), "input", pa.array(lists, pa.list_(pa.float64()))
    )
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.slice(0, n // 2), folder / "part-0.parquet")
    pq.write_table(table.slice(n // 2), folder / "part-1.parquet")
    return folder


def stored_outputs(url: str, run_id: int) -> dict[str, tuple[float, int | None, str]]:
    """key -> (score as float4 text, label, outputs jsonb text) of one run's rows."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows_ = conn.execute(
            "SELECT key, score::text, label, outputs::text FROM predictions WHERE run_id = %s", (run_id,)
        ).fetchall()
    return {key: (score, label, outputs) for key, score, label, outputs in rows_}
