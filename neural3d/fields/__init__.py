"""Neural fields: triplanes, MLP NeRF and multiresolution hash grids.

Every field follows the field protocol of ``docs/INTERFACES.md``::

    density, features = field(positions [R,S,3], directions [R,S,3] or None)
    # density [R,S] >= 0, features [R,S,C]

**Bounding box convention.** A field owns an axis-aligned box ``aabb = [xmin, ymin, zmin, xmax,
ymax, zmax]`` in world coordinates (default ``[-1,-1,-1, 1, 1, 1]``). Positions are mapped to
``[-1, 1]^3`` by :func:`normalize_aabb` before encoding; points outside the box get density 0
(features are still defined there). Density is non-negative (softplus or truncated exp);
colour features are in [0, 1] (sigmoid) when the field decodes RGB.

**Configs and registry.** Each field registers a config dataclass that knows what it builds
(:class:`TriplaneFieldConfig` ``kind="triplane"``, :class:`HashGridFieldConfig` ``"hashgrid"``,
:class:`MLPFieldConfig` ``"mlp"``; defaults = ``neural3d fit``'s); ``build_field(cfg, aabb,
device)`` builds it; ``FIELD_CONFIGS`` / ``FIELDS`` map kinds to config / field classes. Every
field gives its optimiser groups (``param_groups(lr, table_lr)``: networks, and the tables:
triplanes, hash embeddings) and its weighted regularisers (``regularizers()``: the triplane's TV).
"""

from neural3d.fields.base import Field, normalize_aabb, trunc_exp, tv_loss, widened_sigmoid
from neural3d.fields.encodings import (
    HashGridEncoding,
    PositionalEncoding,
    TorchHashGrid,
    hash_coords,
    make_hash_encoding,
)
from neural3d.fields.hashgrid import HashGridField, HashGridFieldConfig
from neural3d.fields.mlp_nerf import MLPFieldConfig, MLPNeRF
from neural3d.fields.registry import (
    FIELD_CONFIGS,
    FIELDS,
    FieldConfig,
    build_field,
    register_field,
)
from neural3d.fields.triplane import (
    TriplaneDecoder,
    TriplaneField,
    TriplaneFieldConfig,
    sample_triplane,
)
from neural3d.fields.triplane_sample import triplane_linear, triplane_reference, triplane_sample

__all__ = [
    "FIELDS",
    "FIELD_CONFIGS",
    "Field",
    "FieldConfig",
    "HashGridEncoding",
    "HashGridField",
    "HashGridFieldConfig",
    "MLPFieldConfig",
    "MLPNeRF",
    "PositionalEncoding",
    "TorchHashGrid",
    "TriplaneDecoder",
    "TriplaneField",
    "TriplaneFieldConfig",
    "build_field",
    "hash_coords",
    "make_hash_encoding",
    "normalize_aabb",
    "register_field",
    "sample_triplane",
    "triplane_linear",
    "triplane_reference",
    "triplane_sample",
    "trunc_exp",
    "tv_loss",
    "widened_sigmoid",
]
