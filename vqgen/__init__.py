"""vqgen: a two-stage generative model of brain MRI slices (VQ-VAE + gated PixelCNN prior).

    import vqgen
    run = vqgen.load_run("checkpoints/oasis")     # a trained run (see vqgen.api)
    slices = run.sample(16, seed=0)               # (16, 1, S, S) in [0, 1]
    train = vqgen.load_data("mni152", "train")    # a dataset split as the CLI reads it

The API is imported on first use, so `import vqgen` (and `vqgen --help`) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "load_data", "load_run"]

if TYPE_CHECKING:
    from vqgen.api import Run, load_data, load_run


def __getattr__(name: str) -> Any:
    """The API's names, imported from vqgen.api when first asked for (PEP 562)."""
    if name in ("Run", "load_data", "load_run"):
        from vqgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'vqgen' has no attribute {name!r}")
