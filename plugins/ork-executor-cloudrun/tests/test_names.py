"""Job names are matched whole: with re.match and "$", a trailing newline would pass."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ork_executor_cloudrun.executor import CloudRunTask


@pytest.mark.parametrize("job", ["nightly\n", "projects/p/locations/r/jobs/nightly\n"])
def test_a_job_name_with_a_trailing_newline_is_refused(job: str) -> None:
    with pytest.raises(ValidationError, match="is not a Cloud Run job name"):
        CloudRunTask(job=job)
    assert CloudRunTask(job=job.strip()).job == job.strip()
