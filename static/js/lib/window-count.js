// The prompt's size against the model's window, live while a person types: counted on the server by the
// tokenizer and chat template that will run the request (POST /scenario/count), a moment after the last key.
// Over the window, Send is disabled and one sentence says why and what to do; under it, "38 of 511 tokens".

const NF = new Intl.NumberFormat("en-US");

// ``onOver(over)`` runs after each count (the overview shows "Send anyway" while over).
export function watchWindow({ body, out, send, delay = 250, onOver = null }) {
  let timer = 0, asked = 0, over = false;

  function show(data) {
    over = !data.fits;
    const n = `${data.at_least ? "at least " : ""}${NF.format(data.input_tokens)}`;
    out.textContent = over
      ? `${n} tokens: more than the ${NF.format(data.window)} the model's window leaves for a prompt. Shorten it to send.`
      : `${n} of ${NF.format(data.window)} tokens the window leaves for a prompt`;
    out.classList.toggle("over", over);
    out.hidden = false;
    if (send) {
      send.disabled = over || send.dataset.running === "1";
      if (over) send.setAttribute("aria-describedby", out.id); else send.removeAttribute("aria-describedby");
    }
    if (onOver) onOver(over);
  }

  async function count() {
    const mine = ++asked;
    try {
      const r = await fetch("/scenario/count", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body()),
      });
      const data = await r.json();
      if (mine !== asked) return;  // a later count is on its way: this one is stale
      if (r.ok) show(data);
      else { over = false; out.classList.remove("over"); out.textContent = data.error || ""; if (send) send.disabled = send.dataset.running === "1"; }
    } catch { /* offline or busy: the last count stays; the server checks again on Send */ }
  }

  function changed() {
    clearTimeout(timer);
    timer = setTimeout(count, delay);
  }
  count();
  return { changed, isOver: () => over, recount: count };
}
