// The inspector's session page: copy the base URL, and notice new calls (a small poll of /data?count, every 3 s
// while the page is visible), offering to show them.
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
  const note = document.getElementById("live-note");
  if (!calls || !note) return;
  const shown = Number(calls.dataset.count || 0);
  const every = 3000;
  const check = async () => {
    if (document.visibilityState === "visible") {
      try {
        const r = await fetch(`${calls.dataset.dataUrl}?count`, { cache: "no-store" });
        if (r.status === 404) {
          note.textContent = "This session has expired or was deleted.";
          return;
        }
        if (r.ok) {
          const data = await r.json();
          const fresh = data.count - shown;
          if (fresh > 0) {
            note.textContent = "";
            const link = document.createElement("a");
            link.href = location.pathname;
            link.className = "button small";
            link.textContent = `${fresh} new call${fresh === 1 ? "" : "s"}: show ${fresh === 1 ? "it" : "them"}`;
            note.append(link);
            return;
          }
        }
      } catch (e) {
        // the server was out of reach for a moment: ask again
      }
    }
    setTimeout(check, every);
  };
  setTimeout(check, every);
})();
