-- Usage by account and country for one month, from the day rollups.
-- Parameters: month, month (the month YYYY-MM, for its first and its last day).
SELECT
  account_sid,
  iso_country,
  sum(data_upload) AS data_upload,
  sum(data_download) AS data_download,
  sum(data_total) AS data_total,
  sum(usage_events) AS usage_events
FROM usage_rollups
-- A range of the partition column: Athena reads only the month's days.
WHERE day BETWEEN concat(?, '-01') AND concat(?, '-31')
GROUP BY account_sid, iso_country
ORDER BY account_sid, iso_country
