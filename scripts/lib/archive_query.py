"""One of the archive's Athena queries, run unchanged by DuckDB over the local archive.

The archive's tables are views over its Parquet parts (`TABLE/day=YYYY-MM-DD/part-N.parquet`)
with `day` read from the folder as text, as Athena's partition projection gives it. A
query's parameters are named on its `-- Parameters:` line and bound in that order.
"""

import argparse
import glob
import csv
import datetime
import os
import re
import sys

import duckdb

TABLES = ("usage_events", "other_events", "usage_rollups")


def archive_folder():
    url = os.environ.get("ARCHIVE_URL") or "file://.local/archive"
    if not url.startswith("file://") or len(url) == len("file://"):
        sys.exit(f"archive-query: ARCHIVE_URL {url}: only a local archive (file://FOLDER) is read here; "
                 "query an S3 archive with Athena")
    return url[len("file://"):]


def parameters(sql, name):
    found = re.search(r"^-- Parameters:(.*)$", sql, re.MULTILINE)
    if not found:
        sys.exit(f"archive-query: {name}.sql has no '-- Parameters:' line")
    # "month, month, sim_sid (an explanation)": the names, in the order they are bound.
    names = found.group(1).split("(")[0]
    return [p.strip() for p in names.split(",") if p.strip()]


def main():
    parser = argparse.ArgumentParser(prog="archive-query")
    parser.add_argument("--sql-dir", required=True)
    parser.add_argument("name")
    parser.add_argument("--month", default=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m"))
    parser.add_argument("--sim")
    args = parser.parse_args()
    if not re.fullmatch(r"\d{4}-\d{2}", args.month):
        sys.exit(f"archive-query: --month {args.month}: give YYYY-MM")
    path = os.path.join(args.sql_dir, f"{args.name}.sql")
    if not re.fullmatch(r"[a-z_]+", args.name) or not os.path.isfile(path):
        known = sorted(f[:-4] for f in os.listdir(args.sql_dir) if f.endswith(".sql"))
        sys.exit(f"archive-query: no query {args.name!r}; the queries are: {', '.join(known)}")
    sql = open(path, encoding="utf-8").read()
    values = {"month": args.month, "sim_sid": args.sim}
    bound = []
    for name in parameters(sql, args.name):
        if values.get(name) is None:
            sys.exit(f"archive-query: {args.name} needs --{'sim' if name == 'sim_sid' else name}")
        bound.append(values[name])

    folder = archive_folder()
    db = duckdb.connect()
    for table in TABLES:
        parts = os.path.join(folder, table, "day=*", "*.parquet")
        if glob.glob(parts):
            quoted = parts.replace("'", "''")
            db.execute(
                f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{quoted}', "
                "hive_partitioning = true, hive_types = {'day': VARCHAR})"
            )
    try:
        result = db.execute(sql, bound)
    except duckdb.CatalogException as e:
        sys.exit(f"archive-query: {e}: no sealed day in {folder} has that table "
                 "(seal days with kore-usage archive seal)")
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow([column[0] for column in result.description])
    for row in result.fetchall():
        out.writerow(["" if v is None else v for v in row])


if __name__ == "__main__":
    main()
