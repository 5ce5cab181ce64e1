"""A Sentinel-2 L2A SAFE read straight from its zip: same reflectance, offset and metadata as the
unpacked folder, nothing extracted; a truncated zip is refused naming the file."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from coalmine.runtime.errors import InputError
from coalmine.runtime.preprocess.s2 import S2Reader
from rasterio.windows import Window

SAFE = "S2B_MSIL2A_20230715T022551_N0509_R046_T50MLA_20230715T045337.SAFE"


@pytest.fixture(scope="module")
def safe_and_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from coalmine.train.synth import make_scene

    root = tmp_path_factory.mktemp("s2zip")
    sc = make_scene(root / "gen", 2023, seed=3, size=128)
    img = root / SAFE / "GRANULE" / "L2A_T50MLA_A000001_20230715T022551" / "IMG_DATA"
    img.mkdir(parents=True)
    for p in sc.s2_dir.iterdir():
        shutil.copy(p, (root / SAFE) if p.name.startswith("MTD_") else img)
    (img / "MSK_CLDPRB_B02.tif").write_bytes((img / next(iter(sorted(
        q.name for q in img.iterdir() if "B02" in q.name)))).read_bytes())  # a mask named after a band
    z = root / f"{SAFE}.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted((root / SAFE).rglob("*")):
            if f.is_file():
                zf.write(f, f"{SAFE}/{f.relative_to(root / SAFE).as_posix()}")
    return root / SAFE, z


def test_zip_reads_like_the_folder(safe_and_zip, tmp_path) -> None:  # noqa: ANN001
    folder, z = safe_and_zip
    with S2Reader(folder) as a, S2Reader(z) as b:
        assert b.kind == "safe zip" and a.kind == "safe"
        assert b.grid == a.grid
        assert (b.offset.value, b.offset.source) == (a.offset.value, a.offset.source)
        assert b.metadata.baseline == a.metadata.baseline == "05.09"
        w = Window(5, 7, 100, 90)
        np.testing.assert_array_equal(b.read(w), a.read(w))
        assert all(str(r.path).startswith("/vsizip/") for r in b.band_refs.values())
        assert not any("MSK_" in str(r.path) for r in b.band_refs.values())
    assert sorted(p.name for p in z.parent.iterdir()) == sorted(["gen", SAFE, z.name])


def test_truncated_zip_refused(safe_and_zip, tmp_path) -> None:  # noqa: ANN001
    _, z = safe_and_zip
    bad = tmp_path / z.name
    bad.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises(InputError) as e:
        S2Reader(bad)
    assert f"--s2 {bad} is not a readable zip" in str(e.value) and "download the product again" in str(e.value)
