"""Reading checkpoints safely (no code execution) and loading them strictly into an encoder."""
from evalbench.checkpoints.load import LoadReport, load_strict, read_state_dict, unwrap_state_dict

__all__ = ["LoadReport", "load_strict", "read_state_dict", "unwrap_state_dict"]
