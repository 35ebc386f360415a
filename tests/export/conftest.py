"""The export tests reuse the optimizer tests' SPO fixture (a label-free task, scripted models)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "optimizers"))
