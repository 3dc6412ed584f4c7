// The room's WebSocket: hands every JSON frame to onFrame, and when the link to the room is lost
// (the server's "room.interrupted", or any close that is not the room's end) shows the banner
// and reconnects by itself: 1, 2, 4, 8, then every 15 s, each with jitter so that a whole class
// does not come back in the same instant. On each connect onOpen re-sends what the page sends
// first (the presenter's auth); the server greets with room.hello, which removes the banner.
const FINAL_CLOSES = [4404, 4410, 4429];  // no such room, the room ended, flooding: retrying cannot help
const MAX_DELAY_MS = 15000;
export const LOST_TEXT = "Connection to the room lost — reconnecting…";

// ``query()``, if given, returns the query string to connect with each time (a student's id in the room's rounds).
export function roomSocket(code, { onFrame, onStatus, onOpen, onLost, banner, query }) {
  let ws = null, attempt = 0, retryAfter = 0, closedForGood = false, timer = null, joined = false;
  const base = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/rooms/${encodeURIComponent(code)}/`;

  function showBanner(on) {
    if (banner) banner.textContent = on ? LOST_TEXT : "";
  }

  function nextDelay() {
    const backoff = Math.min(MAX_DELAY_MS, 1000 * 2 ** attempt);
    attempt += 1;
    const wait = Math.min(MAX_DELAY_MS, Math.max(backoff, retryAfter * 1000));
    retryAfter = 0;
    return Math.round(wait * (0.8 + 0.4 * Math.random()));
  }

  function lost() {
    showBanner(true);
    onStatus("reconnecting…");
    if (joined) {
      joined = false;
      onLost && onLost();
    }
  }

  function connect() {
    timer = null;
    onStatus("connecting…");
    const q = query ? query() : "";
    const sock = new WebSocket(q ? `${base}?${q}` : base);
    ws = sock;
    sock.addEventListener("open", () => { onOpen && onOpen(); });
    sock.addEventListener("message", (e) => {
      let frame;
      try { frame = JSON.parse(e.data); } catch { return; }
      if (frame.type === "room.hello") {
        attempt = 0;
        joined = true;
        showBanner(false);
        onStatus("connected");
      } else if (frame.type === "room.interrupted") {
        retryAfter = Number(frame.retry_after) || 0;  // the server closes the socket next
        lost();
      } else if (frame.type === "room.ended") {
        closedForGood = true;
      }
      onFrame(frame);
    });
    sock.addEventListener("close", (e) => {
      if (sock !== ws) return;
      if (closedForGood || FINAL_CLOSES.includes(e.code)) {
        closedForGood = true;
        showBanner(false);
        onStatus("disconnected");
        return;
      }
      lost();
      timer = setTimeout(connect, nextDelay());
    });
  }
  // Back online (a laptop's Wi-Fi, a phone leaving a tunnel): try now rather than at the next backoff.
  window.addEventListener("online", () => {
    if (timer !== null) {
      clearTimeout(timer);
      connect();
    }
  });
  connect();
  return {
    send(frame) {
      if (ws && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(frame)); return true; }
      return false;
    },
    get open() { return ws && ws.readyState === WebSocket.OPEN; },
  };
}

// Stage addresses as the server keeps them: path and query, without embed=1.
export function stageHref(href) {
  const u = new URL(href, location.origin);
  u.searchParams.delete("embed");
  const q = u.searchParams.toString();
  return u.pathname + (q ? "?" + q : "");
}

export function embedded(href) {
  const u = new URL(href, location.origin);
  u.searchParams.set("embed", "1");
  return u.pathname + "?" + u.searchParams.toString();
}

// Where the stage frame is now (same origin), or null while it is between pages.
export function frameHref(frame) {
  try {
    const l = frame.contentWindow.location;
    return l.pathname.startsWith("/learn/") ? stageHref(l.pathname + l.search) : null;
  } catch { return null; }
}
