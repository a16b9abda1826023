"""evalbench: benchmark pretrained image encoders the way self-supervised learning papers do.

``evalbench.load_results(path)`` reads a results directory into a pandas DataFrame (one row per
record; columns documented in ``evalbench/results/frame.py``). It is imported on first use, so
``import evalbench`` stays light (no pandas, torch or Ray).
"""

__version__ = "0.1.0"
__all__ = ["load_results"]


def __getattr__(name: str):  # PEP 562: lazy attributes
    if name == "load_results":
        from evalbench.results.frame import load_results

        return load_results
    raise AttributeError(f"module 'evalbench' has no attribute {name!r}")
