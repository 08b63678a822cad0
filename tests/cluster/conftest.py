"""The cluster suite shares the conformance suite's skip policy (see skip_policy.py there)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "conformance"))

from skip_policy import pytest_configure, pytest_runtest_makereport  # noqa: E402,F401
