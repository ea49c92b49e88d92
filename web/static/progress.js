// Refreshes the jobs table every two seconds from /jobs.json: status,
// its detail (a network job waiting for a worker that allows it), checkpoints,
// executed time, price, worker and the lease bar.
(function () {
  var table = document.getElementById("jobs");
  if (!table) return;
  function refresh() {
    // the page shown (?after=...), one page only
    fetch("/jobs.json" + window.location.search, {credentials: "same-origin"}).then(function (response) {
      if (!response.ok) throw new Error(response.status);
      return response.json();
    }).then(function (jobs) {
      var unfinished = false;
      jobs.forEach(function (job) {
        var row = table.querySelector('tr[data-job="' + job.job_id + '"]');
        if (!row) return;
        ["status", "detail", "checkpoint", "executed", "price", "worker_id"].forEach(function (field) {
          var cell = row.querySelector('[data-field="' + field + '"]');
          if (cell) cell.textContent = job[field];
        });
        row.querySelector('[data-field="status"]').className = "status " + job.status;
        row.querySelector('[data-field="bar"]').style.width = (job.bar || 0) + "%";
        if (job.terminal) {
          var form = row.querySelector("form.reprice");
          if (form) form.remove();
        } else {
          unfinished = true;
        }
      });
      if (unfinished) setTimeout(refresh, 2000);
    }).catch(function () { setTimeout(refresh, 5000); });
  }
  setTimeout(refresh, 2000);
})();
