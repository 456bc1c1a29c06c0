// reportgen: sort and filter the unit grids of layer pages (plain DOM, no dependencies).
(function () {
  function ratio(tile) {
    var value = parseFloat(tile.dataset.ratio);
    return isNaN(value) ? -Infinity : value;
  }

  function setUp(grid) {
    if (grid.dataset.rgReady) return;
    grid.dataset.rgReady = "1";
    var tiles = Array.prototype.slice.call(grid.querySelectorAll(".rg-tile"));
    var bar = document.createElement("div");
    bar.className = "rg-controls";
    bar.innerHTML =
      '<label>Sort <select class="rg-sort">' +
      '<option value="channel">by channel</option>' +
      '<option value="ratio-desc">by activation ratio, highest first</option>' +
      '<option value="ratio-asc">by activation ratio, lowest first</option>' +
      "</select></label>" +
      '<label><input type="checkbox" class="rg-only-dead"> only units that never fire</label>' +
      '<label><input type="checkbox" class="rg-only-redundant"> only redundant units (with a twin)</label>' +
      '<label><input type="checkbox" class="rg-weak"> only renders weaker than real images (ratio &lt; 1)</label>' +
      '<span class="rg-count"></span>';
    grid.parentNode.insertBefore(bar, grid);
    var sort = bar.querySelector(".rg-sort");
    var dead = bar.querySelector(".rg-only-dead");
    var redundant = bar.querySelector(".rg-only-redundant");
    var weak = bar.querySelector(".rg-weak");
    var countLabel = bar.querySelector(".rg-count");

    function apply() {
      var order = tiles.slice();
      if (sort.value === "ratio-desc") order.sort(function (a, b) { return ratio(b) - ratio(a); });
      if (sort.value === "ratio-asc") order.sort(function (a, b) { return ratio(a) - ratio(b); });
      var shown = 0;
      order.forEach(function (tile) {
        var hide = (dead.checked && tile.dataset.dead !== "1") ||
                   (redundant.checked && tile.dataset.redundant !== "1") ||
                   (weak.checked && !(ratio(tile) < 1 && ratio(tile) > -Infinity));
        tile.hidden = hide;
        if (!hide) shown += 1;
        grid.appendChild(tile);
      });
      countLabel.textContent = shown + " of " + tiles.length + " units";
    }

    [sort, dead, redundant, weak].forEach(function (input) { input.addEventListener("change", apply); });
    apply();
  }

  function init() {
    document.querySelectorAll("[data-rg-sortable]").forEach(setUp);
  }

  if (window.document$ && typeof window.document$.subscribe === "function") {
    window.document$.subscribe(init);  // Material's page-load stream (works with instant loading)
  } else {
    document.addEventListener("DOMContentLoaded", init);
  }
})();
