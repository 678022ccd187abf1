"""Small data sets shipped inside the package (no network needed).

- :func:`load_digits`: 1,797 8x8 images of handwritten digits (UCI, CC BY 4.0).

See ``README.md`` in this folder for sources and licences.
"""

from .digits import load_digits

__all__ = ["load_digits"]
