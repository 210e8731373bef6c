import numpy as np

def positions(
    hashes: np.ndarray,
    starts: np.ndarray,
    bits: int,
    queries: np.ndarray,
    at: np.ndarray,
    found: np.ndarray,
    /,
) -> None: ...
