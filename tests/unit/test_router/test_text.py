from router.text import learn_boilerplate, paragraphs, routing_text

SHOTS = "Q: 2+2?\nA: 4\n\nQ: capital of France?\nA: Paris"


def _prompts():
    questions = [f"Q: question number {i} about topic {i % 7}?\nA:" for i in range(50)]
    return [f"{SHOTS}\n\n{q}" for q in questions]


def test_paragraphs_split_on_blank_lines():
    assert paragraphs("a\nb\n\n  \n c \n\nd") == ["a\nb", "c", "d"]


def test_learned_boilerplate_strips_shared_exemplars_only():
    prompts = _prompts()
    keys = learn_boilerplate(prompts)
    assert len(keys) == 2  # the two exemplars, not the 50 distinct questions
    assert routing_text(prompts[3], keys) == "Q: question number 3 about topic 3?\nA:"


def test_rare_repeats_are_not_boilerplate():
    prompts = [*_prompts(), "a duplicated question", "a duplicated question"]
    assert len(learn_boilerplate(prompts)) == 2


def test_all_boilerplate_keeps_the_last_paragraph_and_no_keys_is_identity():
    keys = learn_boilerplate(_prompts())
    assert routing_text(SHOTS, keys) == "Q: capital of France?\nA: Paris"
    assert routing_text("anything\n\nat all", frozenset()) == "anything\n\nat all"
