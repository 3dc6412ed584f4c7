"""The tutorial: its lessons, the server-side check of every task (done and not done, for real runs),
the lesson path and the start links, and bad input (unknown lesson, altered link, bad options)."""
import json
from urllib.parse import parse_qs, urlencode, urlparse

import numpy as np
import pytest

from explainer.lifecycle.scenario import DEFAULT_PROMPT, Scenario, ScenarioError
from explainer.stages.pages.caching import LONG_SYSTEM
from explainer.stages.pages.tools import OWN_EXAMPLE
from explainer.stages.registry import STAGES
from explainer.stages.runs import codec, engine, run_of
from explainer.tutorial.lessons import DATA, LessonDataError, by_id, lessons, load
from tests.urls import stage_data

POSTGRES = [{"role": "user", "content": "What is a PostgreSQL index?"}]
OWN_TOOL = {"name": "lookup_index", "description": "Look up the indexes of a table.",
            "input_schema": {"type": "object", "properties": {"table": {"type": "string"}}, "required": ["table"]}}


def check(client, lesson_id, scenario=None, **opts):
    q = {}
    if scenario is not None:
        blob = codec().encode(scenario)
        if blob:
            q["s"] = blob
    q.update({k: str(v) for k, v in opts.items()})
    r = client.get(f"/tutorial/check/{lesson_id}" + ("?" + urlencode(q) if q else ""))
    assert r.status_code == 200, r.content
    data = r.json()
    assert set(data) == {"lesson", "done", "message", "next_url"} and data["lesson"] == lesson_id and data["message"]
    return data


def start(lesson_id) -> Scenario:
    return by_id()[lesson_id].start_scenario()


# ---- the lessons ----------------------------------------------------------------------------------------

def test_there_is_one_lesson_per_stage_in_walk_through_order():
    assert [x.stage_slug for x in lessons()] == [s.slug for s in STAGES]
    assert [x.number for x in lessons()] == list(range(1, len(STAGES) + 1))
    assert len({x.id for x in lessons()}) == len(STAGES)


@pytest.mark.parametrize("lesson_id", [x.id for x in lessons()])
@pytest.mark.slow
def test_no_lesson_is_done_where_it_starts(client, lesson_id):
    """The check can fail: at its own start, every task is still to do."""
    r = client.get(f"/tutorial/start/{lesson_id}")
    assert r.status_code == 302
    target = urlparse(r["Location"])
    assert target.fragment == f"tutorial={lesson_id}"
    assert target.path == f"/learn/{by_id()[lesson_id].stage_slug}/"
    page = client.get(target.path + ("?" + target.query if target.query else ""))
    assert page.status_code == 200
    data = client.get(f"/tutorial/check/{lesson_id}" + ("?" + target.query if target.query else "")).json()
    assert data["done"] is False and data["message"]


def test_a_start_link_carries_the_lesson_s_scenario_and_options(client):
    r = client.get("/tutorial/start/cache-hit")
    q = parse_qs(urlparse(r["Location"]).query)
    assert q["clock"] == ["10"] and "s" not in q  # the default scenario travels as no blob at all
    r = client.get("/tutorial/start/temperature")
    q = parse_qs(urlparse(r["Location"]).query)
    assert codec().decode(q["s"][0]) == Scenario(messages=POSTGRES, temperature=0.8, max_tokens=32)


def _data(tmp_path, change):
    raw = json.loads(DATA.read_text(encoding="utf-8"))
    change(raw["lessons"])
    p = tmp_path / "lessons.json"
    p.write_text(json.dumps(raw), encoding="utf-8")
    return p


@pytest.mark.parametrize("change, words", [
    (lambda ls: ls.reverse(), "order"),
    (lambda ls: ls.insert(1, {**ls[1], "id": "second-compose"}), "at most one each"),
    (lambda ls: ls[0].update(stage="nowhere"), "not a stage"),
    (lambda ls: ls[0]["check"].update(kind="guess"), "no check"),
    (lambda ls: ls[1].update(id=ls[0]["id"]), "unique"),
    (lambda ls: ls[0].update(id="Bad Id!"), "id"),
    (lambda ls: ls[0]["start"]["options"].update(nope=1), "no option"),
    (lambda ls: ls[0].pop("hint"), "hint"),
    (lambda ls: ls[0].update(bundled_only=True), "bundled_only"),
])
def test_bad_lesson_data_is_refused_at_load(tmp_path, change, words):
    with pytest.raises(LessonDataError, match=words):
        load(_data(tmp_path, change))


def test_a_stage_without_a_lesson_is_fine(tmp_path):
    """A new stage joins the walk-through without a lesson: the path simply skips it."""
    loaded = load(_data(tmp_path, lambda ls: ls.pop(3)))
    assert [x.number for x in loaded] == list(range(1, len(loaded) + 1)) and "tokenize" not in [x.stage_slug for x in loaded]


def test_a_start_scenario_the_codec_refuses_is_refused_at_load(tmp_path):
    with pytest.raises(ScenarioError):
        load(_data(tmp_path, lambda ls: ls[0]["start"]["scenario"].update(temperature=3)))


# ---- the checks, each both ways ------------------------------------------------------------------------

@pytest.mark.slow
def test_temperature_word(client):
    s = start("temperature")
    word = by_id()["temperature"].params["word"]  # chosen for the shipped weights (lessons.json)
    assert word not in run_of(s).text.lower()
    low = s.replace(temperature=0.3)
    assert word in run_of(low).text.lower()  # the reference: the engine's own reply
    assert check(client, "temperature", low)["done"] is True
    mid = s.replace(temperature=0.6)
    assert word not in run_of(mid).text.lower()
    assert check(client, "temperature", mid)["done"] is False
    other = check(client, "temperature", low.replace(seed=5))
    assert other["done"] is False and "seed" in other["message"]
    other = check(client, "temperature", low.replace(max_tokens=40))
    assert other["done"] is False and "max_tokens" in other["message"]


@pytest.mark.slow
def test_temperature_word_agrees_with_the_reply_at_every_slider_step(client):
    s = start("temperature")
    word = by_id()["temperature"].params["word"]
    for i in range(21):
        t = round(i * 0.05, 2)
        if t == s.temperature:
            continue
        says = word in run_of(s.replace(temperature=t)).text.lower()
        assert check(client, "temperature", s.replace(temperature=t))["done"] is says, t


@pytest.mark.slow
def test_prefill(client):
    s = start("prefill")
    done = check(client, "prefill", s.replace(messages=[*POSTGRES, {"role": "assistant", "content": "An index is"}]))
    assert done["done"] is True and "An index is" in done["message"]
    empty = check(client, "prefill", s.replace(messages=[*POSTGRES, {"role": "assistant", "content": "  "}]))
    assert empty["done"] is False and "empty" in empty["message"]
    alone = s.replace(messages=[{"role": "assistant", "content": "An index is"}])
    assert run_of(alone).error is not None
    refused = check(client, "prefill", alone)
    assert refused["done"] is False and "refuse" in refused["message"]


@pytest.mark.slow
def test_never_admitted(client):
    # done only once the learner has seen the gateway refuse it (the page reports "never-429")
    unseen = check(client, "never-admitted", Scenario(max_tokens=2001))
    assert unseen["done"] is False and "Fire request" in unseen["message"]
    assert check(client, "never-admitted", Scenario(max_tokens=2001), seen="never-429")["done"] is True
    assert check(client, "never-admitted", Scenario(max_tokens=2000), seen="never-429")["done"] is False
    assert check(client, "never-admitted", Scenario(max_tokens=2000))["done"] is False  # the whole bucket: it can wait
    msg = check(client, "never-admitted", Scenario())["message"]
    assert "requests bucket" in msg
    invalid = check(client, "never-admitted", Scenario(max_tokens=3000, messages=[{"role": "assistant", "content": "Hi"}]))
    assert invalid["done"] is False and "format check" in invalid["message"]


def test_vocabulary_ratio(client):
    tok = engine().tokenizer
    n_model = len(run_of(Scenario()).prompt_ids)
    assert check(client, "small-vocabulary", Scenario(), merges=0)["done"] is True
    assert check(client, "small-vocabulary", Scenario())["done"] is False
    assert check(client, "small-vocabulary", Scenario(), merges=len(tok.merges))["done"] is False
    # the reference: the context re-encoded with the first N merges, against 2x the model's count
    from explainer.stages.pages.tokenize import build_context
    req = run_of(Scenario()).request
    ctx = build_context(tok, req.system, [(m.role, m.text) for m in req.messages])
    assert len(ctx.tokens_at(tok.model_merges)) == n_model
    for n in (0, 16, 64, 256, 1024):
        twice = len(ctx.tokens_at(n)) >= 2 * n_model
        assert check(client, "small-vocabulary", Scenario(), merges=n)["done"] is twice, n


def test_previous_token_head(client):
    s = start("previous-token-head")
    ids = run_of(s).prompt_ids
    out = engine().model.forward(ids, want=("block_*_attn_head_*_weights",))
    c = engine().model.config
    # the reference, written as a plain loop over positions
    mean = np.zeros((c.n_layer, c.n_head))
    for layer in range(c.n_layer):
        for head in range(c.n_head):
            w = out.trace[f"block_{layer}_attn_head_{head}_weights"]
            mean[layer, head] = sum(w[i, i - 1] for i in range(1, len(ids))) / (len(ids) - 1)
    best = np.unravel_index(np.argmax(mean), mean.shape)
    assert check(client, "previous-token-head", s, layer=best[0], head=best[1])["done"] is True
    for layer in range(c.n_layer):
        for head in range(c.n_head):
            if (layer, head) != best:
                assert check(client, "previous-token-head", s, layer=layer, head=head)["done"] is False


@pytest.mark.slow
def test_different_draw_agrees_with_the_engine(client):
    """At step 1 (index 0) the slider's temperature t draws what the engine really draws with temperature t."""
    s = Scenario()
    drawn = run_of(s).steps[0]["token"]
    seen = set()
    for t in (0.0, 0.3, 0.5, 0.7, 0.9, 1.0):
        other = run_of(s.replace(temperature=t)).steps[0]["token"]
        verdict = check(client, "same-dice", s, t=t)
        assert verdict["done"] is (other != drawn), t
        seen.add(verdict["done"])
    assert seen == {True, False}


def test_different_draw_at_a_later_step(client):
    assert check(client, "same-dice", Scenario(), step=1)["done"] is False
    assert check(client, "same-dice", Scenario(), step=1, t=0.3)["done"] is False
    assert check(client, "same-dice", Scenario(), step=1, t=2)["done"] is True


def test_stop_sequence(client):
    s = start("stop-sequence")
    word = [w for w in run_of(s).text.split() if w.isalpha() and len(w) > 4][1]  # a word of the recorded reply
    done = check(client, "stop-sequence", s.replace(stop_sequences=[word]))
    assert done["done"] is True and word in done["message"]
    assert check(client, "stop-sequence", s)["done"] is False
    missing = check(client, "stop-sequence", s.replace(stop_sequences=["zebra-crossing"]))
    assert missing["done"] is False and "never contains" in missing["message"]


def test_context_limit(client):
    from explainer.stages.pages.conversation import CANNED_TURNS

    history = list(Scenario().messages)
    verdicts = []
    for turn in CANNED_TURNS:  # what Send does: the reply, then the next message
        run = run_of(Scenario(messages=history))
        verdicts.append((run.error is not None, check(client, "context-limit", Scenario(messages=history))["done"]))
        if run.error:
            break
        history += [{"role": "assistant", "content": run.text}, {"role": "user", "content": turn}]
    assert verdicts[-1] == (True, True)
    assert all(v == (False, False) for v in verdicts[:-1])
    other = check(client, "context-limit", Scenario(messages=[{"role": "assistant", "content": "Hi"}]))
    assert other["done"] is False and "not the window" in other["message"]


@pytest.mark.slow
def test_cache_hit(client):
    long = Scenario(system=LONG_SYSTEM)
    assert check(client, "cache-hit", long, clock=10, ttl="1h")["done"] is True
    assert check(client, "cache-hit", long, clock=10, bp="system:1h")["done"] is True
    expired = check(client, "cache-hit", long, clock=10)
    assert expired["done"] is False and "expired" in expired["message"]
    soon = check(client, "cache-hit", long, clock=3)
    assert soon["done"] is False and "at least 10" in soon["message"]
    short = check(client, "cache-hit", Scenario(), clock=10, ttl="1h", system="own")
    assert short["done"] is False and "stored nothing" in short["message"]
    assert check(client, "cache-hit", long, clock=10, ttl="1h", bp="none")["done"] is False


@pytest.mark.slow
def test_own_tool_loop(client):
    mine = Scenario(tools=[OWN_TOOL])
    assert check(client, "own-tool", mine, tool="own")["done"] is True
    # the lesson opens on the article's example
    opened = client.get(by_id()["own-tool"].start_url())
    assert opened.context["tool"] == "article" and opened.context["question"] == "Did my etl_pipeline DAG run today?"
    # as the form sends it from the lesson's start: the article's question, with the learner's tool
    article = Scenario(messages=[{"role": "user", "content": "Did my etl_pipeline DAG run today?"}], tools=[OWN_TOOL])
    done = check(client, "own-tool", article, tool="own")
    a = stage_data(client, "tools", article, tool="own")["tools-attention"]
    assert done["done"] is True and "valid JSON under your schema" in done["message"]
    assert (f"the head that looks most at “etl_pipeline” (layer {a['layer']}, head {a['head']}) gave it {a['share_pct']}% "
            f"of its attention, {a['even_pct']}% if spread evenly") in done["message"]  # the page's figures, not the check's own
    assert ("the argument is not that name" in done["message"]) != a["copied"]
    # a tool with no input to write: nothing to trace, so the picture has no figure to report
    bare = dict(OWN_TOOL, input_schema={"type": "object", "properties": {}})
    empty = check(client, "own-tool", Scenario(tools=[bare]), tool="own")
    assert empty["done"] is False and "no value to trace" in empty["message"]
    assert check(client, "own-tool", mine, tool="own", choice="any")["done"] is True
    assert check(client, "own-tool", mine)["done"] is False  # the demo tool
    text = check(client, "own-tool", mine, tool="own", choice="auto")
    assert text["done"] is False and "tool_choice auto" in text["message"]
    example = check(client, "own-tool", Scenario(tools=[OWN_EXAMPLE]), tool="own")
    assert example["done"] is False and "example" in example["message"]


@pytest.mark.slow
def test_greedy_own_question(client):
    mine = Scenario(messages=POSTGRES)
    assert check(client, "greedy", mine.replace(temperature=0))["done"] is True
    assert check(client, "greedy", mine.replace(top_k=1))["done"] is True
    sampled = check(client, "greedy", mine.replace(temperature=1.0))
    assert sampled["done"] is False and "not the model's first choice" in sampled["message"]
    same = check(client, "greedy", Scenario(temperature=0))
    assert same["done"] is False and "lesson's question" in same["message"]
    assert Scenario().messages[0]["content"] == DEFAULT_PROMPT


# ---- pages and bad input -----------------------------------------------------------------------------------

def test_the_lesson_path_lists_every_lesson(client):
    r = client.get("/tutorial/")
    assert r.status_code == 200
    html = r.content.decode()
    for x in lessons():
        assert f'href="/tutorial/start/{x.id}"' in html and x.title.replace("'", "&#x27;") in html
    assert 'id="tut-reset"' in html and "js/tutorial.js" in html


def test_the_overview_links_to_the_tutorial_unless_embedded(client):
    assert 'href="/tutorial/"' in client.get("/learn/overview/").content.decode()
    assert 'href="/tutorial/"' not in client.get("/learn/overview/?embed=1").content.decode()


def test_lessons_json(client):
    data = client.get("/tutorial/lessons.json").json()
    assert [x["id"] for x in data["lessons"]] == [x.id for x in lessons()]
    first, last = data["lessons"][0], data["lessons"][-1]
    assert first["next"] == data["lessons"][1]["id"] and last["next"] is None
    assert first["check_url"] == f"/tutorial/check/{first['id']}" and data["path_url"] == "/tutorial/"


def test_unknown_lessons_are_404s(client):
    r = client.get("/tutorial/check/no-such-lesson")
    assert r.status_code == 404 and r.json()["done"] is False and "not a lesson" in r.json()["error"]
    r = client.get("/tutorial/start/%3Cscript%3E")
    assert r.status_code == 404 and "<script>" not in r.content.decode()


@pytest.mark.parametrize("bad", ["abc", "abc.def", "x" * 7000, codec().encode(Scenario(seed=5))[:-2] + "zz"])
def test_an_altered_link_is_a_400_with_the_stage_s_message(client, bad):
    with pytest.raises(ScenarioError) as refused:
        codec().decode(bad)
    r = client.get("/tutorial/check/temperature", {"s": bad})
    assert r.status_code == 400 and r.json() == {"done": False, "error": str(refused.value)}
    assert client.get("/learn/overview/", {"s": bad}).status_code == 400


@pytest.mark.parametrize("lesson_id, opts", [
    ("previous-token-head", {"layer": "9"}), ("previous-token-head", {"head": "x"}),
    ("small-vocabulary", {"merges": "99999999"}), ("cache-hit", {"bp": "m7"}), ("same-dice", {"step": "500"}),
    ("own-tool", {"tool": "own"}),  # no tool of the learner's own in this scenario
])
def test_bad_view_options_are_a_400(client, lesson_id, opts):
    r = client.get(f"/tutorial/check/{lesson_id}", opts)
    assert r.status_code == 400 and r.json()["error"]
    assert client.get(f"/learn/{by_id()[lesson_id].stage_slug}/", opts).status_code == 400  # as the page itself


def test_an_oversized_query_and_other_methods_are_refused(client):
    assert client.get("/tutorial/check/temperature?junk=" + "a" * 9000).status_code == 400
    assert client.post("/tutorial/check/temperature").status_code == 405
    assert client.post("/tutorial/").status_code == 405


def test_hostile_text_comes_back_as_json_only(client):
    s = Scenario(messages=[{"role": "user", "content": "Hi"}], stop_sequences=['<img src=x onerror=alert(1)>'])
    r = client.get("/tutorial/check/stop-sequence", {"s": codec().encode(s)})
    assert r.status_code == 200 and r["content-type"] == "application/json"


def test_what_was_seen_is_checked_like_any_input(client):
    bad = client.get("/tutorial/check/never-admitted?seen=" + "<script>")
    assert bad.status_code == 400 and "seen" in bad.json()["error"]
    many = client.get("/tutorial/check/never-admitted?" + "&".join(f"seen=a{i}" for i in range(9)))
    assert many.status_code == 400


def test_every_lesson_names_the_part_of_its_page_the_task_needs(client):
    for x in lessons():
        html = client.get(x.start_url()).content.decode()
        assert f'id="{x.target[1:]}"' in html, f"{x.id}: no {x.target} on {x.start_url()}"


# ---- on a local model ------------------------------------------------------------------------------------

def test_lessons_start_on_a_local_model_chosen_on_the_path(client):
    from explainer.stages.runs import stamp
    from tests.conftest import LOCAL_MODEL

    page = client.get("/tutorial/", {"model": LOCAL_MODEL}).content.decode()
    assert f'href="/tutorial/start/same-dice?model={LOCAL_MODEL}"' in page
    assert 'href="/tutorial/start/temperature"' in page and "On the bundled model only" in page  # its task is the bundled model's words
    r = client.get("/tutorial/start/same-dice", {"model": LOCAL_MODEL})
    q = parse_qs(urlparse(r["Location"]).query)
    assert codec().decode(q["s"][0]) == stamp(start("same-dice").replace(model=LOCAL_MODEL)) and q["step"] == ["1"]
    assert client.get("/tutorial/start/same-dice", {"model": "no-such-model"}).status_code == 404
    assert "is not a local model on this server" in client.get("/tutorial/", {"model": "no-such-model"}).content.decode()
    assert "On the bundled model only" not in client.get("/tutorial/").content.decode()


def test_a_check_on_a_local_model_keeps_it_for_the_next_lesson_or_says_why_it_cannot(client):
    from explainer.stages.runs import stamp
    from tests.conftest import LOCAL_MODEL

    local = stamp(start("same-dice").replace(model=LOCAL_MODEL))
    data = check(client, "same-dice", local, step=1, k=1)
    assert data["done"] is True and data["next_url"] == f"/tutorial/start/stop-sequence?model={LOCAL_MODEL}"
    assert check(client, "same-dice", start("same-dice"), step=1)["next_url"] == "/tutorial/start/stop-sequence"
    # the temperature lesson's word is the bundled model's: on another model the check says so, whatever the reply
    data = check(client, "temperature", stamp(start("temperature").replace(model=LOCAL_MODEL, temperature=0.3)))
    assert data["done"] is False and "needs the bundled model" in data["message"] and LOCAL_MODEL in data["message"]
    assert check(client, "prefill", local)["next_url"] == "/tutorial/start/never-admitted?model=" + LOCAL_MODEL
    assert check(client, "greedy", local)["next_url"] is None
    # a link made with other weights for the name is refused, as the stage page refuses it
    r = client.get("/tutorial/check/same-dice", {"s": codec().encode(local.replace(weights="0" * 12))})
    assert r.status_code == 400 and "other weights" in r.json()["error"]


def test_a_local_model_that_cannot_be_opened_says_why_instead_of_starting(client, settings, tmp_path, own_services):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{", encoding="utf-8")
    settings.EXPLAINER_MODELS_DIR = tmp_path
    own_services()  # the next test's services read the suite's models directory again
    r = client.get("/tutorial/start/same-dice", {"model": "broken"})
    assert r.status_code == 400 and "config.json" in r.content.decode()
