import numpy as np

def summary(
    values: np.ndarray, inner_edges: np.ndarray, counts: np.ndarray, /
) -> tuple[int, float | None, float | None, float | None, float | None]: ...
