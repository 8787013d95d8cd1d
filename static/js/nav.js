// The phone menu: the button opens and closes the header's links (Escape closes it and gives the focus
// back to the button). The CSS hides the links on narrow screens only when this page runs JavaScript
// (html.js), so without it every link stays on the page.
(function () {
  "use strict";
  // The theme toggle: switches between light and dark and remembers the choice (html[data-theme]).
  function initTheme() {
    var button = document.getElementById("theme-toggle"), root = document.documentElement;
    if (!button) return;
    var dark = function () {
      return root.dataset.theme ? root.dataset.theme === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
    };
    var show = function () {
      button.textContent = dark() ? "Light theme" : "Dark theme";
      button.setAttribute("aria-pressed", dark() ? "true" : "false");
    };
    button.hidden = false;
    show();
    button.addEventListener("click", function () {
      root.dataset.theme = dark() ? "light" : "dark";
      try { localStorage.setItem("theme", root.dataset.theme); } catch (e) {}
      show();
    });
  }

  function init() {
    initTheme();
    var toggle = document.getElementById("nav-toggle"), menu = document.getElementById("site-menu");
    if (!toggle || !menu) return;
    function set(open) {
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      menu.classList.toggle("open", open);
    }
    toggle.addEventListener("click", function () {
      set(toggle.getAttribute("aria-expanded") !== "true");
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && toggle.getAttribute("aria-expanded") === "true") {
        set(false);
        toggle.focus();
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
