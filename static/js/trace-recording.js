// A trace link opened before its trace is written: ask again every 2 seconds, and show the trace once it is there.
(() => {
  const status = document.getElementById("recording-status");
  const every = Number(status.dataset.every || 2) * 1000;
  let tries = 0;
  const check = async () => {
    tries += 1;
    try {
      const r = await fetch(location.href, { method: "HEAD", cache: "no-store" });  // its status, never its HTML
      if (r.status === 200) {
        location.reload();
        return;
      }
      if (r.status === 404) {
        status.textContent = "This trace was not recorded: it does not exist, has expired, or was deleted.";
        return;
      }
    } catch (e) {
      // the server was out of reach for a moment: ask again
    }
    if (tries < 60) setTimeout(check, every);
    else status.textContent = "Still not recorded after two minutes. Reload the page to ask again.";
  };
  setTimeout(check, every);
})();
