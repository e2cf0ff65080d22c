// Dark and light themes: the system's choice (prefers-color-scheme) until the user picks one.

const KEY = "cryptoorch.theme";
const media = window.matchMedia("(prefers-color-scheme: light)");
export const themeEvents = new EventTarget();

/** The theme in effect: "dark" or "light". */
export function currentTheme() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen === "dark" || chosen === "light") return chosen;
  return media.matches ? "light" : "dark";
}

function apply(theme) {
  if (theme === "dark" || theme === "light") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  themeEvents.dispatchEvent(new CustomEvent("change", { detail: currentTheme() }));
}

/** Apply the stored choice and follow the system's changes while none is stored. */
export function initTheme() {
  apply(localStorage.getItem(KEY));
  media.addEventListener("change", () => {
    if (!localStorage.getItem(KEY)) apply(null);
  });
}

/** Switch between dark and light and remember the choice. */
export function toggleTheme() {
  const next = currentTheme() === "dark" ? "light" : "dark";
  localStorage.setItem(KEY, next);
  apply(next);
}

/** A CSS custom property's value (charts take colours from the theme). */
export function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}
