// writeback portal: checks a new password against the account's policy as
// the user types (length, the character mix, the account name) and shows
// each rule as met or not. Nothing is sent anywhere; the directory's own
// answer still decides. First-party, no dependencies.
"use strict";
(function () {
  function kinds(pw) {
    var upper = false, lower = false, digit = false, symbol = false, other = false;
    for (var ch of pw) {
      if (/[A-Z]/.test(ch)) upper = true;
      else if (/[a-z]/.test(ch)) lower = true;
      else if (/[0-9]/.test(ch)) digit = true;
      else if (/[~!@#$%^&*_\-+=`|\\(){}\[\]:;"'<>,.?\/]/.test(ch)) symbol = true;
      else if (ch.toUpperCase() !== ch.toLowerCase()) {
        if (ch === ch.toUpperCase()) upper = true; else lower = true;
      } else if (/\p{L}/u.test(ch)) other = true;
    }
    return [upper, lower, digit, symbol, other].filter(Boolean).length;
  }
  function units(pw) { var n = 0; for (var ch of pw) n += ch.length; return n; }
  function setup(form) {
    var input = form.querySelector("input[data-new-password]");
    var list = form.querySelector("ul.rules");
    if (!input || !list) return;
    var min = parseInt(form.dataset.minLength || "0", 10);
    var complexity = form.dataset.complexity === "true";
    var account = (form.dataset.account || "").toLowerCase();
    function update() {
      var pw = input.value;
      list.querySelectorAll("li[data-rule]").forEach(function (li) {
        var ok = true;
        if (li.dataset.rule === "length") ok = units(pw) >= min;
        if (li.dataset.rule === "mix") ok = !complexity || kinds(pw) >= 3;
        if (li.dataset.rule === "account") ok = account.length < 3 || pw.toLowerCase().indexOf(account) < 0;
        li.className = pw.length === 0 ? "" : (ok ? "pass" : "fail");
      });
    }
    input.addEventListener("input", update);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-min-length]").forEach(setup);
  });
})();
