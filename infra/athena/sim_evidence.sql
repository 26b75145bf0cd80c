-- Evidence of one SIM for one month: each usage event once, by the end of its window.
-- Parameters: month, month, sim_sid (the month YYYY-MM twice, then the SIM).
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
-- A range of the partition column: Athena reads only the month's days.
WHERE day BETWEEN concat(?, '-01') AND concat(?, '-31') AND sim_sid = ?
ORDER BY window_end, event_sid
