"""Runs the saved Athena queries (doc/athena-queries.sql) on DuckDB, Athena's local stand-in: a table
with the columns of infra/schema/columns.json plus the dt partition, a few rows, and a `date_format`
macro (a Trino function DuckDB names strftime). Catches unknown columns and SQL typos.

usage: python run_queries_duckdb.py COLUMNS_JSON QUERIES_JSON   (QUERIES_JSON: [{"name","sql"}])
Prints one line per query: name, row count. Exit 1 on the first failing query.
"""

import datetime
import json
import sys

import duckdb

TYPES = {"string": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT", "timestamp": "TIMESTAMP",
         "date": "DATE", "double": "DOUBLE", "boolean": "BOOLEAN"}


def sample_value(name, kind, i):
    if kind == "timestamp":
        return f"2024-01-0{i + 1} 00:00:00"
    if kind in ("int", "bigint"):
        return 10 * (i + 1)
    if name in ("policy_dkim", "policy_spf"):
        return ["pass", "fail"][i % 2]
    if name == "disposition":
        return ["none", "quarantine"][i % 2]
    return f"{name}-{i}"


def main():
    columns = json.load(open(sys.argv[1]))
    queries = json.load(open(sys.argv[2]))
    db = duckdb.connect()
    db.execute("CREATE SCHEMA dmarc")
    ddl = ", ".join(f'"{c["name"]}" {TYPES[c["type"]]}' for c in columns)
    db.execute(f"CREATE TABLE dmarc.dmarc_reports ({ddl}, dt VARCHAR)")
    # An old passing row and a recent failing one (so the "last 30 days" query finds something).
    partitions = ["2024-01-01", datetime.date.today().isoformat()]
    for i, dt in enumerate(partitions):
        values = [sample_value(c["name"], c["type"], i) for c in columns]
        db.execute(f"INSERT INTO dmarc.dmarc_reports VALUES ({', '.join('?' * (len(values) + 1))})",
                   values + [dt])
    db.execute("CREATE MACRO date_format(d, f) AS strftime(d, f)")
    for q in queries:
        try:
            rows = db.execute(q["sql"].rstrip().rstrip(";")).fetchall()
        except duckdb.Error as e:
            print(f"{q['name']}: {e}")
            return 1
        print(f"{q['name']}\t{len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
