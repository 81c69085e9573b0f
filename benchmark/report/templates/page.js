(function () {
  "use strict";
  function sortKey(td) {
    var text = td.textContent.trim();
    if (text === "" || text === "-") { return null; }
    var num = parseFloat(text);
    return isNaN(num) ? text.toLowerCase() : num;
  }
  function compare(a, b) {
    if (a === b) { return 0; }
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    return String(a) < String(b) ? -1 : 1;
  }
  function sortTable(table, col) {
    var th = table.tHead.rows[0].cells[col];
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keys = rows.map(function (r) { return sortKey(r.cells[col]); });
    var current = th.getAttribute("aria-sort");
    var numeric = keys.some(function (k) { return typeof k === "number"; });
    var dir = current ? (current === "ascending" ? -1 : 1) : (numeric ? -1 : 1);
    var order = rows.map(function (r, i) { return i; });
    order.sort(function (i, j) {
      var a = keys[i], b = keys[j];
      if (a === null && b === null) { return i - j; }
      if (a === null) { return 1; }
      if (b === null) { return -1; }
      return dir * compare(a, b) || i - j;
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    order.forEach(function (i) { body.appendChild(rows[i]); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.querySelector("button").addEventListener("click", function () { sortTable(table, col); });
    });
  });
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  function applyFilters() {
    var active = selects.filter(function (s) { return s.value !== ""; });
    var shown = 0, total = 0;
    Array.prototype.forEach.call(document.querySelectorAll("[data-dataset]"), function (el) {
      var visible = active.every(function (s) {
        var v = el.getAttribute("data-" + s.getAttribute("data-filter"));
        return v === null || v === s.value;
      });
      el.classList.toggle("hidden", !visible);
      if (el.closest("table.leaderboard")) { total += 1; if (visible) { shown += 1; } }
    });
    Array.prototype.forEach.call(document.querySelectorAll(".board"), function (board) {
      var rows = board.querySelectorAll("tbody tr");
      var any = Array.prototype.some.call(rows, function (r) { return !r.classList.contains("hidden"); });
      board.classList.toggle("hidden", rows.length > 0 && !any);
    });
    document.getElementById("shown").textContent = "showing " + shown + " of " + total + " leaderboard rows";
  }
  selects.forEach(function (s) { s.addEventListener("change", applyFilters); });
  applyFilters();
}());
