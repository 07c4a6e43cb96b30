/* The scope field of budgets and alert rules (budgets.admin.ScopeInput): while the typed scope is none
 * of the suggested ones (the scopes with spend), show the note beside it; saving such a scope asks for
 * confirmation on the server. */
(function () {
  "use strict";

  function watch(input) {
    var list = document.getElementById(input.getAttribute("list"));
    var note = list && list.nextElementSibling;
    if (!note) { return; }
    var known = {};
    Array.prototype.forEach.call(list.options, function (option) { known[option.value] = true; });
    function check() {
      var value = input.value.trim();
      note.hidden = !value || known[value] === true;
    }
    input.addEventListener("input", check);
    input.addEventListener("change", check);
    // Refused by the server already, its message says more; the note comes back once it is edited.
    if (input.getAttribute("aria-invalid") !== "true") { check(); }
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("input[data-scope-input]"), watch);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
