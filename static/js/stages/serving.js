// Serving: draws the scheduler's record of the page's case (serving-data) as the timeline, sized to leave the
// figures under it in the first screen, and again when the window is resized or a room turns on projector mode.

import { readJSON } from "../stage.js";
import { drawTimeline } from "./serving-timeline.js";

const data = readJSON("serving-data");
const box = document.getElementById("sv-timeline");
const projector = () => document.documentElement.classList.contains("projector");

function room() {
  // what the first screen leaves for the picture: from its top to the bottom of the window, less the figures under it
  const headline = document.getElementById("sv-headline");
  const below = headline ? headline.getBoundingClientRect().height + 16 : 0;
  const top = box.getBoundingClientRect().top + window.scrollY;
  return Math.max(projector() ? 260 : 150, window.innerHeight - top - below - 8);
}

function draw() {
  if (!data || !data.runnable || !box) return;
  drawTimeline(box, data.timeline, {
    projector: projector(), maxHeight: room(),
    label: "Decode steps of every request served in the window, one row each; this request highlighted",
  });
}

draw();
let width = box ? box.clientWidth : 0;
new ResizeObserver(() => {
  if (box && box.clientWidth !== width) { width = box.clientWidth; draw(); }
}).observe(document.body);
let wasProjector = projector();
new MutationObserver(() => {
  if (projector() !== wasProjector) { wasProjector = projector(); draw(); }
}).observe(document.documentElement, { attributes: true, attributeFilter: ["class"] });
// presenter.js adds the class, then the projector's style sheet, which changes the room above the picture
new MutationObserver((changes) => {
  for (const c of changes) for (const n of c.addedNodes) if (n.id === "projector-css") n.addEventListener("load", draw);
}).observe(document.head, { childList: true });
