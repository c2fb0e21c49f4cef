// The status page's login: the token goes to POST /ui/login (same origin, JSON), which
// sets the session cookie; then the page loads again, now as the status page.
"use strict";

document.getElementById("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const message = document.getElementById("message");
  const r = await fetch("/ui/login", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: document.getElementById("token").value }),
  }).catch((err) => ({ ok: false, status: err.message }));
  if (r.ok) {
    location.reload();
  } else {
    message.textContent = "refused (" + r.status + "): check the token";
    document.body.dataset.state = "refused";
  }
});

// The form is live only now (a click before this would submit it as a plain GET).
document.body.dataset.state = "login";
