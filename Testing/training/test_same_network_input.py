"""Training and inference turn the same CT into the same network input (one preprocessing code)."""

import numpy as np
import pytest
import SimpleITK as sitk

from BoneMetSegLib.preprocessing.network_input import network_input
from BoneMetSegLib.preprocessing.pipeline import crop_slices, preprocess
from BoneMetSegLib.preprocessing.types import PreprocessConfig
from training.engine import case_stats
from training.hosts import canonical_1mm


def _ct() -> sitk.Image:
    """A small int16 CT, not on the canonical grid: anisotropic voxels, a flipped axis, a bone block."""
    rng = np.random.default_rng(0)
    hu = rng.normal(-300.0, 250.0, size=(30, 50, 60))
    hu[8:24, 12:40, 15:45] += 900.0  # bone-like block
    image = sitk.GetImageFromArray(np.clip(hu, -1024, 3000).astype(np.int16))
    image.SetSpacing((0.8, 0.9, 2.0))
    image.SetOrigin((-20.0, 15.0, 40.0))
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return image


@pytest.mark.parametrize("config", [PreprocessConfig(), PreprocessConfig(norm_mean=None, norm_std=None)],
                         ids=["fixed-stats", "per-image"])
def test_training_gives_inference_input(config):
    image = _ct()
    pre = preprocess(image, config)
    hu = sitk.GetArrayFromImage(canonical_1mm(image)).astype(np.float32)  # a training case (data_source)
    mean, std = case_stats(hu, config)
    assert (mean, std) == (pre.norm_mean, pre.norm_std)
    x = network_input(hu[crop_slices(pre)], config, mean, std)  # a patch covering inference's crop
    assert x.dtype == pre.array.dtype == np.float32
    np.testing.assert_array_equal(x, pre.array)
