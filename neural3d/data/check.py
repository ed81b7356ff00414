"""Checking an SRN-layout dataset before training on it (``neural3d data check``).

:func:`check_split` walks one split (the folder :class:`~neural3d.data.srn.SRNCategory` resolves,
chairs nesting included) and reports, per object, what is wrong: missing ``intrinsics.txt``,
images without poses or poses without images, no poses at all, a view count other than the
expected one, images of another resolution, a pose that is not a rigid camera-to-world
transform (rotation orthonormal with det +1, finite, bottom row ``0 0 0 1``, within
``pose_atol``). Image files are checked by their header (size), not decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from neural3d.data.core import IMAGE_EXTS, DataError
from neural3d.data.srn import SRNCategory, _files, read_srn_intrinsics, read_srn_pose

#: ``(category, split) -> (objects, views per object)`` of the public SRN releases (pixelNeRF's
#: ``srn_cars.zip`` / ``srn_chairs.zip``). Cars: 2458 train / 704 test objects, 50 / 251 views.
#: Chairs: 4612 train objects (SSDNeRF ``configs/paper_cfgs/ssdnerf_chairs_recons1v.py``:
#: ``cache_size=4612  # number of training scenes``), 1317 test objects with 251 views (same
#: config: ``num_test_imgs=251``, FID over ``1317 * 250`` images), 50 views per training object
#: as for cars. The val splits are not listed: pass ``--expect-objects/--expect-views``.
EXPECTED: dict[tuple[str, str], tuple[int, int]] = {
    ("cars", "train"): (2458, 50),
    ("cars", "test"): (704, 251),
    ("chairs", "train"): (4612, 50),
    ("chairs", "test"): (1317, 251),
}
#: image size (square) of the SRN releases
RESOLUTION: dict[str, int] = {"cars": 128, "chairs": 128}
SPLITS = ("train", "val", "test")


@dataclass
class SplitReport:
    """What :func:`check_split` found in one split. ``views``: per object id, its number of
    images; ``bad``: per object id, its problems; ``error``: a problem of the split as a
    whole (folder missing, object count off)."""

    split: str
    folder: str
    expected_objects: int | None
    expected_views: int | None
    resolution: tuple[int, int] | None
    views: dict[str, int] = field(default_factory=dict)
    bad: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad and not self.errors


def check_object(path: Path, expect_views: int | None = None,
                 resolution: tuple[int, int] | None = None,
                 pose_atol: float = 1e-3) -> tuple[int, list[str]]:
    """``(number of images, problems)`` of one SRN object folder. ``resolution`` ``(H, W)``:
    the image size required (None: the size ``intrinsics.txt`` declares)."""
    from PIL import Image

    problems: list[str] = []
    try:
        _, _, _, h, w = read_srn_intrinsics(path / "intrinsics.txt")
        declared: tuple[int, int] | None = (h, w)
    except DataError as e:
        problems.append(str(e).replace(f"{path}/", ""))
        declared = None
    want = resolution or declared
    rgbs = _files(path / "rgb", IMAGE_EXTS)
    poses = _files(path / "pose", (".txt",))
    if not rgbs:
        problems.append("rgb/ has no images")
    if not poses:
        problems.append("pose/ has no poses")
    no_pose = sorted(set(rgbs) - set(poses))
    no_img = sorted(set(poses) - set(rgbs))
    if rgbs and poses and no_pose:
        problems.append(f"{len(no_pose)} image(s) without pose: {_few(no_pose)}")
    if rgbs and poses and no_img:
        problems.append(f"{len(no_img)} pose(s) without image (missing view): {_few(no_img)}")
    if expect_views is not None and len(rgbs) != expect_views:
        problems.append(f"{len(rgbs)} views, expected {expect_views}")
    wrong_size, unreadable = [], []
    for p in rgbs.values():
        try:
            with Image.open(p) as im:
                iw, ih = im.size
        except Exception as e:  # noqa: BLE001 - any decoder error is a data problem
            unreadable.append(f"{p.name} ({type(e).__name__})")
            continue
        if want is not None and (ih, iw) != tuple(want):
            wrong_size.append(f"{p.name} is {iw}x{ih}")
    if unreadable:
        problems.append(f"{len(unreadable)} unreadable image(s): {_few(unreadable)}")
    if wrong_size:
        problems.append(f"{len(wrong_size)} image(s) not {want[1]}x{want[0]}: "
                        f"{_few(wrong_size)}")
    bad_poses = []
    for p in poses.values():
        try:
            read_srn_pose(p, pose_atol)
        except DataError as e:
            bad_poses.append(str(e).replace(f"{p.parent}/", ""))
    if bad_poses:
        problems.append(f"{len(bad_poses)} bad pose(s): {_few(bad_poses, 2)}")
    return len(rgbs), problems


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def check_split(root: str | Path, category: str, split: str,
                expect_objects: int | None = None, expect_views: int | None = None,
                expect_res: int | None = None, pose_atol: float = 1e-3,
                progress: bool = False) -> SplitReport:
    """Check ``root/<category>_<split>`` (see the module docstring). The expected counts and
    resolution default to :data:`EXPECTED` / :data:`RESOLUTION` for the category (None for an
    unknown category: counts unchecked, images must match their ``intrinsics.txt``)."""
    from tqdm.auto import tqdm

    known = EXPECTED.get((category, split), (None, None))
    expect_objects = known[0] if expect_objects is None else expect_objects
    expect_views = known[1] if expect_views is None else expect_views
    res = RESOLUTION.get(category) if expect_res is None else expect_res
    size = (res, res) if res else None
    rep = SplitReport(split, str(Path(root) / f"{category}_{split}"), expect_objects,
                      expect_views, size)
    try:
        cat = SRNCategory(root, category, split)
    except DataError as e:
        rep.errors.append(str(e))
        return rep
    rep.folder = str(cat.split_dir)
    ids = list(cat.object_ids)
    if cat.list_file is None:  # folders that are not objects at all count as bad objects
        ids += [p.name for p in sorted(cat.split_dir.iterdir())
                if p.is_dir() and p.name not in set(ids)]
    for oid in tqdm(sorted(ids) if cat.list_file is None else ids, unit="obj",
                    desc=f"{category}_{split}", disable=not progress):
        n, problems = check_object(cat.object_path(oid), expect_views, size, pose_atol)
        rep.views[oid] = n
        if problems:
            rep.bad[oid] = problems
    if expect_objects is not None and len(ids) != expect_objects:
        rep.errors.append(f"{rep.folder}: {len(ids)} objects, expected {expect_objects}")
    return rep


def check_dataset(root: str | Path, category: str, splits: list[str] | None = None,
                  expect_objects: dict[str, int] | None = None,
                  expect_views: dict[str, int] | None = None, expect_res: int | None = None,
                  pose_atol: float = 1e-3, progress: bool = False) -> list[SplitReport]:
    """:func:`check_split` for each of ``splits`` (default: train and test, and val when its
    folder exists). ``expect_objects``/``expect_views``: per split overrides."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder is missing")
    if splits is None:
        splits = [s for s in SPLITS if s != "val" or (root / f"{category}_val").is_dir()]
    eo, ev = expect_objects or {}, expect_views or {}
    return [check_split(root, category, s, eo.get(s), ev.get(s), expect_res, pose_atol,
                        progress) for s in splits]


def format_report(reports: list[SplitReport]) -> str:
    """One line per bad object (``BAD split/id: problem; problem``), the split-level problems,
    then a summary table."""
    lines = []
    for r in reports:
        for oid, probs in r.bad.items():
            lines.append(f"BAD {r.split}/{oid}: {'; '.join(probs)}")
        lines += [f"ERROR {r.split}: {e}" for e in r.errors]
    rows = [("split", "objects", "views/object", "resolution", "bad objects", "folder")]
    for r in reports:
        counts = sorted(set(r.views.values()))
        views = "-" if not counts else (str(counts[0]) if len(counts) == 1
                                         else f"{counts[0]}-{counts[-1]}")
        rows.append((r.split, f"{len(r.views)}/{_exp(r.expected_objects)}",
                     f"{views}/{_exp(r.expected_views)}",
                     f"{r.resolution[1]}x{r.resolution[0]}" if r.resolution else "intrinsics",
                     str(len(r.bad)), r.folder))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    if lines:
        lines.append("")
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    ok = all(r.ok for r in reports)
    lines.append("OK" if ok else f"FAILED: {sum(len(r.bad) for r in reports)} bad object(s), "
                 f"{sum(len(r.errors) for r in reports)} split problem(s)")
    return "\n".join(lines)


def _exp(n: int | None) -> str:
    return "?" if n is None else str(n)
