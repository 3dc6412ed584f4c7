"""A Chinese prompt in a real browser: the bundled tokenizer cuts every character into its three bytes, and
the transformer's strip and maps, sampling's loop and the recap's token row show each byte as ‹E4› and each
character once after its bytes, never U+FFFD, neither in the text nor in an SVG label."""
import pytest

from explainer.lifecycle.scenario import Scenario

pytestmark = pytest.mark.browser

PROMPT = "请用中文解释一下数据库索引"
CHINESE = Scenario(messages=[{"role": "user", "content": PROMPT}], max_tokens=12)

# every <text> of every SVG, and the page's visible text
SEEN = """() => ({text: document.body.innerText,
  labels: [...document.querySelectorAll('svg text')].map(t => t.textContent),
  joined: [...document.querySelectorAll('.tok-joined')].map(m => m.textContent)})"""


def seen(pg, ready: str) -> dict:
    pg.wait_for_selector(ready)
    assert pg.js_errors == []
    return pg.evaluate(SEEN)


@pytest.mark.parametrize("screen", ["laptop", "phone"])
def test_bytes_of_a_character_are_shown_never_u_fffd(screen_page, link, shoot, axe, screen):
    pg = screen_page(screen)
    check_axe = axe if screen == "laptop" else (lambda pg: None)  # once is enough: the markup is the same

    pg.goto(link("transformer", CHINESE))
    got = seen(pg, "#attn-big svg text.lbl")
    assert "\ufffd" not in got["text"] and not any("\ufffd" in t for t in got["labels"])
    assert "‹E8›" in got["text"] and any("‹" in t for t in got["labels"])  # the bytes, in the strip and on the map
    # each character once, after its bytes: in the strip, and in the map's labels (bold, beside the last byte)
    assert "".join(m.removeprefix("=") for m in got["joined"]) == PROMPT
    # the map's rows are too small for a label each: the labels kept are those that carry a character
    joined = pg.locator("#attn-big svg tspan.lbl-joined").all_text_contents()
    assert "".join(j.removeprefix("=") for j in joined) == PROMPT * 2  # rows and columns
    shoot(pg, f"byte-tokens-transformer-{screen}")
    check_axe(pg)

    pg.goto(link("sampling", CHINESE))
    got = seen(pg, "#so-far .tok.gen")
    assert "\ufffd" not in got["text"] and not any("\ufffd" in t for t in got["labels"])
    assert pg.locator("#so-far .tok.prompt.part").count() > 0 and "=引" in got["joined"]  # the prompt's end, before the reply
    shoot(pg, f"byte-tokens-sampling-{screen}")

    pg.goto(link("recap", CHINESE))
    got = seen(pg, ".recap .tokens .tok")
    assert "\ufffd" not in got["text"] and not any("\ufffd" in t for t in got["labels"])
    assert "".join(m.removeprefix("=") for m in got["joined"]) == PROMPT
    check_axe(pg)


def test_the_tokenize_strip_says_each_character_once_after_its_bytes(page, link, axe):
    """The same marks inside the tokenize stage's listbox, where the character is said by the token's label."""
    page.goto(link("tokenize", CHINESE))
    got = seen(page, "#strip [role=option]")
    assert "\ufffd" not in got["text"]
    assert "".join(m.removeprefix("=") for m in page.locator("#strip .tok-joined").all_text_contents()) == PROMPT
    assert page.locator("#strip [role=option][aria-label*='completes 请']").count() == 1
    axe(page)
