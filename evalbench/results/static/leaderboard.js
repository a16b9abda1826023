// evalbench leaderboard: sort (click a header), filter (the text box), provenance rows; no libraries.
"use strict";
(function () {
  function entries(table) { return Array.prototype.slice.call(table.tBodies); }

  function sortKey(entry, col, numeric) {
    var cell = entry.rows[0].cells[col];
    if (!cell) { return null; }
    var v = cell.getAttribute("data-v");
    if (numeric) { return v === null || v === "" ? null : parseFloat(v); }
    return (v !== null ? v : cell.textContent).toLowerCase();
  }

  function sortTable(table, th) {
    var col = parseInt(th.getAttribute("data-col"), 10);
    var numeric = th.getAttribute("data-type") === "num";
    // numbers: highest first on the first click; text: A-Z first
    var desc = th.getAttribute("aria-sort") ? th.getAttribute("aria-sort") === "ascending" : numeric;
    Array.prototype.forEach.call(table.querySelectorAll("th[aria-sort]"), function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", desc ? "descending" : "ascending");
    var rows = entries(table).map(function (e, i) { return { e: e, k: sortKey(e, col, numeric), i: i }; });
    rows.sort(function (a, b) {
      if (a.k === null || b.k === null) { return a.k === null ? (b.k === null ? a.i - b.i : 1) : -1; }  // blanks last
      if (a.k < b.k) { return desc ? 1 : -1; }
      if (a.k > b.k) { return desc ? -1 : 1; }
      return a.i - b.i;  // stable
    });
    rows.forEach(function (r) { table.appendChild(r.e); });
  }

  function applyFilter(query) {
    var q = query.trim().toLowerCase();
    var shown = 0, total = 0;
    Array.prototype.forEach.call(document.querySelectorAll("table.lb"), function (table) {
      entries(table).forEach(function (e) {
        var text = (e.getAttribute("data-search") || "") + " " + e.rows[0].textContent;
        var match = q === "" || text.toLowerCase().indexOf(q) !== -1;
        e.hidden = !match;
        total += 1;
        if (match) { shown += 1; }
      });
    });
    var count = document.getElementById("count");
    if (count) { count.textContent = q === "" ? "" : shown + " of " + total + " rows"; }
  }

  function toggle(button) {
    var prov = button.closest("tbody").rows[1];
    var open = button.getAttribute("aria-expanded") === "true";
    prov.hidden = open;
    button.setAttribute("aria-expanded", open ? "false" : "true");
    button.textContent = open ? "\u25B8" : "\u25BE";
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table.lb th.sortable"), function (th) {
      th.addEventListener("click", function () { sortTable(th.closest("table"), th); });
    });
    Array.prototype.forEach.call(document.querySelectorAll("table.lb td.name button"), function (b) {
      b.addEventListener("click", function () { toggle(b); });
    });
    var box = document.getElementById("filter");
    if (box) {
      box.addEventListener("input", function () { applyFilter(box.value); });
      applyFilter(box.value);
    }
  });
})();
