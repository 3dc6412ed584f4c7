// The room's WebSocket: reconnects with backoff, hands every JSON frame to onFrame.
export function roomSocket(code, { onFrame, onStatus, onOpen }) {
  let ws = null, delay = 500, closedForGood = false;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/rooms/${encodeURIComponent(code)}/`;
  function connect() {
    onStatus("connecting…");
    ws = new WebSocket(url);
    ws.addEventListener("open", () => { delay = 500; onStatus("connected"); onOpen && onOpen(); });
    ws.addEventListener("message", (e) => {
      let frame;
      try { frame = JSON.parse(e.data); } catch { return; }
      onFrame(frame);
    });
    ws.addEventListener("close", (e) => {
      // 4404: no such room, 4410: the presenter ended it, 4429: flooding. None of these gets better by retrying.
      if ([4404, 4410, 4429].includes(e.code)) { closedForGood = true; onStatus("disconnected"); return; }
      if (closedForGood) return;
      onStatus("reconnecting…");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 8000);
    });
  }
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
