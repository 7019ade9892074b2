"""Windows: cut ``(rows, features)`` arrays into ``(windows, timesteps, features)``.

Pure numpy, no TensorFlow. Windows never straddle a gap: callers pass the
boolean ``valid`` mask of rows and only runs of valid rows produce windows.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def window_starts(valid: np.ndarray, timesteps: int, stride: int = 1) -> np.ndarray:
    """Return the start indices of windows of ``timesteps`` valid rows.

    Starts are taken every ``stride`` rows within each run of consecutive valid
    rows, counted from the start of the run.

    Args:
        valid: ``(rows,)`` booleans, True where a row has every feature.
        timesteps: rows per window.
        stride: rows between consecutive window starts.

    Returns:
        ``(windows,)`` int64 start indices, ascending.

    >>> window_starts(np.array([True] * 7), timesteps=3, stride=2)
    array([0, 2, 4])
    >>> window_starts(np.array([True, True, True, False, True, True, True, True]), 3, 1)
    array([0, 4, 5])
    """
    if timesteps < 1 or stride < 1:
        raise ValueError(f"timesteps and stride must be positive. Received: timesteps={timesteps}, stride={stride}.")
    valid = np.asarray(valid, dtype=bool)
    starts = []
    run_start = None
    for index, ok in enumerate(np.append(valid, False)):
        if ok and run_start is None:
            run_start = index
        elif not ok and run_start is not None:
            last_start = index - timesteps
            if last_start >= run_start:
                starts.append(np.arange(run_start, last_start + 1, stride))
            run_start = None
    if not starts:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(starts).astype(np.int64)


def cut_windows(values: np.ndarray, starts: np.ndarray, timesteps: int) -> np.ndarray:
    """Gather windows that start at ``starts``.

    Args:
        values: ``(rows, features)`` array.
        starts: ``(windows,)`` start indices from :func:`window_starts`.
        timesteps: rows per window.

    Returns:
        ``(windows, timesteps, features)`` float32 array (a copy).

    >>> cut_windows(np.arange(10.0).reshape(5, 2), np.array([0, 2]), 3)[:, :, 0]
    array([[0., 2., 4.],
           [4., 6., 8.]], dtype=float32)
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be (rows, features). Received shape {values.shape}.")
    features = values.shape[1]
    if len(starts) == 0:
        return np.zeros((0, timesteps, features), dtype=np.float32)
    view = sliding_window_view(values, timesteps, axis=0)  # (rows - T + 1, features, T)
    return np.ascontiguousarray(view[starts].transpose(0, 2, 1), dtype=np.float32)


def trailing_window_ends(valid: np.ndarray, timesteps: int) -> np.ndarray:
    """Return, per row, whether the ``timesteps`` rows ending at it are all valid.

    Scoring gives each row the reconstruction of the window that ends at it, so
    a row can be scored only when this is True.

    >>> trailing_window_ends(np.array([True, True, True, False, True, True]), 2)
    array([False,  True,  True, False, False,  True])
    """
    valid = np.asarray(valid, dtype=bool)
    run = np.zeros(len(valid), dtype=np.int64)
    count = 0
    for index, ok in enumerate(valid):
        count = count + 1 if ok else 0
        run[index] = count
    return run >= timesteps
