"""A score run is named after what it scores: the month, and the colour when not green."""

from steps import score


def test_score_run_names_say_what_was_scored():
    assert score.run_name("green", "2023-03") == "score 2023-03"
    assert score.run_name("yellow", "2023-03") == "score yellow 2023-03"


def test_a_range_of_months_is_named_as_given():
    assert score.run_name("green", "2023-01..2023-03") == "score 2023-01..2023-03"
    assert score.run_name("yellow", "2023-01..2023-03") == "score yellow 2023-01..2023-03"
