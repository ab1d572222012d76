import pytest

from eval.scoring import extract_number, numeric, parse_number

# A GSM8K answer in Mixtral's style (RouteLLM's gsm8k_responses), with the calculator marks
MIXTRAL = ("Janet starts with 16 eggs per day.\nShe eats 3 for breakfast, so she has 16 - 3 = 13 "
           "eggs left.\nShe uses 4 for baking, so she has 13 - 4 = 9 eggs left.\nShe sells these "
           "9 eggs at the farmers' market for 9 * $2 = $<<9*2=18>>18.\n#### 18")
GPT4 = ("She lays 16 eggs per day, so the remainder that she sells is 16 - 7 = 9 eggs.\n"
        "She sells each egg for $2, so she makes 9 * $2 = $18 every day at the farmers' market.")


@pytest.mark.parametrize(("answer", "value", "how"), [
    (MIXTRAL, 18, "#### marker"),
    ("#### 1,234", 1234, "#### marker"),
    ("The answer is $1,234.50", 1234.5, "answer phrase"),
    ("Final answer: 3.5 hours", 3.5, "answer phrase"),
    ("The answer is -7.", -7, "answer phrase"),
    ("Answer: -$5", -5, "answer phrase"),
    ("so the total is \\boxed{\\frac{5}{2}}", 2.5, "boxed"),
    ("= 18", 18, "last number"),
    (GPT4, 18, "last number"),  # "... 9 * $2 = $18 every day at the farmers' market."
    ("so x = 5/2", 2.5, "last number"),
    ("She has 18 apples.", 18, "last number"),
    ("1.5.", 1.5, "last number"),
])
def test_final_number(answer, value, how):
    got, found_how = extract_number(answer)
    assert got is not None and got.value == value and found_how == how


def test_calculator_annotations_are_not_numbers():
    # Mixtral's GSM8K style: "90 - 144 = -<<90-144=-54>>54 miles", then prose
    text = "he is now 90 - 144 = -<<90-144=-54>>54 miles from his house"
    assert extract_number(text)[0].value == -54


def test_the_last_answer_phrase_wins_over_earlier_ones():
    text = "The answer is 12 for the first part. Adding 6 more, the answer is 18. Check: 3 * 6."
    assert extract_number(text)[0].value == 18


def test_percentages_match_either_form():
    assert numeric("It is 25%.", "25").value == 1.0
    assert numeric("It is 25%.", "0.25").value == 1.0
    assert numeric("It is 25%.", "2.5").value == 0.0


def test_tolerance():
    assert numeric("about 3.3333334", "10/3").value == 1.0
    assert numeric("3.33", "10/3").value == 0.0
    assert numeric("3.33", "10/3", rel_tol=1e-2).value == 1.0


def test_score_details():
    assert numeric(MIXTRAL, "18").detail == "extracted 18 (#### marker), reference 18"
    assert numeric("I cannot tell.", "18").detail == "no number found; reference 18"
    wrong = numeric("The answer is 17", "18")
    assert wrong.value == 0.0 and wrong.detail == "extracted 17 (answer phrase), reference 18"


def test_parse_number():
    assert parse_number("$1,234.50").value == 1234.5
    assert parse_number("-5/2").value == -2.5
    assert parse_number("40%").percent
    assert parse_number("abc") is None
    assert parse_number("1/0") is None
    with pytest.raises(ValueError, match="number"):
        numeric("18", "eighteen")
