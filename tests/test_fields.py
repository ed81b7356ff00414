"""Fields: shapes, the field protocol, triplane sampling, hash encoding (torch implementation),
configs/registry, parameter groups and regularisers."""

import pytest
import torch

from neural3d.fields import (
    FIELD_CONFIGS,
    FIELDS,
    HashGridEncoding,
    HashGridField,
    HashGridFieldConfig,
    MLPFieldConfig,
    MLPNeRF,
    PositionalEncoding,
    TorchHashGrid,
    TriplaneField,
    TriplaneFieldConfig,
    build_field,
    hash_coords,
    sample_triplane,
    tv_loss,
    widened_sigmoid,
)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_field_protocol_shapes_and_gradients(name):
    torch.manual_seed(0)
    field = FIELDS[name]()
    pos = torch.rand(4, 6, 3) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(4, 6, 3), dim=-1)
    density, feats = field(pos, dirs)
    assert density.shape == (4, 6) and feats.shape == (4, 6, 3)
    assert (density >= 0).all() and (feats >= -0.01).all() and (feats <= 1.01).all()
    (density.sum() + feats.sum()).backward()
    grads = [p.grad for p in field.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_density_zero_outside_aabb(name):
    field = FIELDS[name](aabb=(-0.5, -0.5, -0.5, 0.5, 0.5, 0.5))
    pos = torch.tensor([[[0.9, 0.0, 0.0], [0.0, -0.7, 0.0], [0.0, 0.0, 0.6]]])
    density, _ = field(pos, torch.zeros_like(pos))
    assert torch.all(density == 0)


def test_bad_aabb_rejected():
    with pytest.raises(ValueError, match="aabb"):
        TriplaneField(aabb=(1, 1, 1, -1, -1, -1))


def test_positional_encoding_dims():
    pe = PositionalEncoding(3, 4)
    out = pe(torch.zeros(2, 3))
    assert out.shape == (2, pe.out_dim) == (2, 27)


def test_triplane_sampling_matches_manual_bilinear():
    # a plane that is linear in its two coordinates is reproduced exactly by bilinear sampling
    H = W = 8
    lin = (torch.arange(W) + 0.5) / W * 2 - 1  # pixel-centre coordinates (align_corners=False)
    plane_x = lin[None, :].expand(H, W)  # varies along width = first grid coordinate
    planes = torch.zeros(1, 3, 1, H, W)
    planes[0, 0, 0] = plane_x  # xy plane, value = x
    planes[0, 1, 0] = plane_x  # xz plane, value = x
    planes[0, 2, 0] = plane_x  # yz plane, value = y
    pts = (torch.rand(1, 50, 3) * 2 - 1) * 0.7  # stay inside the pixel-centre range
    out = sample_triplane(planes, pts, "sum")
    assert torch.allclose(out[0, :, 0], 2 * pts[0, :, 0] + pts[0, :, 1], atol=1e-5)
    cat = sample_triplane(planes, pts, "concat")
    assert cat.shape == (1, 50, 3)
    assert torch.allclose(cat[0, :, 2], pts[0, :, 1], atol=1e-5)


def test_triplane_external_planes_batched():
    field = TriplaneField(resolution=16, channels=4, learn_planes=False)
    planes = torch.randn(2, 3, 4, 16, 16, requires_grad=True)
    pos = torch.rand(2, 5, 7, 3) * 2 - 1
    density, rgb = field(pos, None, planes=planes)
    assert density.shape == (2, 5, 7) and rgb.shape == (2, 5, 7, 3)
    density.sum().backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0
    # batch element 1 does not depend on planes 0
    d1, _ = field(pos[1:], None, planes=planes[1:].detach())
    assert torch.allclose(d1[0], density[1].detach(), atol=1e-6)
    with pytest.raises(ValueError, match="planes"):
        field(pos[0])


def test_triplane_coordinate_encoding_reaches_the_decoder():
    """coord_freqs > 0: on constant planes the output still varies with the position (the
    decoder reads the point's encoding); 0: constant planes give a constant output."""
    planes = torch.ones(1, 3, 4, 8, 8)
    pos = torch.rand(1, 6, 5, 3) * 2 - 1
    plain = TriplaneField(resolution=8, channels=4, learn_planes=False)
    d0, c0 = plain(pos, None, planes=planes)
    assert torch.allclose(d0, d0.flatten()[0]) and torch.allclose(c0, c0[..., :1, :1, :])
    coords = TriplaneField(resolution=8, channels=4, learn_planes=False, coord_freqs=2)
    assert coords.decoder.net[0].in_features == 4 + 3 * (1 + 2 * 2)
    d1, c1 = coords(pos, None, planes=planes)
    assert d1.std() > 0 and c1.std(dim=(1, 2)).min() > 0


def test_triplane_upsample_and_tv():
    field = TriplaneField(resolution=8, channels=2)
    tv = tv_loss(field.planes)
    assert tv > 0
    field.upsample(16)
    assert field.planes.shape == (1, 3, 2, 16, 16)


def test_mlp_nerf_view_dependence():
    torch.manual_seed(0)
    f = MLPNeRF(view_dependent=True, hidden=32, layers=3)
    pos = torch.zeros(1, 2, 3)
    d = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])
    _, rgb = f(pos, d)
    assert not torch.allclose(rgb[0, 0], rgb[0, 1])
    with pytest.raises(ValueError):
        f(pos, None)


def test_hash_known_values():
    T = 2**19
    coords = torch.tensor([[1, 2, 3], [0, 0, 0], [7, 0, 5], [100, 200, 300]])
    got = hash_coords(coords, T).tolist()
    for (x, y, z), h in zip(coords.tolist(), got, strict=True):
        assert h == ((x * 1) ^ (y * 2654435761) ^ (z * 805459861)) % T
    assert got[1] == 0
    assert got[0] == ((1) ^ (2 * 2654435761) ^ (3 * 805459861)) % T == 128476


def test_hash_grid_trilinear_reproduces_linear_function_on_dense_level():
    grid = TorchHashGrid(n_levels=2, n_features=1, log2_hashmap_size=12, base_resolution=4,
                         max_resolution=32)
    assert grid.dense[0] and not grid.dense[1]  # 5^3 fits in 2^12, 33^3 does not
    r = grid.resolutions[0]
    a = torch.tensor([0.3, -1.2, 2.0])
    b = 0.7
    # set the level-0 table to f(v) = a . (v / r) + b on every vertex
    v = torch.stack(torch.meshgrid(*[torch.arange(r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    idx = grid.level_indices(0, v)
    with torch.no_grad():
        grid.embeddings[idx, 0] = (v.float() / r) @ a + b
    x = torch.rand(200, 3)
    out = grid(x)
    assert out.shape == (200, 2)
    assert torch.allclose(out[:, 0], x @ a + b, atol=1e-5)


def test_hash_grid_gradients_flow_and_interface():
    enc = HashGridEncoding(n_levels=4, n_features=2, log2_hashmap_size=10, base_resolution=4,
                           max_resolution=64, device="cpu")
    assert enc.backend == "torch" and enc.out_dim == 8
    x = torch.rand(64, 3)
    out = enc(x)
    assert out.shape == (64, 8)
    out.pow(2).sum().backward()
    g = enc.impl.embeddings.grad
    assert g is not None and (g != 0).sum() > 0
    # only the vertices touched receive gradient
    assert (g.abs().sum(-1) > 0).sum() <= 64 * 8 * 4


# ------------------------------------------------------------------ configs, registry, groups
SMALL = {"triplane": TriplaneFieldConfig(resolution=8, channels=4, hidden=16),
         "hashgrid": HashGridFieldConfig(n_levels=4, log2_hashmap_size=10, max_resolution=32,
                                         hidden=16),
         "mlp": MLPFieldConfig(pos_freqs=4, hidden=16, layers=3)}


def test_registry_and_build():
    assert set(FIELD_CONFIGS) == set(FIELDS) == {"triplane", "hashgrid", "mlp"}
    for kind, cfg in SMALL.items():
        assert FIELD_CONFIGS[kind].kind == kind and FIELD_CONFIGS[kind].target is FIELDS[kind]
        field = build_field(cfg, torch.tensor([-1.0, -2, -1, 1, 2, 1]), device="cpu")
        assert type(field) is FIELDS[kind]
        assert field.aabb.tolist() == [-1.0, -2, -1, 1, 2, 1]
    hg = build_field(HashGridFieldConfig(n_levels=8, log2_hashmap_size=10), [-1, -1, -1, 1, 1, 1])
    assert isinstance(hg, HashGridField) and hg.encoding.n_levels == 8
    tp = build_field(TriplaneFieldConfig(resolution=16, channels=3), [-1, -1, -1, 1, 1, 1])
    assert tp.planes.shape == (1, 3, 3, 16, 16)


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_param_groups_cover_every_parameter_once(kind):
    field = build_field(SMALL[kind], [-1, -1, -1, 1, 1, 1])
    groups = field.param_groups(lr=1e-2, table_lr=3e-2)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in field.parameters()) and len(set(ids)) == len(ids)
    by_name = {g["name"]: g for g in groups}
    assert by_name["networks"]["lr"] == 1e-2
    tables = {"triplane": [field.planes] if kind == "triplane" else None,
              "hashgrid": list(field.encoding.parameters()) if kind == "hashgrid" else None,
              "mlp": None}[kind]
    if tables is None:
        assert set(by_name) == {"networks"}
    else:
        assert by_name["tables"]["lr"] == 3e-2
        assert [id(p) for p in by_name["tables"]["params"]] == [id(p) for p in tables]
    # without learning rates the groups leave "lr" to the optimiser's default
    assert all("lr" not in g for g in field.param_groups())
    torch.optim.Adam(groups)  # a valid optimiser spec


def test_triplane_regulariser_is_the_weighted_tv():
    torch.manual_seed(0)
    field = build_field(TriplaneFieldConfig(resolution=8, channels=2, tv_weight=0.5),
                        [-1, -1, -1, 1, 1, 1])
    p = field.planes
    old = ((p[..., 1:, :] - p[..., :-1, :]) ** 2).mean() + \
        ((p[..., :, 1:] - p[..., :, :-1]) ** 2).mean()
    reg = field.regularizers()
    assert set(reg) == {"tv"} and torch.equal(reg["tv"], 0.5 * old)
    reg["tv"].backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert TriplaneFieldConfig().tv_weight == 1e-2  # fit's tuned weight
    assert build_field(TriplaneFieldConfig(resolution=8, tv_weight=0.0),
                       [-1, -1, -1, 1, 1, 1]).regularizers() == {}
    assert TriplaneField(resolution=8, learn_planes=False, tv_weight=1.0).regularizers() == {}
    for kind in ("hashgrid", "mlp"):
        assert build_field(SMALL[kind], [-1, -1, -1, 1, 1, 1]).regularizers() == {}


def test_widened_sigmoid_range():
    x = torch.tensor([-100.0, 0.0, 100.0])
    assert torch.allclose(widened_sigmoid(x), torch.tensor([-0.001, 0.5, 1.001]))
