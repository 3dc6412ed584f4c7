"""``{% fold "in-the-api" "In the API" [extra classes] %}…{% endfold %}``: one folded section of a stage page, the
same markup on every page (stage.js opens a fold a link points into; the first-screen tests open
each by click and keyboard). A fold whose body renders empty is left out."""
from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

register = template.Library()


class FoldNode(template.Node):
    def __init__(self, nodelist, fold_id, title, extra=None):
        self.nodelist, self.fold_id, self.title, self.extra = nodelist, fold_id, title, extra

    def render(self, context) -> str:
        body = self.nodelist.render(context)
        if not body.strip():
            return ""
        classes = "fold-body" + (f" {self.extra.resolve(context)}" if self.extra else "")
        return format_html('<details class="fold" id="{}">\n  <summary>{}</summary>\n  <div class="{}">{}</div>\n</details>',
                           self.fold_id.resolve(context), self.title.resolve(context), classes, mark_safe(body))


@register.tag(name="fold")
def do_fold(parser, token):
    bits = token.split_contents()
    if len(bits) not in (3, 4):
        raise template.TemplateSyntaxError('usage: {% fold "id" "Title" ["extra classes"] %}…{% endfold %}')
    nodelist = parser.parse(("endfold",))
    parser.delete_first_token()
    return FoldNode(nodelist, *(parser.compile_filter(b) for b in bits[1:]))
