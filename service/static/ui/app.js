// The playground's entry point: two tabs (Images, Training), each a module that talks to
// the public API only. Read images.js and training.js for how a frontend calls tensorlens.

import { initImages } from "./images.js";
import { initTraining, showTraining } from "./training.js";

const tabs = [...document.querySelectorAll('[role="tab"]')];
let trainingShown = false;

function select(tab, { focus = false } = {}) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (focus) tab.focus();
  const name = tab.id.replace("tab-", "");
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  if (name === "training") {
    if (!trainingShown) showTraining();
    trainingShown = true;
  }
}

// The ARIA tabs pattern: Left/Right/Home/End move between tabs, Tab goes into the panel.
for (const [index, tab] of tabs.entries()) {
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", (event) => {
    const moves = {
      ArrowRight: (index + 1) % tabs.length,
      ArrowLeft: (index - 1 + tabs.length) % tabs.length,
      Home: 0,
      End: tabs.length - 1,
    };
    if (event.key in moves) {
      event.preventDefault();
      select(tabs[moves[event.key]], { focus: true });
    }
  });
}

initTraining();
initImages();
select(document.getElementById(location.hash === "#training" ? "tab-training" : "tab-images"));
