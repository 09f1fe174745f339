-- Saved Athena queries for the dmarc-tsv table. This file is the ONE source: the CDK stack (infra/lib/athena.ts)
-- turns every block starting with a `-- name:` line into an Athena named query in the stack's workgroup,
-- replacing the default table name "dmarc"."dmarc_reports" with the deployed database and table.
-- Each block: `-- name: <QueryName>`, optional `-- description: <text>`, then one SQL statement.
-- Tip: add `WHERE dt >= '2024-01-01'` (the partition, = report begin date UTC) to scan less data.

-- name: DispositionSummary
-- description: Messages per DMARC disposition applied by receivers (the seed tool's query).
SELECT disposition, sum(count) AS number
FROM "dmarc"."dmarc_reports"
WHERE disposition != ''
GROUP BY disposition
ORDER BY number DESC;

-- name: TopFailingSources
-- description: Source IPs whose messages failed DMARC (neither DKIM nor SPF aligned pass), last 30 days.
SELECT source_ip, header_from, sum(count) AS messages, count(DISTINCT org_name) AS reporters
FROM "dmarc"."dmarc_reports"
WHERE dt >= date_format(current_date - INTERVAL '30' DAY, '%Y-%m-%d')
  AND policy_dkim != 'pass'
  AND policy_spf != 'pass'
GROUP BY source_ip, header_from
ORDER BY messages DESC
LIMIT 100;

-- name: PerReporterTotals
-- description: Reports, rows and messages per reporting organisation, with the covered date range.
SELECT org_name,
       count(DISTINCT report_id) AS reports,
       count(*) AS row_count,
       sum(count) AS messages,
       min(date_begin) AS first_begin,
       max(date_end) AS last_end
FROM "dmarc"."dmarc_reports"
GROUP BY org_name
ORDER BY messages DESC;

-- name: PassRatesBySource
-- description: DKIM, SPF and DMARC pass rates (share of messages) per sending source IP and From domain.
SELECT source_ip,
       header_from,
       sum(count) AS messages,
       round(1.0 * sum(CASE WHEN policy_dkim = 'pass' THEN count ELSE 0 END) / sum(count), 4) AS dkim_pass_rate,
       round(1.0 * sum(CASE WHEN policy_spf = 'pass' THEN count ELSE 0 END) / sum(count), 4) AS spf_pass_rate,
       round(1.0 * sum(CASE WHEN policy_dkim = 'pass' OR policy_spf = 'pass' THEN count ELSE 0 END) / sum(count), 4)
         AS dmarc_pass_rate
FROM "dmarc"."dmarc_reports"
WHERE count > 0
GROUP BY source_ip, header_from
ORDER BY messages DESC
LIMIT 500;
