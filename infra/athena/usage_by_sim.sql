-- Usage by SIM for one month, from the day rollups: bytes, events and days with usage.
-- Parameters: month (YYYY-MM).
SELECT
  sim_sid,
  account_sid,
  sum(data_total) AS data_total,
  sum(usage_events) AS usage_events,
  count(DISTINCT day) AS days
FROM usage_rollups
WHERE day LIKE concat(?, '-%')
GROUP BY sim_sid, account_sid
ORDER BY sim_sid, account_sid
