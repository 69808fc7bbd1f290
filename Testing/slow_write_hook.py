"""A ``sitecustomize`` that slows a ``bonemetseg`` child process down while it writes its outputs.

Put on PYTHONPATH (``hook_environment``), it wraps ``slicerio.write_segmentation``: after the
``.seg.nrrd`` temporary file is written the child prints the progress line
``{"progress": 1.0, "message": "test: seg written"}`` and sleeps, so a test can signal or cancel
it while its outputs are being written.
"""

from __future__ import annotations

import os
from pathlib import Path

SEG_WRITTEN = "test: seg written"
HOOK = f'''
import os, time
if os.environ.get("BONEMETSEG_TEST_SLOW_WRITE"):
    import slicerio
    _real = slicerio.write_segmentation
    def _slow(*args, **kwargs):
        _real(*args, **kwargs)
        print('{{"progress": 1.0, "message": "{SEG_WRITTEN}"}}', flush=True)
        time.sleep(60)
    slicerio.write_segmentation = _slow
'''


def hook_environment(folder: Path, environ=os.environ) -> dict:
    """Write the hook into ``folder``; the variables (PYTHONPATH, switch) that make a child load it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(HOOK)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), environ.get("PYTHONPATH")])),
            "BONEMETSEG_TEST_SLOW_WRITE": "1"}
