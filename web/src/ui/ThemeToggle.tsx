import { useState } from "react";
import { applyTheme, currentTheme } from "./theme";

export function ThemeToggle() {
  const [theme, setTheme] = useState(currentTheme());
  return (
    <button
      type="button"
      className="ghost icon-button"
      aria-label={theme === "dark" ? "Switch to light theme" : "Switch to dark theme"}
      title="Toggle theme"
      onClick={() => {
        const next = theme === "dark" ? "light" : "dark";
        applyTheme(next, true);
        setTheme(next);
      }}
    >
      {theme === "dark" ? "☀" : "☾"}
    </button>
  );
}

