// The small account pages: sign up, log in, confirm the email, ask for a reset link, set a new password.
// Each page's <body data-page="..."> says which one this is.
"use strict";
(() => {
  const page = document.body.dataset.page;
  const form = document.getElementById("form");
  const status = document.getElementById("status");

  function show(message, ok) {
    status.textContent = message;
    status.className = ok ? "ok" : "error";
  }
  function fail(e) {
    show(e.message, false);
    if (e.field) {
      const input = document.querySelector(`[name="${e.field}"]`);
      if (input) input.focus();
    }
  }
  const value = (name) => form.elements[name].value;

  async function post(path, body) {
    const res = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    const parsed = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const err = new Error((parsed && parsed.detail) || `${res.status}`);
      err.field = parsed && parsed.field;
      throw err;
    }
    return parsed;
  }

  const handlers = {
    async signup() {
      const body = await post("/api/v1/auth/signup", { email: value("email"), password: value("password") });
      form.reset();
      show(body.detail + ". Open the link in it, then log in.", true);
    },
    async login() {
      const pair = await post("/api/v1/auth/login", { email: value("email"), password: value("password") });
      session.save(pair);
      location.assign("/account");
    },
    async forgot() {
      const body = await post("/api/v1/auth/password-reset", { email: value("email") });
      show(body.detail + ".", true);
    },
    async reset() {
      await post("/api/v1/auth/password-reset/confirm", { token: linkToken, password: value("password") });
      form.reset();
      show("Your password is changed. You can log in with it now.", true);
    },
  };

  let linkToken = null;
  if (page === "verify" || page === "reset") {
    linkToken = session.takeUrlToken();
    if (!linkToken) show("This page needs the link from the mail (it carries a token).", false);
  }
  if (page === "verify" && linkToken) {
    post("/api/v1/auth/verify", { token: linkToken })
      .then(() => show("Your email address is confirmed. You can log in now.", true))
      .catch(fail);
  }
  if (form) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      show("…", true);
      try { await handlers[page](); } catch (e) { fail(e); }
    });
  }
})();
