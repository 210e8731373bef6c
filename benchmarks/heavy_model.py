"""A compute-heavy twin of ``flights_delay`` for the model ceiling: same inputs, three hidden layers of 512.

Built exactly as the reference model is (its recipe: sklearn Pipeline -> skl2onnx -> static QDQ int8
with the quantization gate, via ``pipelines.modeling``), only with ``HIDDEN_LAYERS = (512, 512, 512)``
and a short training run: it measures what int8 buys when MatMuls dominate, not accuracy.
The recipe module is loaded as a private instance, so overriding its constant touches nothing else.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.modeling.registry import load_recipe
from pipelines.settings import DEFAULT_MODELS_DIR

NAME = "flights_heavy"
VERSION = "1"
HIDDEN_LAYERS = (512, 512, 512)
TRAIN_ROWS = 20_000
MAX_ITER = 3


def build_heavy_model(models_dir: Path) -> Path:
    """Train, export and quantize the heavy model into ``models_dir/flights_heavy/1``; returns that folder."""
    recipe = load_recipe("flights_delay", DEFAULT_MODELS_DIR)
    recipe.HIDDEN_LAYERS = HIDDEN_LAYERS
    out_dir = models_dir / NAME / VERSION
    recipe.build(out_dir, name=NAME, version=VERSION, max_train_rows=TRAIN_ROWS, max_iter=MAX_ITER)
    return out_dir


if __name__ == "__main__":
    import sys

    print(build_heavy_model(Path(sys.argv[1])))
