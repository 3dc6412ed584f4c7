"""``show_controls``: user text with its invisible characters made visible.

A bidi control reorders the text around it ("Pay \\u202e1000" reads "Pay 0001"), and a C0 or
C1 control shows as nothing at all, so a page could show a prompt other than the one sent.
Each such character becomes a marked span, ``⟨U+202E⟩``; the rest is escaped as usual.
static/js/lib/text.js does the same for text the pages add themselves: keep the two alike.

Example: ``{{ prompt|show_controls }}`` (text content only, never inside an attribute or a textarea).
"""
from __future__ import annotations

import re

from django import template
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe

register = template.Library()

BIDI_NAMES = {
    "\u061c": "arabic letter mark", "\u200e": "left-to-right mark", "\u200f": "right-to-left mark",
    "\u202a": "left-to-right embedding", "\u202b": "right-to-left embedding", "\u202c": "pop directional formatting",
    "\u202d": "left-to-right override", "\u202e": "right-to-left override", "\u2066": "left-to-right isolate",
    "\u2067": "right-to-left isolate", "\u2068": "first strong isolate", "\u2069": "pop directional isolate",
}
# C0 and C1 controls except \t and \n, and the bidi controls above.
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + "".join(BIDI_NAMES) + "]")


def _marker(match: re.Match) -> str:
    c = match.group()
    code = f"U+{ord(c):04X}"
    what = BIDI_NAMES.get(c, "control character")
    return f'<span class="ctl" title="{code}, {what} (invisible in the text)">⟨{code}⟩</span>'


@register.filter
def show_controls(value) -> str:
    """Escape ``value`` and replace each bidi or control character with a visible marker."""
    return mark_safe(CONTROLS.sub(_marker, str(conditional_escape(value))))
