import math

import pytest

from eval.scoring import feedback


def test_one_rating_is_the_score():
    score = feedback([0.8])
    assert (score.value, score.detail) == (0.8, "mean of 1 user rating")


def test_several_ratings_of_one_request_average():
    score = feedback([1.0, 0.0, 0.5])
    assert score.value == pytest.approx(0.5) and score.detail == "mean of 3 user ratings"


def test_no_rating_is_no_score():
    assert feedback([]) is None
    assert feedback([math.nan]) is None


def test_ratings_the_endpoint_would_refuse_are_left_out_and_counted():
    # /v1/feedback only takes [0, 1]; a log written some other way may hold anything
    score = feedback([1.0, 5.0, -1.0, math.inf])
    assert score.value == 1.0
    assert score.detail == "mean of 1 user rating; ignored 3 outside [0, 1]"
