"""Tests of the cloud-side trainer (``deeprec_edge.trainer``).

The trainer is an extra (``pip install "deeprec-edge[trainer]"``: pandas,
scipy, tqdm); without it this whole folder is skipped, with that reason.
None of these tests needs ``../shared/datasets``: every fixture is written
into ``tmp_path`` or generated.
"""
import pytest

_REASON = 'trainer extra not installed (pip install "deeprec-edge[trainer]"): needs {}'
pytest.importorskip("pandas", reason=_REASON.format("pandas"))
pytest.importorskip("scipy", reason=_REASON.format("scipy"))
