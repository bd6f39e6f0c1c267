// The console's only script: refreshes the overview's numbers and the select-all box.
// Values are set with textContent, never as HTML.
(function () {
  "use strict";

  var table = document.querySelector("[data-refresh]");
  var stamp = document.querySelector("[data-updated]");
  if (table) {
    var url = table.getAttribute("data-refresh");
    var interval = parseInt(table.getAttribute("data-interval-ms"), 10) || 2000;
    var refresh = function () {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (data) {
          data.rows.forEach(function (row) {
            var tr = table.querySelector('tr[data-lane="' + CSS.escape(row.key) + '"]');
            if (!tr) { return; }
            Object.keys(row.cells).forEach(function (name) {
              var cell = tr.querySelector('[data-cell="' + name + '"]');
              if (cell) { cell.textContent = row.cells[name]; }
            });
            tr.classList.toggle("is-paused", row.paused);
          });
          if (stamp) { stamp.textContent = "updated " + data.at + " UTC"; }
        })
        .catch(function (error) {
          if (stamp) { stamp.textContent = "refresh failed (" + error.message + "); retrying"; }
        });
    };
    window.setInterval(refresh, interval);
  }

  var all = document.querySelector("[data-select-all]");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="ids"]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }
})();
