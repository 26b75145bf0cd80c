-- Usage by account and country for one month, from the day rollups.
-- Parameters: month (YYYY-MM).
SELECT
  account_sid,
  iso_country,
  sum(data_upload) AS data_upload,
  sum(data_download) AS data_download,
  sum(data_total) AS data_total,
  sum(usage_events) AS usage_events
FROM usage_rollups
WHERE day LIKE concat(?, '-%')
GROUP BY account_sid, iso_country
ORDER BY account_sid, iso_country
