/**
 * The script of the traffic page, served as `/assets/traffic.js`. Kept as
 * text in a module so that it is part of the bundle `npm start` builds
 * (dist/ has no src/ files beside it).
 */
export const TRAFFIC_JS = `// The traffic plots: uPlot charts drawn from the numbers of the page's own
// table (#traffic-table), which is what a browser without scripts shows.
/* global uPlot */
(function () {
  'use strict';
  var table = document.getElementById('traffic-table');
  if (!table || typeof uPlot !== 'function') return;
  var cols = { day: [], requests: [], bytes: [], c4xx: [], c5xx: [] };
  // The table is newest first; the plots run oldest to newest.
  Array.prototype.slice.call(table.querySelectorAll('tbody tr')).reverse().forEach(function (tr) {
    cols.day.push(Date.parse(tr.getAttribute('data-day') + 'T00:00:00Z') / 1000);
    ['requests', 'bytes', 'c4xx', 'c5xx'].forEach(function (k) {
      cols[k].push(Number(tr.querySelector('[data-k="' + k + '"]').getAttribute('data-v')));
    });
  });
  var width = Math.min(720, document.querySelector('main').clientWidth || 720);
  function chart(id, title, series, data) {
    var el = document.getElementById(id);
    var opts = {
      title: title,
      width: width,
      height: 220,
      scales: { x: { time: true } },
      series: [{}].concat(series),
      axes: [{}, { size: 70 }],
    };
    return new uPlot(opts, data, el);
  }
  window.mwTraffic = {
    requests: chart('plot-requests', 'Requests per day', [{ label: 'Requests', stroke: '#1565c0', width: 2 }], [cols.day, cols.requests]),
    bytes: chart('plot-bytes', 'Bytes sent per day', [{ label: 'Bytes', stroke: '#2e7d32', width: 2 }], [cols.day, cols.bytes]),
    errors: chart(
      'plot-errors',
      'Errors per day',
      [
        { label: '4xx', stroke: '#ef6c00', width: 2 },
        { label: '5xx', stroke: '#c62828', width: 2 },
      ],
      [cols.day, cols.c4xx, cols.c5xx],
    ),
  };
  document.getElementById('traffic-plots').hidden = false;
  // Mail per day, from #mail-table the same way.
  var mail = document.getElementById('mail-table');
  if (!mail) return;
  var m = { day: [], forwarded: [], refused: [], bounced: [] };
  Array.prototype.slice.call(mail.querySelectorAll('tbody tr')).reverse().forEach(function (tr) {
    m.day.push(Date.parse(tr.getAttribute('data-day') + 'T00:00:00Z') / 1000);
    ['forwarded', 'refused', 'bounced'].forEach(function (k) {
      m[k].push(Number(tr.querySelector('[data-k="' + k + '"]').getAttribute('data-v')));
    });
  });
  window.mwTraffic.mail = chart(
    'plot-mail',
    'Mail per day',
    [
      { label: 'Forwarded', stroke: '#1565c0', width: 2 },
      { label: 'Refused', stroke: '#ef6c00', width: 2 },
      { label: 'Bounced', stroke: '#c62828', width: 2 },
    ],
    [m.day, m.forwarded, m.refused, m.bounced],
  );
  document.getElementById('mail-plots').hidden = false;
})();
`;
