-- Evidence of one SIM for one month: each usage event once, by the end of its window.
-- Parameters: month (YYYY-MM), sim_sid.
SELECT
  day,
  event_sid,
  kind,
  event_time,
  window_start,
  window_end,
  network_name,
  iso_country,
  data_upload,
  data_download,
  data_total,
  deliveries,
  data_sha256
FROM usage_events
WHERE day LIKE concat(?, '-%') AND sim_sid = ?
ORDER BY window_end, event_sid
