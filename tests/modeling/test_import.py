"""`predcache models import`: every exporter's default shape imports; every bad input is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper

from pipelines.cli import main
from pipelines.core.card import load_card
from pipelines.core.model import load_model
from pipelines.core.validate import validate
from tests import byom


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("byom")
    byom.write_rows(folder / "calibration.parquet", 600)
    train = byom.rows(1500, seed=5)
    for shape in byom.SHAPES:
        byom.save(shape.build(train), folder / f"{shape.name}.onnx")
    return folder


@pytest.fixture()
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("PREDCACHE_MODELS_DIR", str(folder))
    monkeypatch.setenv("PREDCACHE_HOME", str(tmp_path / "home"))
    return folder


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


EXPECTED = {
    "sk_classifier": (
        [("X", ["N", 4])],
        [("output_label", "int64", ["N"]), ("output_probability", "float32", ["N", 2])],
        "output_probability:1",
    ),
    "sk_regressor": ([("input", ["N", 4])], [("variable", "float32", ["N", 1])], "variable"),
    "lgbm_classifier": (
        [("input", ["N", 4])],
        [("label", "int64", ["N"]), ("probabilities", "float32", ["N", 2])],
        "probabilities:1",
    ),
    "recommender": (
        [("user", ["N", 8])],
        [("scores", "float32", ["N", 10]), ("items", "int64", ["N", 10])],
        "scores:max",
    ),
}


@pytest.mark.parametrize("shape", byom.SHAPES, ids=lambda s: s.name)
def test_exporter_default_imports_with_its_shapes_and_scores_like_onnxruntime(
    shape: byom.Shape, work: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(shape.import_args(work / f"{shape.name}.onnx", work / "calibration.parquet")) == 0
    card = load_card(models / shape.name / "1")
    inputs, outputs, score = EXPECTED[shape.name]
    assert [(i.name, i.shape) for i in card.inputs] == inputs
    assert [(o.name, o.dtype, o.shape) for o in card.outputs] == outputs
    assert card.score_spec.describe() == score
    assert card.quantization["gate"]["reason"]
    table = byom.rows(300, seed=9)
    got = load_model(models, shape.name).predict(validate(table, card).good, batch_rows=7)
    want = byom.direct_outputs(models / shape.name / "1", card, table)
    keys = list(want)
    for spec in card.outputs:
        stacked = np.stack([want[k][spec.name] for k in keys])
        assert np.array_equal(got[spec.name], stacked)


def test_tree_ensemble_keeps_fp32_as_default_with_the_reason(work: Path, models: Path) -> None:
    shape = next(s for s in byom.SHAPES if s.name == "lgbm_classifier")
    assert main(shape.import_args(work / "lgbm_classifier.onnx", work / "calibration.parquet")) == 0
    card = load_card(models / "lgbm_classifier" / "1")
    assert card.signatures["default"] == "model.onnx" and "int8" not in card.signatures
    assert "no quantizable ops" in card.quantization["gate"]["reason"]
    assert card.metrics["fp32"]["auc"] > 0.8


def test_zipmap_output_is_unwrapped_keeping_its_name(work: Path, models: Path) -> None:
    shape = byom.SHAPES[0]
    assert main(shape.import_args(work / "sk_classifier.onnx", work / "calibration.parquet")) == 0
    graph = onnx.load(str(models / "sk_classifier" / "1" / "model.onnx"))
    assert "ZipMap" not in {node.op_type for node in graph.graph.node}
    assert [o.name for o in graph.graph.output] == ["output_label", "output_probability"]


def test_versions_count_up_and_are_never_overwritten(
    work: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = byom.SHAPES[1].import_args(work / "sk_regressor.onnx", work / "calibration.parquet")
    assert main(args) == 0 and main(args) == 0
    assert sorted(p.name for p in (models / "sk_regressor").iterdir()) == ["1", "2"]
    before = _tree(models)
    capsys.readouterr()
    assert main([*args, "--version", "2"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert _tree(models) == before


def _bad_graph(path: Path, *, width: str | int = 4, output_rank: int = 1) -> Path:
    shape = [None] * output_rank
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["out"])]
        if output_rank != 1
        else [helper.make_node("ReduceSum", ["input"], ["out"], keepdims=0)],
        "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _sequence_output_graph(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["input"], ["out"])],
        "seq",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_sequence_value_info("out", TensorProto.FLOAT, [None, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _rank3_graph(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["input", "axes"], ["out"])],
        "rank3",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4, 1])],
        [onnx.numpy_helper.from_array(np.array([2], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _few_rows(path: Path) -> Path:
    pq.write_table(byom.rows(99), path)
    return path


def _case(name: str, work: Path, tmp: Path) -> tuple[list[str], str]:
    cal = str(work / "calibration.parquet")
    reg = str(work / "sk_regressor.onnx")
    clf = str(work / "sk_classifier.onnx")
    base = ["models", "import"]
    if name == "onnx_does_not_load":
        bad = tmp / "broken.onnx"
        bad.write_bytes(b"not a protobuf at all")
        return [*base, "m", "--onnx", str(bad), "--key", "id", "--calibration", cal], "does not load"
    if name == "input_without_column":
        return [*base, "m", "--onnx", clf, "--key", "id", "--calibration", cal], "--columns X="
    if name == "columns_missing_column":
        args = [
            *base,
            "m",
            "--onnx",
            clf,
            "--key",
            "id",
            "--calibration",
            cal,
            "--columns",
            "X=f0,f1,f2,nope",
        ]
        return args, "'nope'"
    if name == "columns_wrong_count":
        args = [*base, "m", "--onnx", clf, "--key", "id", "--calibration", cal, "--columns", "X=f0,f1"]
        return args, "4 wide"
    if name == "dynamic_non_batch_dimension":
        path = _bad_graph(tmp / "dyn.onnx", width="F")
        return [*base, "m", "--onnx", str(path), "--key", "id", "--calibration", cal], "dynamic"
    if name == "output_rank_3":
        path = _rank3_graph(tmp / "r3.onnx")
        return [*base, "m", "--onnx", str(path), "--key", "id", "--calibration", cal], "rank 3"
    if name == "sequence_output":
        path = _sequence_output_graph(tmp / "seq.onnx")
        return [*base, "m", "--onnx", str(path), "--key", "id", "--calibration", cal], "not a ZipMap"
    if name == "key_missing":
        return [*base, "m", "--onnx", reg, "--key", "nokey", "--calibration", cal], "no key column 'nokey'"
    if name == "too_few_rows":
        few = str(_few_rows(tmp / "few.parquet"))
        return [*base, "m", "--onnx", reg, "--key", "id", "--calibration", few], "at least 100"
    if name == "score_missing_output":
        return [*base, "m", "--onnx", reg, "--key", "id", "--calibration", cal, "--score", "nope"], "'nope'"
    if name == "score_index_out_of_range":
        args = [*base, "m", "--onnx", clf, "--key", "id", "--calibration", cal, "--columns", "X=f0,f1,f2,f3"]
        return [*args, "--score", "output_probability:2"], "out of range"
    if name == "bad_model_name":
        return [*base, "Bad-Name", "--onnx", reg, "--key", "id", "--calibration", cal], "not allowed"
    raise AssertionError(name)


BAD_INPUTS = [
    "onnx_does_not_load",
    "input_without_column",
    "columns_missing_column",
    "columns_wrong_count",
    "dynamic_non_batch_dimension",
    "output_rank_3",
    "sequence_output",
    "key_missing",
    "too_few_rows",
    "score_missing_output",
    "score_index_out_of_range",
    "bad_model_name",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    case: str, work: Path, models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (models / "keep" / "1").mkdir(parents=True)
    before = _tree(models)
    args, expected = _case(case, work, tmp_path)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("predcache: error: ")
    assert expected in err
    assert _tree(models) == before


def test_int_keys_are_their_decimal_text(work: Path, models: Path) -> None:
    shape = next(s for s in byom.SHAPES if s.name == "lgbm_classifier")
    assert main(shape.import_args(work / "lgbm_classifier.onnx", work / "calibration.parquet")) == 0
    card = load_card(models / "lgbm_classifier" / "1")
    table = byom.rows(5)
    keys = validate(table, card).good.column("uid").to_pylist()
    assert keys == [str(v) for v in table["uid"].to_pylist()]
    assert pa.types.is_string(validate(table, card).good.schema.field("uid").type)


def test_score_option_and_holdout_file_are_recorded(work: Path, models: Path, tmp_path: Path) -> None:
    shape = byom.SHAPES[0]
    holdout = byom.write_rows(tmp_path / "holdout.parquet", 150, seed=21, start=50_000)
    args = shape.import_args(work / "sk_classifier.onnx", work / "calibration.parquet")
    assert main([*args, "--score", "output_probability:0", "--holdout", str(holdout)]) == 0
    card = load_card(models / "sk_classifier" / "1")
    assert card.score_spec.describe() == "output_probability:0"
    assert card.metrics["holdout"] == {"rows": 150, "description": "the --holdout rows"}
    assert card.training["calibration_rows"] == 600


def test_recommender_score_max_and_other_designations_parse() -> None:
    from pipelines.core.card import OutputSpec
    from pipelines.modeling.designation import parse_score

    outputs = [OutputSpec(name="scores", dtype="float32", shape=["N", 10])]
    assert parse_score("scores:max", outputs).reduce == "max"
    assert parse_score("scores:9", outputs).index == 9
    with pytest.raises(Exception, match="has 10 columns"):
        parse_score("scores", outputs)
