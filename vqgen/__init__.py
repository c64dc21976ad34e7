"""vqgen: a two-stage generative model of brain MRI slices (VQ-VAE + gated PixelCNN prior)."""

__version__ = "0.1.0"
