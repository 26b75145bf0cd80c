//! Figures that one `ingest-bench` command measures and another computes with: the cost
//! table ([`crate::cost_table`]) is worked out from what `storage` and `export` measured,
//! which run as separate processes. Each figure is appended as a `name value` line to the
//! file `BENCH_FIGURES` names; without it, figures are not kept.

use std::collections::BTreeMap;
use std::io::Write;

/// The variable naming the figures file.
pub const FILE_VAR: &str = "BENCH_FIGURES";

/// The ledger retention the README recommends, in days: what the bench measures with
/// `expires_at` on.
pub const RECOMMENDED_RETENTION_DAYS: u64 = 45;

/// Write units AWS bills per new usage event, one per SIM per batch, kept forever.
pub const WCU_PER_NEW_EVENT: &str = "wcu_per_new_event";
/// The same with `LEDGER_RETENTION_DAYS` set (`expires_at` on).
pub const WCU_PER_NEW_EXPIRING_EVENT: &str = "wcu_per_new_expiring_event";
/// Read units per delivery (the consistent duplicate check).
pub const READ_UNITS_PER_DELIVERY: &str = "read_units_per_delivery";
/// Bytes DynamoDB bills storage for per usage event, of the items that expire (event
/// records, booking lists) and of those kept (rollups).
pub const LEDGER_BYTES_EXPIRING: &str = "ledger_bytes_expiring_per_event";
pub const LEDGER_BYTES_KEPT: &str = "ledger_bytes_kept_per_event";
/// Parquet bytes per usage event, and ledger read units per event of one seal pass.
pub const PARQUET_BYTES: &str = "parquet_bytes_per_event";
pub const SEAL_READ_UNITS: &str = "seal_read_units_per_event";

/// Keeps `value` as `name` in the figures file, if there is one. A figure that cannot be
/// kept is reported, not fatal: the table row it belongs to is printed anyway.
pub fn record(name: &str, value: f64) {
    let Ok(path) = std::env::var(FILE_VAR) else {
        return;
    };
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{name} {value}"));
    if let Err(e) = appended {
        eprintln!("ingest-bench: cannot keep {name} in {path}: {e}");
    }
}

/// The figures kept in `path`; a name kept twice has its last value.
pub fn read(path: &str) -> Result<BTreeMap<String, f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("{path}: not `name value`: {line:?}"))?;
            let value = value
                .trim()
                .parse::<f64>()
                .map_err(|e| format!("{path}: {name}: {e}"))?;
            Ok((name.to_owned(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_back_by_name_and_a_bad_line_is_named() {
        let path = std::env::temp_dir().join(format!("figures-{}", std::process::id()));
        std::fs::write(
            &path,
            "parquet_bytes_per_event 150.5\n\nwcu_per_new_event 6\n",
        )
        .unwrap();
        let read_back = read(path.to_str().unwrap()).unwrap();
        assert_eq!(read_back[PARQUET_BYTES], 150.5);
        assert_eq!(read_back[WCU_PER_NEW_EVENT], 6.0);
        std::fs::write(&path, "wcu_per_new_event six\n").unwrap();
        let error = read(path.to_str().unwrap()).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(error.contains("wcu_per_new_event"), "{error}");
    }
}
