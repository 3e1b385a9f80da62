"""Names are matched whole: with re.match and "$", a trailing newline would pass."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ork_executor_bigquery.models import BigQueryConfig


@pytest.mark.parametrize("labels", [{"team\n": "x"}, {"team": "x\n"}])
def test_a_label_with_a_trailing_newline_is_refused(labels: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="label"):
        BigQueryConfig(project="p", labels=labels)


def test_a_dataset_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValidationError, match="default_dataset"):
        BigQueryConfig(project="p", default_dataset="sales\n")
    assert BigQueryConfig(project="p", default_dataset="sales").default_dataset
