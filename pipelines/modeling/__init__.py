"""Model builds: export, static int8 quantization, the quantization gate, cards, and the recipe registry.

Needs the ``build`` extra (scikit-learn, skl2onnx, onnx). Engines and the scorer never import this.
"""

from __future__ import annotations

from pipelines.modeling.registry import available_recipes, build_model, load_recipe

__all__ = ["available_recipes", "build_model", "load_recipe"]
