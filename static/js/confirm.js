// Confirmations on deletes: a form with data-confirm asks with the browser's dialog and, when the person
// agrees, sends confirmed=yes so the server goes ahead at once (core/http.py delete_confirmation). A form
// whose own onsubmit already asked (confirm(...)) and let the post go is confirmed the same way. Without
// script, the server's confirmation page asks instead.
(function () {
  "use strict";
  function confirmed(form) {
    var field = form.querySelector('input[name="confirmed"]');
    if (!field) {
      field = document.createElement("input");
      field.type = "hidden"; field.name = "confirmed";
      form.appendChild(field);
    }
    field.value = "yes";
  }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.dataset.confirm !== undefined) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
      confirmed(form);
    } else if (!event.defaultPrevented && /confirm\(/.test(form.getAttribute("onsubmit") || "")) {
      confirmed(form);
    }
  });
})();
