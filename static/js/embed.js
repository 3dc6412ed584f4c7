// Embed mode (?embed=1): a stage shown inside an iframe without the site's chrome.
// On a full page: the "Copy embed code" button. On an embedded page: every way to another stage
// keeps embed=1, and "Open in the Lifecycle Explainer" always points at the full page as it is now.
import { copyText } from "./stage.js";

const EMBED = "embed";
const embedded = document.body.classList.contains("embedded");

const isStagePath = (u) => u.origin === location.origin && u.pathname.startsWith("/learn/");

// The address of this page with embed=1 (on) or without it (off), view options included.
export function withEmbed(href, on) {
  const u = new URL(href, location.href);
  if (on) u.searchParams.set(EMBED, "1"); else u.searchParams.delete(EMBED);
  return u;
}

function escapeAttr(s) {
  return s.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// <iframe src="…?embed=1" …>: the page as it is now (scenario and view options come from the address bar).
export function embedCode(href, title) {
  const src = withEmbed(href, true).href;
  return `<iframe src="${escapeAttr(src)}" title="${escapeAttr(title)}" width="100%" height="720" ` +
    `style="border:1px solid #d9d8d0;border-radius:8px;max-width:1200px" loading="lazy"></iframe>`;
}

for (const btn of document.querySelectorAll("[data-copy-embed]")) {
  btn.addEventListener("click", async () => {
    const status = btn.parentElement.querySelector(".copy-status");
    const code = embedCode(location.href, btn.dataset.embedTitle || document.title);
    let ok = false;
    try { ok = await copyText(code); } catch { ok = false; }
    if (status) status.textContent = ok ? "Embed code copied: paste it into a course page or slide." : `Copy this code: ${code}`;
  });
}

if (embedded) {
  let leaving = false;  // the "open in the explainer" link leaves embed mode on purpose

  // Links written by the server already carry embed=1; links in teaching text and links drawn
  // later by a page's script may not, so they are fixed when shown and again when followed.
  const keepEmbedded = (a) => {
    if (!a || !a.href || a.hasAttribute("data-embed-exit") || a.hasAttribute("download")) return;
    const u = new URL(a.href, location.href);
    if (isStagePath(u) && u.searchParams.get(EMBED) !== "1") a.href = withEmbed(u.href, true).href;
  };
  const syncExit = () => {
    for (const a of document.querySelectorAll("a[data-embed-exit].embed-open")) a.href = withEmbed(location.href, false).href;
  };
  for (const a of document.querySelectorAll("a[href]")) keepEmbedded(a);

  const onFollow = (e) => {
    const a = e.target.closest && e.target.closest("a[href]");
    if (!a) return;
    if (a.hasAttribute("data-embed-exit")) { syncExit(); leaving = true; setTimeout(() => { leaving = false; }, 0); return; }
    keepEmbedded(a);
  };
  document.addEventListener("click", onFollow, true);
  document.addEventListener("auxclick", onFollow, true);
  // The exit link follows the view options that pages change in place with history.replaceState.
  for (const ev of ["pointerenter", "focusin", "contextmenu"]) document.addEventListener(ev, (e) => {
    if (e.target.closest && e.target.closest("a[data-embed-exit]")) syncExit();
  }, true);

  // Scripts that navigate by assigning location (a form that sends, a fallback reload) build their
  // address from the path: where the Navigation API exists, put embed=1 back on the way out.
  if (window.navigation && typeof window.navigation.addEventListener === "function") {
    window.navigation.addEventListener("navigate", (e) => {
      if (leaving || !e.cancelable || e.hashChange || e.formData || e.downloadRequest || e.navigationType === "traverse") return;
      const dest = new URL(e.destination.url);
      if (!isStagePath(dest) || dest.searchParams.get(EMBED) === "1") return;
      e.preventDefault();
      const to = withEmbed(dest.href, true).href;
      if (e.navigationType === "replace") location.replace(to); else location.assign(to);
    });
  }
}
