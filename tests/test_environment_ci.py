"""In CI the suite must really run on PostgreSQL; a silent fallback would hide bugs."""

from __future__ import annotations

import os

import pytest
from django.db import connection


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI promises PostgreSQL")
def test_ci_runs_on_postgresql() -> None:
    assert connection.vendor == "postgresql", "CI must run the suite against PostgreSQL"
