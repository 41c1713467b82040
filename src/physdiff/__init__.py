"""Physics-guided partitioned diffusion priors for multi-slice reconstruction."""
__version__ = "0.1.0"
