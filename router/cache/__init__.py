"""The response cache: an exact tier keyed by the canonical request, and (coming) a semantic
tier over the encoder's vectors of the last user turn, both scoped so an entry only ever
answers the tenant (and user) and the conversation it was made for."""

from router.cache.exact import Entry, ExactCache, entry_id
from router.cache.keys import Verdict, cacheable, exact_key, last_user_text, scope_key

__all__ = ["Entry", "ExactCache", "Verdict", "cacheable", "entry_id", "exact_key",
           "last_user_text", "scope_key"]
