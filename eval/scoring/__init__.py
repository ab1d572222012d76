"""Answer scorers: how good one model answer is, in [0, 1], and why.

Reference scorers are pure functions of (answer text, reference) returning a :class:`Score`;
``code`` runs the answer in a sandboxed subprocess. Implementation modules are private; this
package's names are the interface. Only ``eval/`` imports this package: the serving path never
scores.
"""

from __future__ import annotations

from eval.scoring._choice import choice, extract_choice, prompt_options
from eval.scoring._code import Limits, acode, code, extract_code
from eval.scoring._match import match, normalize
from eval.scoring._numeric import Number, extract_number, numeric, parse_number
from eval.scoring._score import Score

__all__ = ["Limits", "Number", "Score", "acode", "choice", "code", "extract_choice",
           "extract_code", "extract_number", "match", "normalize", "numeric", "parse_number",
           "prompt_options"]
