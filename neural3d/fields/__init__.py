"""Neural fields: triplanes, MLP NeRF and multiresolution hash grids.

Every field follows the field protocol of ``docs/INTERFACES.md``::

    density, features = field(positions [R,S,3], directions [R,S,3] or None)
    # density [R,S] >= 0, features [R,S,C]

**Bounding box convention.** A field owns an axis-aligned box ``aabb = [xmin, ymin, zmin, xmax,
ymax, zmax]`` in world coordinates (default ``[-1,-1,-1, 1, 1, 1]``). Positions are mapped to
``[-1, 1]^3`` by :func:`normalize_aabb` before encoding; points outside the box get density 0
(features are still defined there). Density is non-negative (softplus or truncated exp);
colour features are in [0, 1] (sigmoid) when the field decodes RGB.
"""

from neural3d.fields.base import Field, normalize_aabb, trunc_exp
from neural3d.fields.encodings import (
    HashGridEncoding,
    PositionalEncoding,
    TorchHashGrid,
    hash_coords,
    make_hash_encoding,
)
from neural3d.fields.hashgrid import HashGridField
from neural3d.fields.mlp_nerf import MLPNeRF
from neural3d.fields.triplane import TriplaneDecoder, TriplaneField, sample_triplane

FIELDS = {"triplane": TriplaneField, "mlp": MLPNeRF, "hashgrid": HashGridField}

__all__ = [
    "FIELDS",
    "Field",
    "HashGridEncoding",
    "HashGridField",
    "MLPNeRF",
    "PositionalEncoding",
    "TorchHashGrid",
    "TriplaneDecoder",
    "TriplaneField",
    "hash_coords",
    "make_hash_encoding",
    "normalize_aabb",
    "sample_triplane",
    "trunc_exp",
]
