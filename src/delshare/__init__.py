"""DEL: move files directly between devices, with a TURN TCP relay (RFC 6062) when needed."""

__version__ = "0.1.0"

__all__ = ["__version__"]
