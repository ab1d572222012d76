import pytest

from eval.scoring import choice, extract_choice, prompt_options

FRIDGE = {"A": "The refrigerator door is smooth.", "B": "The refrigerator door contains iron.",
          "C": "The refrigerator door is a good conductor.",
          "D": "The refrigerator door has electric wires in it."}


@pytest.mark.parametrize(("answer", "letter", "how"), [
    # bare letters, as most RouterBench answers are ("B", "B\n", "A)")
    ("C", "C", "bare letter"),
    ("C)", "C", "bare letter"),
    ("B\n", "B", "bare letter"),
    ("(B)", "B", "bare letter"),
    ("**A**", "A", "bare letter"),
    ("  'D'  ", "D", "bare letter"),
    ("[B]", "B", "bare letter"),
    ("A.", "A", "bare letter"),
    # answer phrases
    ("The answer is B.", "B", "answer phrase"),
    ("Answer: D", "D", "answer phrase"),
    ("**Answer:** C", "C", "answer phrase"),
    ("The correct answer is (C).", "C", "answer phrase"),
    ("Let me think. Magnets stick to iron, so the answer is (B).", "B", "answer phrase"),
    ("I'd go with D", "D", "answer phrase"),
    ("The answer is B. Option A is wrong because the door is smooth.", "B", "answer phrase"),
    # a model continuing the 5-shot prompt answers first, then invents the next question
    ("Answer: B\n\nWhich gas do plants take in?\nA) oxygen\nB) carbon dioxide\nAnswer: A",
     "B", "answer phrase"),
    # leading letter
    ("A) The refrigerator door is smooth.", "A", "leading letter"),
    ("D (eyeglasses bend light)", "D", "leading letter"),
    ("D (", "D", "leading letter"),  # gpt-3.5-turbo, cut off at max tokens
    ("B because iron is magnetic", "B", "leading letter"),
    ("C\nThe door is a conductor.", "C", "leading letter"),
    # restated option text, no letter
    ("The refrigerator door contains iron.", "B", "option text"),
    ("the refrigerator door has electric wires in it", "D", "option text"),
    # a letter in option form elsewhere
    ("It contains iron, so B) is right", "B", "letter in option form"),
    ("Option B is correct.", "B", "letter in option form"),
])
def test_reads_the_letter_of_real_answer_shapes(answer, letter, how):
    assert extract_choice(answer, "ABCD", FRIDGE) == (letter, how)


@pytest.mark.parametrize("answer", ["A or B", "B or C", "Either A or B", "A/B",
                                    "Both A and C are correct.", "Answer: A or B"])
def test_two_letters_offered_as_alternatives_are_refused(answer):
    letter, how = extract_choice(answer, "ABCD")
    assert letter is None and how.startswith("ambiguous")
    score = choice(answer, "A")
    assert score.value == 0.0 and "ambiguous" in score.detail


@pytest.mark.parametrize("answer", [
    "I do",  # claude-v2's refusals, cut off ("I do not have enough context...")
    "Unfortunately I",
    "I don't know",
    "",
    "A questioning",  # restates the question "A questioning mind would...": not a pick
    "A hypothesis",
])
def test_refusals_and_restated_questions_pick_nothing(answer):
    assert extract_choice(answer, "ABCD", FRIDGE)[0] is None
    assert choice(answer, "A", choices=FRIDGE).value == 0.0


def test_a_capital_a_or_i_followed_by_a_word_is_the_article_or_the_pronoun():
    # "B because ..." opens with a pick; "A chart" is the article (and here option A's text)
    assert extract_choice("A chart", "ABCD") == (None, "no letter found")
    chart = {"A": "a chart", "B": "a graph", "C": "a diagram", "D": "a map"}
    assert extract_choice("A chart", "ABCD", chart) == ("A", "option text")
    assert extract_choice("I think C", "ABCD") == ("C", "answer phrase")
    assert extract_choice("I think it's A", "ABCD") == ("A", "answer phrase")
    assert extract_choice("B because iron is magnetic", "ABCD")[0] == "B"


def test_a_restated_number_option_counts_with_the_prompt_options():
    # mixtral on ARC: "Earth orbits the Sun once a year. About how many times does the moon
    # orbit Earth in a year?" answered "13"; RouterBench's grader wanted the letter
    options = {"A": "28", "B": "13", "C": "1", "D": "7"}
    assert choice("13", "B", choices=options).value == 1.0
    assert choice("13", "B").value == 0.0  # without the options there is nothing to match


def test_winogrande_answer_restating_a_name():
    options = {"A": "Kyle", "B": "Logan"}
    assert choice("Logan", "B", choices=options).detail == "extracted B (option text), reference B"
    assert choice("Kyle", "B", choices=options).value == 0.0
    # both names in a restated sentence: no pick
    said = "Kyle doesn't wear leg warmers to bed, while Logan almost always does."
    assert extract_choice(said, "AB", options)[0] is None


def test_score_detail_says_what_was_extracted():
    assert choice("The answer is C.", "C").detail == "extracted C (answer phrase), reference C"
    assert choice("I do", "C").detail == "no letter found; reference C"
    wrong = choice("B\n", "C")
    assert wrong.value == 0.0 and wrong.detail == "extracted B (bare letter), reference C"


def test_allowed_letters_come_from_the_reference():
    # Winogrande has two options: an "C" is outside them, whatever it says
    assert choice("C", "A", choices={"A": "home", "B": "house"}).detail.startswith(
        "extracted C (bare letter), not one of AB")
    assert choice("C", "B", letters="AB").value == 0.0
    # without options the letters run A..D, or A up to a later reference letter
    assert choice("E", "B").value == 0.0 and "not one of ABCD" in choice("E", "B").detail
    assert choice("F", "F").value == 1.0
    assert choice("E", ["B", "E"]).value == 1.0  # several accepted letters


def test_a_reference_must_be_a_letter():
    with pytest.raises(ValueError, match="letter"):
        choice("A", "home")
    with pytest.raises(ValueError, match="letter"):
        choice("A", [])


def test_prompt_options_are_the_last_question_of_a_few_shot_prompt():
    prompt = (
        "Please answer with the letter of the correct answer.\n\n"
        "John moved the couch from the garage to the backyard to create space. The _ is small.\n"
        "A) garage\nB) backyard\n"
        'Print only a single choice  from "A" or "B" without explanation. Answer:\nA\n\n'
        "The drink was rich in caffeine and low in sugar because the _ was not enough to keep "
        "the drinker awake.\nA) caffeine\nB) sugar\n"
        'Print only a single choice  from "A" or "B" without explanation. Answer:')
    assert prompt_options(prompt) == {"A": "caffeine", "B": "sugar"}
    arc = ("Which is the best example of an object that refracts light?\nA) television sets\n"
           "B) silver bowl\nC) mirrors\nD) eyeglasses\n"
           'Print only a single choice  from "A" or "B" or "C" or "D" without explanation.\n'
           "Answer:")
    assert prompt_options(arc) == {"A": "television sets", "B": "silver bowl", "C": "mirrors",
                                   "D": "eyeglasses"}
    assert prompt_options("What is 2 + 2?") == {}


def test_an_option_text_inside_a_longer_one_is_not_a_second_pick():
    options = {"A": "iron", "B": "iron oxide", "C": "copper"}
    assert extract_choice("Rust is iron oxide.", "ABC", options) == ("B", "contains option text")
    assert extract_choice("Not copper but iron.", "ABC", options)[1].startswith("ambiguous")
