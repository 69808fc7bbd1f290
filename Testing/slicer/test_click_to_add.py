"""Click-to-add on the planted lesion: ``add_lesion_at_point`` through the real ``bonemetseg predict --point``.

Kept apart from test_logic.py: it asserts that the model FINDS the planted lesion at the click,
which depends on the quality of the embedded weights (see the README's status).
"""

from __future__ import annotations

import numpy as np

from test_logic import segment_voxels_lps, tag


def test_click_on_planted_lesion_adds_it_as_next_lesion(slicer_app, scene, ct_case, logic_run):
    from BoneMetSegLogic import BoneMetSegLogic, RunOptions
    from conftest import reload_run

    volume, run = reload_run(slicer_app, ct_case, logic_run)
    logic = BoneMetSegLogic(scene)
    seg, table = logic.load_results(run)
    n_before = seg.GetSegmentation().GetNumberOfSegments()
    lo, hi = (np.asarray(v, float) for v in ct_case["box_lps"])
    click_lps = (lo + hi) / 2
    click_ras = click_lps * [-1, -1, 1]

    sid = logic.add_lesion_at_point(volume, seg, table, tuple(click_ras), RunOptions(device="cpu"))

    assert sid is not None, "the model found no lesion at the centre of the planted lesion"
    segment = seg.GetSegmentation().GetSegment(sid)
    assert segment.GetName() == f"Lesion {n_before + 1}"
    assert seg.GetSegmentation().GetNumberOfSegments() == n_before + 1
    assert tag(segment, "BoneMetSeg.Edited") == "true"
    p_lung = float(tag(segment, "BoneMetSeg.LungOriginProbability"))  # the origin follows the probability
    assert tag(segment, "BoneMetSeg.PredictedOrigin") == ("lung" if p_lung >= 0.5 else "other")
    voxels = segment_voxels_lps(seg, sid)
    assert len(voxels) > 0
    centroid = voxels.mean(axis=0)
    assert np.all(centroid >= lo - 1) and np.all(centroid <= hi + 1), (centroid, lo, hi)
    assert table.GetTable().GetNumberOfRows() == n_before + 1
    assert logic.is_edited(seg)

