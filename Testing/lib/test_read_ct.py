"""Reading CT files (NIfTI, NRRD, MHA, DICOM folders) with strict validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from BoneMetSegLib.errors import BoneMetSegInputError
from BoneMetSegLib.io.read import ct_from_image, read_ct
from BoneMetSegLib.io.validate import validate_ct


# ----------------------------------------------------------------------------- helpers
def phantom(shape=(30, 40, 40), spacing=(1.0, 1.0, 1.0), dtype=np.int16) -> sitk.Image:
    """Air around a soft-tissue body with a bone rod: a tiny but valid CT (array z, y, x)."""
    z, y, x = np.indices(shape)
    cy, cx = (shape[1] - 1) / 2, (shape[2] - 1) / 2
    r2 = ((y - cy) / (0.4 * shape[1])) ** 2 + ((x - cx) / (0.4 * shape[2])) ** 2
    a = np.full(shape, -1000, dtype=np.float64)
    a[r2 <= 1] = 40
    a[r2 <= 0.1] = 700
    image = sitk.GetImageFromArray(a.astype(dtype))
    image.SetSpacing(spacing)
    image.SetOrigin((-20.0, 15.0, 100.0))
    return image


def write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def expect_error(path_or_image, *words: str) -> str:
    with pytest.raises(BoneMetSegInputError) as info:
        if isinstance(path_or_image, sitk.Image):
            validate_ct(path_or_image, "test image")
        else:
            read_ct(path_or_image)
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), message
    assert message.count(". ") == 0 and message.endswith("."), f"not one sentence: {message}"
    return message


def write_dicom_slices(folder: Path, series_uid: str, z_positions, *, size=32, iops=None,
                       modality="CT", prefix="syn", sizes=None) -> None:
    """Synthetic axial DICOM slices (SimpleITK writer) with the given series UID."""
    folder.mkdir(exist_ok=True)
    for i, z in enumerate(z_positions):
        n = sizes[i] if sizes else size
        a = np.full((1, n, n), 40, np.int16)
        a[0, : n // 4] = -1000
        a[0, n // 2 :, n // 2 :] = 700
        image = sitk.GetImageFromArray(a)
        iop = iops[i] if iops else (1, 0, 0, 0, 1, 0)
        tags = {
            "0008|0060": modality,
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{i + 1}",
            "0020|000d": "1.2.826.0.1.3680043.8.498.1",
            "0020|000e": series_uid,
            "0020|0013": str(i + 1),
            "0020|0032": f"0\\0\\{z}",
            "0020|0037": "\\".join(str(v) for v in iop),
            "0028|0030": "1\\1",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"{prefix}_{i:03d}.dcm"))
        writer.Execute(image)


@pytest.fixture(scope="module")
def example(shared_data) -> Path:
    return shared_data / "totalsegmentator-example"


@pytest.fixture()
def dicom_copy(example, tmp_path) -> Path:
    folder = tmp_path / "series"
    shutil.copytree(example / "ct_dicom_series", folder)
    return folder


def plain_series_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- real data
def test_real_nifti_geometry_and_values_unchanged(example):
    path = example / "ct.nii.gz"
    ct = read_ct(path)
    direct = sitk.ReadImage(str(path))
    assert ct.image.GetSize() == (122, 101, 112)
    np.testing.assert_allclose(ct.image.GetSpacing(), (3.0, 3.0, 3.0), atol=1e-6)
    assert_same_geometry(ct.image, direct)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ct.image), sitk.GetArrayViewFromImage(direct))
    assert ct.warnings == [] and ct.info["format"] == "nifti" and ct.path == str(path)


def test_real_dicom_series_geometry_values_and_rescale(example):
    folder = example / "ct_dicom_series"
    ct = read_ct(folder)
    direct = plain_series_read(folder)
    assert ct.image.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(ct.image.GetSpacing(), (0.9765625, 0.9765625, 2.0), atol=1e-6)
    assert_same_geometry(ct.image, direct)
    hu = sitk.GetArrayViewFromImage(ct.image)
    np.testing.assert_array_equal(hu, sitk.GetArrayViewFromImage(direct))
    assert ct.info["format"] == "dicom" and ct.info["n_slices"] == 20 and ct.info["modality"] == "CT"
    # Rescale Slope/Intercept applied: stored values (pydicom) * slope + intercept == HU read
    lowest = min(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    ds = pydicom.dcmread(lowest)
    assert float(ds.RescaleIntercept) == -1024.0
    stored = ds.pixel_array.astype(np.float64)
    np.testing.assert_array_equal(hu[0], stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


def test_single_dicom_file_reads_its_series(example):
    folder = example / "ct_dicom_series"
    ct = read_ct(sorted(folder.iterdir())[3])
    assert ct.image.GetSize() == (512, 512, 20)


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd", ".nii"])
def test_other_formats_round_trip(example, tmp_path, suffix):
    direct = sitk.ReadImage(str(example / "ct.nii.gz"))
    path = write(direct, tmp_path / f"ct{suffix}")
    ct = read_ct(path)
    assert_same_geometry(ct.image, direct)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ct.image), sitk.GetArrayViewFromImage(direct))


def test_bone_window_patch_without_air_is_accepted(shared_data):
    """A tight real crop (spine lesion patch, almost no air) still counts as CT."""
    ct = read_ct(shared_data / "blds-dev" / "4.nii.gz")
    assert ct.image.GetPixelID() == sitk.sitkFloat32


# ----------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path):
    expect_error(tmp_path / "nothing.nii.gz", "no such file")


def test_truncated_nifti_gz(example, tmp_path):
    data = (example / "ct.nii.gz").read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "truncated")


def test_truncated_nifti_uncompressed(example, tmp_path):
    full = write(sitk.ReadImage(str(example / "ct.nii.gz")), tmp_path / "full.nii")
    path = tmp_path / "cut.nii"
    path.write_bytes(full.read_bytes()[:-1000])
    expect_error(path, "truncated")


def test_random_bytes_nrrd(tmp_path):
    path = tmp_path / "noise.nrrd"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    expect_error(path, "corrupt")


def test_truncated_nrrd(example, tmp_path):
    full = write(sitk.ReadImage(str(example / "ct.nii.gz")), tmp_path / "full.nrrd")
    path = tmp_path / "cut.nrrd"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    expect_error(path, "corrupt")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mha"
    path.write_bytes(b"")
    expect_error(path, "empty")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG....")
    expect_error(path, "unsupported")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    expect_error(tmp_path, "no DICOM series")


# ----------------------------------------------------------------------------- bad images
def test_2d_image(tmp_path):
    image = sitk.GetImageFromArray(np.full((64, 64), -1000, np.int16))
    expect_error(write(image, tmp_path / "slice.nrrd"), "2D")


def test_4d_image(tmp_path):
    image = sitk.JoinSeries([phantom()] * 3)  # three time points
    assert image.GetDimension() == 4
    expect_error(write(image, tmp_path / "dynamic.nii.gz"), "4D")


def test_rgb_image(tmp_path):
    array = np.zeros((20, 20, 20, 3), np.uint8)
    image = sitk.GetImageFromArray(array, isVector=True)
    expect_error(write(image, tmp_path / "rgb.nrrd"), "3 values per voxel")


def test_single_slice_volume(tmp_path):
    image = sitk.GetImageFromArray(sitk.GetArrayFromImage(phantom())[:1])
    expect_error(write(image, tmp_path / "one.nrrd"), "single voxel")


def test_zero_size_image(tmp_path):
    expect_error(sitk.Image([0, 0, 0], sitk.sitkInt16), "empty")
    header = "ObjectType = Image\nNDims = 3\nDimSize = 10 10 0\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    (tmp_path / "zero.mha").write_text(header)
    expect_error(tmp_path / "zero.mha", "empty")


def test_constant_volume(tmp_path):
    image = sitk.GetImageFromArray(np.full((30, 40, 40), -1000, np.int16))
    expect_error(write(image, tmp_path / "air.nii.gz"), "same value")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf(tmp_path, bad):
    array = sitk.GetArrayFromImage(phantom()).astype(np.float32)
    array[5, 6, 7] = bad
    image = sitk.GetImageFromArray(array)
    expect_error(write(image, tmp_path / "bad.nrrd"), "NaN or infinite")


def _as(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def test_not_hu_mr_like(tmp_path):
    """MR-like: 0 background, tissue 300..4000, no negative values."""
    ref = phantom()
    hu = sitk.GetArrayFromImage(ref).astype(np.float32)
    mr = np.where(hu < -500, 0, 1500 + hu * 3).astype(np.uint16)
    expect_error(write(_as(ref, mr), tmp_path / "mr.nii.gz"), "Hounsfield", "MR")


def test_not_hu_ct_without_rescale_intercept(tmp_path):
    ref = phantom()
    stored = (sitk.GetArrayFromImage(ref).astype(np.int32) + 1024).astype(np.uint16)
    expect_error(write(_as(ref, stored), tmp_path / "raw.nrrd"), "rescale intercept")


@pytest.mark.parametrize("kind", ["zscore", "unit"])
def test_not_hu_normalised(tmp_path, kind):
    ref = phantom()
    hu = sitk.GetArrayFromImage(ref).astype(np.float32)
    hu += np.random.default_rng(1).normal(0, 10, hu.shape).astype(np.float32)
    data = (hu - hu.mean()) / hu.std() if kind == "zscore" else (hu - hu.min()) / np.ptp(hu)
    expect_error(write(_as(ref, data.astype(np.float32)), tmp_path / f"{kind}.nii.gz"), "not CT in Hounsfield")


def test_thick_slices_refused_thin_accepted(tmp_path):
    expect_error(write(phantom(spacing=(0.8, 0.8, 6.0)), tmp_path / "thick.nrrd"), "coarser than 5 mm")
    ct = read_ct(write(phantom(spacing=(0.8, 0.8, 5.0)), tmp_path / "five.nrrd"))
    assert ct.image.GetSpacing()[2] == 5.0


def test_volume_too_small_for_bone(tmp_path):
    expect_error(write(phantom(shape=(10, 40, 40)), tmp_path / "tiny.nrrd"), "too small to hold bone")


def test_synthetic_phantom_is_valid_and_pixel_types(tmp_path):
    ct = read_ct(write(phantom(dtype=np.int32), tmp_path / "p.nii.gz"))
    assert ct.image.GetPixelID() == sitk.sitkInt16 and ct.warnings == []
    ct = read_ct(write(phantom(dtype=np.float64), tmp_path / "p.nrrd"))
    assert ct.image.GetPixelID() == sitk.sitkFloat32


def test_image_from_memory_and_oblique_warning():
    image = phantom()
    angle = np.radians(10)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    ct = ct_from_image(image, "Slicer node CT")
    assert ct.image.GetDirection() == image.GetDirection()
    assert len(ct.warnings) == 1 and "oblique" in ct.warnings[0] and "Slicer node CT" in ct.warnings[0]
    expect_error(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32), "values per voxel")


# ----------------------------------------------------------------------------- DICOM folders
def test_dicom_missing_slice(dicom_copy):
    files = sorted(dicom_copy.iterdir(), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    files[9].unlink()
    expect_error(dicom_copy, "not uniform", "about 1 missing slice")


def test_dicom_mixed_series_picks_largest_and_warns(dicom_copy, example):
    write_dicom_slices(dicom_copy, "1.2.826.0.1.3680043.8.498.77", [0.0, 1.0, 2.0, 3.0])
    ct = read_ct(dicom_copy)
    assert ct.image.GetSize() == (512, 512, 20)
    assert_same_geometry(ct.image, plain_series_read(example / "ct_dicom_series"))
    assert ct.info["n_series"] == 2
    assert len(ct.warnings) == 1
    assert "2 DICOM series" in ct.warnings[0] and "20 slices" in ct.warnings[0]
    assert "ignoring 1 other series" in ct.warnings[0]


def test_dicom_largest_synthetic_series_is_chosen(tmp_path):
    folder = tmp_path / "two"
    write_dicom_slices(folder, "1.2.826.0.1.3680043.8.498.11", np.arange(20.0), prefix="a")
    write_dicom_slices(folder, "1.2.826.0.1.3680043.8.498.12", np.arange(24.0), prefix="b")
    ct = read_ct(folder)
    assert ct.image.GetSize() == (32, 32, 24)
    assert ct.info["series_uid"] == "1.2.826.0.1.3680043.8.498.12"
    assert "1.2.826.0.1.3680043.8.498.12" in ct.warnings[0]


def test_dicom_one_series_with_different_sizes(tmp_path):
    folder = tmp_path / "sizes"
    write_dicom_slices(folder, "1.2.826.0.1.3680043.8.498.21", np.arange(20.0), sizes=[32] * 10 + [24] * 10)
    expect_error(folder, "different image sizes")


def test_dicom_one_series_with_different_orientations(tmp_path):
    folder = tmp_path / "orient"
    iops = [(1, 0, 0, 0, 1, 0)] * 18 + [(1, 0, 0, 0, 0, -1)] * 2
    write_dicom_slices(folder, "1.2.826.0.1.3680043.8.498.31", np.arange(20.0), iops=iops)
    expect_error(folder, "different orientations")


def test_dicom_duplicate_positions(tmp_path):
    folder = tmp_path / "dup"
    write_dicom_slices(folder, "1.2.826.0.1.3680043.8.498.41", [*np.arange(20.0), 5.0])
    expect_error(folder, "share their position")


def test_dicom_not_ct_modality(tmp_path):
    folder = tmp_path / "mr"
    write_dicom_slices(folder, "1.2.826.0.1.3680043.8.498.51", np.arange(20.0), modality="MR")
    expect_error(folder, "is MR, not CT")
