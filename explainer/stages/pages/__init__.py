"""One module per stage page: ``explainer/stages/pages/<slug>.py``.

A stage appears on the walk-through (rail, prev/next, arrow keys) as soon as its module
exists. Each module provides:

``OPTIONS``
    dict of view options read from the query string, e.g. ``{"layer": IntOption(0, 0, 3)}``
    (see ``explainer/stages/options.py``); bad values give the user a 400 page with the message.

``context(page) -> dict``
    extra template context. ``page`` is a ``StagePage`` (``explainer/stages/views.py``):
    ``page.scenario`` (lifecycle.scenario.Scenario), ``page.opts`` (parsed options),
    ``page.run`` (lifecycle.engine.Run: body, request, error, prompt_ids, prompt_tokens,
    events, steps with candidates and raw logits, done), ``page.engine`` (model, tokenizer),
    and ``page.url(slug=None, scenario=None, **opts)`` for links that keep the scenario.
    Raise ``OptionError`` for an option that is out of range once the run is known.

``DATA`` (optional)
    ``{element id: context key}``: what the page embeds for its script and ``/learn/<slug>/data`` serves.

``recap(page) -> dict`` (optional, stages on the request path)
    the stage's figures for the recap's row and card, ``templates/stages/recap/<slug>.html``.

The template is ``templates/stages/<slug>.html``; it extends ``stages/_stage.html`` and fills
the blocks ``explain`` (teaching text), ``visual``, ``stage_head`` (extra CSS) and
``stage_scripts``. Data reaches JavaScript through ``json_script``; scripts are ES modules in
``static/js/stages/<slug>.js`` and may import ``setViewOption`` and ``readJSON`` from
``static/js/stage.js`` and the SVG and colour helpers from ``static/js/lib/``.
"""
