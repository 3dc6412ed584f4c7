// The inspector's session page: copy the base URL, and add calls as they are recorded, without a reload.
// The page listens on ws/inspect/<id>/ (explainer/inspect/live.py): each frame says calls were recorded, and the
// page reads itself again and adds the new calls (the server's HTML is the one rendering of a call). If the socket
// cannot connect or drops, it falls back to a small poll of /data?count every 3 s while the page is visible.
(() => {
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const box = document.getElementById(button.dataset.copy);
      const status = button.parentElement.querySelector(".copy-status");
      box.select();
      try {
        await navigator.clipboard.writeText(box.value);
        if (status) status.textContent = "Copied.";
      } catch (e) {
        if (status) status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
      }
    });
  }

  const calls = document.getElementById("calls");
  if (!calls) return;
  const say = (text) => {
    const note = document.getElementById("live-note");
    if (note) note.textContent = text;
  };
  let gone = false;

  // An element as the server drew it: a fold the reader opened is not a change.
  const drawn = (el) => {
    const copy = el.cloneNode(true);
    copy.classList.remove("arrived");
    for (const d of copy.querySelectorAll("details[open]")) d.removeAttribute("open");
    return copy.outerHTML;
  };

  const merge = (fresh) => {
    const list = calls.querySelector(".call-list");
    const freshList = fresh.querySelector(".call-list");
    const before = Number(calls.dataset.count || 0);
    if (!list || !freshList) {
      const nodes = Array.from(fresh.childNodes);  // a copy: adopting a node takes it out of the live list
      calls.replaceChildren(...nodes.map((n) => document.adoptNode(n)));
    } else {
      for (const li of Array.from(freshList.children)) {
        const old = document.getElementById(li.id);
        if (!old) {
          li.classList.add("arrived");
          list.append(document.adoptNode(li));
        } else if (drawn(old) !== li.outerHTML) {
          const open = Array.from(old.querySelectorAll("details"), (d) => d.open);
          Array.from(li.querySelectorAll("details")).forEach((d, i) => { if (open[i]) d.open = true; });
          old.replaceWith(document.adoptNode(li));
        }
      }
      const heading = fresh.querySelector("#calls-h");
      if (heading) document.getElementById("calls-h").textContent = heading.textContent;
    }
    calls.dataset.count = fresh.dataset.count;
    const added = Number(fresh.dataset.count) - before;
    if (added > 0) say(`${added} new call${added === 1 ? "" : "s"} added.`);
  };

  let busy = false;
  let again = false;
  const refresh = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await fetch(location.pathname, { cache: "no-store", headers: { Accept: "text/html" } });
      if (r.status === 404) {
        gone = true;
        say("This session has expired or was deleted.");
        return;
      }
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.getElementById("calls");
      if (fresh) merge(fresh);
    } catch (e) {
      // out of reach for a moment: the next frame or poll asks again
    } finally {
      busy = false;
      if (again && !gone) { again = false; refresh(); }
    }
  };

  // Frames that arrive while the tab is hidden are read once it is shown again.
  let waiting = false;
  const recorded = () => {
    if (document.visibilityState === "visible") refresh();
    else waiting = true;
  };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && waiting) { waiting = false; refresh(); }
  });

  const every = 3000;
  let polling = false;
  const poll = () => {
    if (polling || gone) return;
    polling = true;
    calls.dataset.live = "poll";
    const check = async () => {
      if (gone) return;
      if (document.visibilityState === "visible") {
        try {
          const r = await fetch(`${calls.dataset.dataUrl}?count`, { cache: "no-store" });
          if (r.status === 404) {
            gone = true;
            say("This session has expired or was deleted.");
            return;
          }
          if (r.ok && (await r.json()).count > Number(calls.dataset.count || 0)) await refresh();
        } catch (e) {
          // the server was out of reach for a moment: ask again
        }
      }
      setTimeout(check, every);
    };
    setTimeout(check, every);
  };

  const listen = () => {
    let socket;
    try {
      socket = new WebSocket(`${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${calls.dataset.socket}`);
    } catch (e) {
      poll();
      return;
    }
    socket.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame.type === "inspect.hello") {
        calls.dataset.live = "socket";
        if (frame.calls > Number(calls.dataset.count || 0)) recorded();
      } else if (frame.type === "inspect.recorded") {
        recorded();
      }
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4404) {
        gone = true;
        say("This session has expired or was deleted.");
        return;
      }
      poll();  // a socket that never opened, or dropped: the poll keeps the page current
    });
  };
  if (calls.dataset.socket && "WebSocket" in window) listen();
  else poll();
})();
