// Partial refresh, the dashboard's only script: an element with data-refresh="<url>" gets its
// inner HTML from that URL every data-every seconds (default 5). The server renders and
// escapes the fragment like any page; the session cookie goes along (same origin). A failed
// fetch (logged out, server restarting) leaves the last good content in place.
"use strict";
document.querySelectorAll("[data-refresh]").forEach(function (el) {
  var every = (Number(el.dataset.every) || 5) * 1000;
  setInterval(function () {
    if (document.hidden) return;
    fetch(el.dataset.refresh, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) el.innerHTML = html; })
      .catch(function () {});
  }, every);
});
