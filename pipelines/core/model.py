"""A model bundle: card + one onnxruntime session = one stateless scoring function.

Sessions are cached per process (one per model file and thread budget), so every engine
gets "one ONNX session per worker process" without engine-specific plumbing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.card import DEFAULT_SIGNATURE, Card, InputSpec, OutputSpec, load_card, verify_artifact
from pipelines.errors import ModelCardError, UnknownModelError, one_line

if TYPE_CHECKING:
    import onnxruntime as ort

_NUMPY_DTYPES: dict[str, type] = {
    "string": object,
    "int64": np.int64,
    "int32": np.int32,
    "float32": np.float32,
    "float64": np.float64,
    "bool": np.bool_,
}
_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}
#: onnxruntime's type names -> card dtypes (inputs and outputs share the names).
ONNX_TO_DTYPE: dict[str, str] = {
    "tensor(string)": "string",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(bool)": "bool",
    **{f"tensor({t})": t for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")},
}
_ONNX_TENSOR_TYPES = {dtype: onnx_type for onnx_type, dtype in ONNX_TO_DTYPE.items()}

#: Every onnxruntime call scores a multiple of this many rows (see ``padded``).
PAD_ROWS = 16

_sessions: dict[tuple[str, int, int, int], ort.InferenceSession] = {}
_sessions_lock = threading.Lock()


def arrow_type(dtype: str) -> pa.DataType:
    """The Arrow type a card dtype is coerced to before scoring."""
    return _ARROW_TYPES[dtype]


def model_versions(models_dir: Path, model: str) -> list[str]:
    """Versions of ``model`` that have a card, oldest first (numeric versions sort numerically)."""
    folder = models_dir / model
    if not folder.is_dir():
        return []
    # Dot folders are builds in progress (see pipelines.modeling.registry).
    found = [p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / "card.json").is_file()]
    return sorted(found, key=lambda v: (0, int(v), v) if v.isdigit() else (1, 0, v))


def list_models(models_dir: Path) -> list[str]:
    if not models_dir.is_dir():
        return []
    return sorted(p.name for p in models_dir.iterdir() if p.is_dir() and model_versions(models_dir, p.name))


def resolve_version_dir(models_dir: Path, model: str, version: str | None = None) -> Path:
    """The folder of ``model``'s ``version`` (the newest when None).

    Raises:
        UnknownModelError: no such model or version.
    """
    versions = model_versions(models_dir, model)
    if not versions:
        raise UnknownModelError(model, available=list_models(models_dir))
    if version is None:
        version = versions[-1]
    if version not in versions:
        raise UnknownModelError(model, version=version, available=[f"{model}/{v}" for v in versions])
    return models_dir / model / version


def _session(path: Path, threads: int) -> ort.InferenceSession:
    import onnxruntime as ort

    stat = path.stat()
    # A file rebuilt in place gets a new session, not the stale one.
    key = (str(path), stat.st_mtime_ns, stat.st_size, threads)
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.log_severity_level = 3  # exporters' loose declared shapes make ORT warn on every run
            try:
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ModelCardError(f"onnxruntime cannot load {path}: {one_line(exc)}") from exc
            _sessions[key] = session
        return session


def check_card_matches_session(card: Card, session: ort.InferenceSession, file_name: str) -> None:
    """Raise ModelCardError unless the card's inputs and outputs are exactly the graph's."""
    graph_inputs = {i.name: i.type for i in session.get_inputs()}
    card_inputs = {spec.name: _ONNX_TENSOR_TYPES[spec.dtype] for spec in card.inputs}
    where = f"{card.name}/{card.version}"
    for name in sorted(card_inputs.keys() - graph_inputs.keys()):
        raise ModelCardError(f"{where}: card input '{name}' is not an input of {file_name}; fix the card")
    for name in sorted(graph_inputs.keys() - card_inputs.keys()):
        raise ModelCardError(
            f"{where}: {file_name} needs input '{name}' that the card does not list; fix the card"
        )
    for name, onnx_type in card_inputs.items():
        if graph_inputs[name] != onnx_type:
            raise ModelCardError(
                f"{where}: card says input '{name}' is {onnx_type}, {file_name} takes {graph_inputs[name]}"
            )
    graph_outputs = {o.name: o.type for o in session.get_outputs()}
    for spec in card.outputs:
        if spec.name not in graph_outputs:
            raise ModelCardError(f"{where}: card output '{spec.name}' is not an output of {file_name}")
        if graph_outputs[spec.name] != _ONNX_TENSOR_TYPES.get(spec.dtype):
            raise ModelCardError(
                f"{where}: card says output '{spec.name}' is {spec.dtype}, {file_name} gives "
                f"{graph_outputs[spec.name]}; re-import the model"
            )


def _strings(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numpy object array of str, building one Python string per distinct value, not per row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    encoded = pc.dictionary_encode(column)
    dictionary = np.asarray([*encoded.dictionary.to_pylist(), None], dtype=object)
    indices = pc.fill_null(encoded.indices, len(encoded.dictionary))
    return dictionary[indices.to_numpy(zero_copy_only=False)]


def _values(column: pa.ChunkedArray | pa.Array, dtype: str) -> np.ndarray:
    if dtype == "string":
        return _strings(column)
    return np.asarray(column.to_numpy(zero_copy_only=False)).astype(_NUMPY_DTYPES[dtype], copy=False)


def _input_tensor(spec: InputSpec, table: pa.Table) -> np.ndarray:
    if spec.columns is not None:
        stacked = [_values(table.column(name), spec.dtype) for name in spec.columns]
        return np.stack(stacked, axis=1) if stacked else np.empty((table.num_rows, 0))
    column = table.column(spec.name)
    if spec.is_list:
        chunk = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        flat = _values(pc.list_flatten(chunk), spec.dtype)
        return flat.reshape(table.num_rows, spec.width or 1)
    values = _values(column, spec.dtype)
    return values if spec.width is None else values.reshape(-1, 1)


def to_feed(card: Card, table: pa.Table) -> dict[str, np.ndarray]:
    """Arrow columns (already validated and coerced) -> onnxruntime feed, one tensor per graph input.

    ``[N]`` and ``[N, 1]`` inputs come from their column; ``[N, K]`` inputs from a list column of
    exactly K values per row, or from the card's ``columns`` stacked in order.
    """
    return {spec.name: _input_tensor(spec, table) for spec in card.inputs}


def output_array(spec: OutputSpec, result: np.ndarray) -> np.ndarray:
    """One output batch as stored: ``[N]``/``[N, 1]`` -> 1-D, ``[N, K]`` -> 2-D ``(n, K)``."""
    values = np.asarray(result)
    if spec.width is None:
        return values.reshape(-1)
    return values.reshape(-1, spec.width)


@dataclass(frozen=True)
class Model:
    """A loaded model version: its card, folder and the ONNX file of one signature."""

    card: Card
    version_dir: Path
    signature: str
    file_name: str
    threads: int

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    def session(self) -> ort.InferenceSession:
        """This process's session for the model (created on first use, then reused)."""
        return _session(self.version_dir / self.file_name, self.threads)

    def predict(self, table: pa.Table, *, batch_rows: int) -> dict[str, np.ndarray]:
        """Score validated rows in batches of ``batch_rows``.

        Returns:
            Output name -> array: 1-D for ``[N]``/``[N, 1]`` outputs, ``(n, K)`` for ``[N, K]`` ones.
        """
        return predict_outputs(self.session(), self.card, table, batch_rows=batch_rows)


def padded(feed: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """``feed`` grown to a multiple of ``PAD_ROWS`` rows by repeating its last row.

    Some kernels take another path for very small batches (measured: skl2onnx's LinearRegressor
    gives a different last bit for a batch of one row), so without this a key's outputs would
    depend on how many rows its shard or batch happened to hold. The extra outputs are dropped.
    """
    extra = -rows % PAD_ROWS
    if extra == 0 or rows == 0:
        return feed
    return {name: np.concatenate([v, np.repeat(v[-1:], extra, axis=0)]) for name, v in feed.items()}


def predict_outputs(
    session: ort.InferenceSession, card: Card, table: pa.Table, *, batch_rows: int
) -> dict[str, np.ndarray]:
    """Every card output of ``table``'s rows, scored by ``session`` in batches of ``batch_rows``."""
    names = [spec.name for spec in card.outputs]
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, table.num_rows, batch_rows):
        rows = min(batch_rows, table.num_rows - start)
        feed = padded(to_feed(card, table.slice(start, batch_rows)), rows)
        results = session.run(names, feed)
        for spec, result in zip(card.outputs, results, strict=True):
            chunks[spec.name].append(output_array(spec, result)[:rows])
    out: dict[str, np.ndarray] = {}
    for spec in card.outputs:
        parts = chunks[spec.name]
        if parts:
            out[spec.name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        else:
            dtype = object if spec.dtype == "string" else np.dtype(spec.dtype)
            out[spec.name] = np.empty((0,) if spec.width is None else (0, spec.width), dtype)
    return out


def load_model(
    models_dir: Path,
    model: str,
    version: str | None = None,
    *,
    signature: str = DEFAULT_SIGNATURE,
    threads: int = 1,
) -> Model:
    """Resolve, verify (sha256, card vs graph) and open a model version.

    Raises:
        UnknownModelError: no such model or version.
        ModelCardError: the card is invalid or disagrees with its ONNX file.
    """
    version_dir = resolve_version_dir(models_dir, model, version)
    card = load_card(version_dir)
    if card.name != model or card.version != version_dir.name:
        raise ModelCardError(
            f"{version_dir}/card.json names {card.name}/{card.version}; it must match its folder "
            f"{model}/{version_dir.name}"
        )
    file_name = card.signature_file(signature)
    verify_artifact(card, version_dir, file_name)
    loaded = Model(
        card=card, version_dir=version_dir, signature=signature, file_name=file_name, threads=threads
    )
    check_card_matches_session(card, loaded.session(), file_name)
    return loaded
