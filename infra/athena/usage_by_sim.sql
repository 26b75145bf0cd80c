-- Usage by SIM for one month, from the day rollups: bytes, events and days with usage.
-- Parameters: month, month (the month YYYY-MM, for its first and its last day).
SELECT
  sim_sid,
  account_sid,
  sum(data_total) AS data_total,
  sum(usage_events) AS usage_events,
  count(DISTINCT day) AS days
FROM usage_rollups
-- A range of the partition column: Athena reads only the month's days.
WHERE day BETWEEN concat(?, '-01') AND concat(?, '-31')
GROUP BY sim_sid, account_sid
ORDER BY sim_sid, account_sid
