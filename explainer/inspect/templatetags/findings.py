"""``code_spans``: a finding's `quoted` names (a JSON path, a tool, a value) set as code, after escaping.

Example: ``{{ finding.text|show_controls|code_spans }}``: the text is escaped first (show_controls), so the
only markup here is the <code> this filter adds around each pair of backticks.
"""
from __future__ import annotations

import re

from django import template
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()
QUOTED = re.compile(r"`([^`]+)`")


@register.filter
def code_spans(text: str) -> SafeString:
    return mark_safe(QUOTED.sub(r"<code>\1</code>", str(conditional_escape(text))))  # noqa: S308 (escaped above)
