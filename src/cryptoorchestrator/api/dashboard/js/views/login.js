// Login: email and password, then a TOTP or backup code when the API answers mfa_required.

import { ApiError, describe, login } from "../api.js";
import { h, replace } from "../dom.js";

/** Render the login form into `root`; returns a cleanup function. */
export function render(root) {
  // The password stays in this closure only until the login succeeds or the form is left.
  let credentials = null;
  let useBackup = false;

  const error = h("div", { class: "form-error", role: "alert", hidden: true });
  const email = h("input", { id: "email", name: "email", type: "email", autocomplete: "username", required: true, maxlength: 320 });
  const password = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true, maxlength: 128 });
  const submit = h("button", { class: "btn btn-primary", type: "submit", text: "Log in" });
  const first = h(
    "form",
    { class: "step-password", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "email", text: "Email" }), email),
    h("div", { class: "field" }, h("label", { for: "password", text: "Password" }), password),
    submit,
  );

  const codeLabel = h("label", { for: "code", text: "Authentication code" });
  const code = h("input", { id: "code", name: "code", type: "text", autocomplete: "one-time-code", inputmode: "numeric", maxlength: 32 });
  const codeHint = h("div", { class: "hint", text: "The 6-digit code from your authenticator app." });
  const verify = h("button", { class: "btn btn-primary", type: "submit", text: "Verify" });
  const switchCode = h("button", { class: "link-btn", type: "button", text: "Use a backup code instead" });
  const back = h("button", { class: "link-btn", type: "button", text: "Start over" });
  const second = h(
    "form",
    { class: "step-mfa", hidden: true, novalidate: true },
    h("div", { class: "field" }, codeLabel, code, codeHint),
    verify,
    h("div", {}, switchCode),
    h("div", {}, back),
  );

  const title = h("h1", { text: "Log in" });
  const sub = h("p", { class: "sub", text: "CryptoOrchestrator dashboard" });
  root.append(h("div", { class: "login-wrap" }, h("section", { class: "login", "aria-labelledby": "login-title" }, title, sub, error, first, second)));
  title.id = "login-title";

  function fail(message) {
    error.hidden = false;
    replace(error, message);
  }

  async function attempt(extra, button) {
    button.disabled = true;
    error.hidden = true;
    try {
      await login({ ...credentials, ...extra });
      credentials = null; // the shell re-renders on the session's change
    } catch (err) {
      if (err instanceof ApiError && err.code === "mfa_required") {
        first.hidden = true;
        second.hidden = false;
        replace(title, "Two-factor authentication");
        replace(sub, "Your account has MFA on.");
        code.focus();
        return;
      }
      fail(err instanceof ApiError && err.status === 401 && !extra.totpCode && !extra.backupCode
        ? "Wrong email or password."
        : describe(err));
    } finally {
      button.disabled = false;
    }
  }

  first.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!email.value || !password.value) {
      fail("Enter your email and password.");
      return;
    }
    credentials = { email: email.value.trim(), password: password.value };
    attempt({}, submit);
  });

  second.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = code.value.trim().replace(/\s+/g, "");
    if (!useBackup && !/^\d{6}$/.test(value)) {
      fail("Enter the 6-digit code.");
      return;
    }
    if (useBackup && value.length < 4) {
      fail("Enter one of your backup codes.");
      return;
    }
    attempt(useBackup ? { backupCode: value } : { totpCode: value }, verify);
  });

  switchCode.addEventListener("click", () => {
    useBackup = !useBackup;
    code.value = "";
    code.setAttribute("inputmode", useBackup ? "text" : "numeric");
    replace(codeLabel, useBackup ? "Backup code" : "Authentication code");
    replace(codeHint, useBackup ? "One of the single-use backup codes you saved when you turned MFA on." : "The 6-digit code from your authenticator app.");
    replace(switchCode, useBackup ? "Use an authenticator code instead" : "Use a backup code instead");
    code.focus();
  });

  back.addEventListener("click", () => {
    credentials = null;
    password.value = "";
    code.value = "";
    second.hidden = true;
    first.hidden = false;
    error.hidden = true;
    replace(title, "Log in");
    replace(sub, "CryptoOrchestrator dashboard");
    password.focus();
  });

  email.focus();
  return () => {
    credentials = null;
  };
}
