// Light or dark: the system's preference unless the user chose one here (kept per browser).
// Loaded in <head> without defer, so the page never flashes in the wrong theme.
"use strict";
(function () {
  const root = document.documentElement;
  const saved = localStorage.getItem("nixfleet-theme");
  if (saved === "dark" || saved === "light") root.dataset.theme = saved;
  const dark = () => root.dataset.theme ? root.dataset.theme === "dark"
    : window.matchMedia("(prefers-color-scheme: dark)").matches;
  function label(button) {
    button.setAttribute("aria-pressed", String(dark()));
    button.title = dark() ? "Dark theme (click for light)" : "Light theme (click for dark)";
  }
  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("theme-toggle");
    if (!button) return;
    label(button);
    button.addEventListener("click", () => {
      root.dataset.theme = dark() ? "light" : "dark";
      localStorage.setItem("nixfleet-theme", root.dataset.theme);
      label(button);
    });
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => label(button));
  });
})();
