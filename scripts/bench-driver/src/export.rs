//! `kore-usage export`'s memory: 100,000 events, and a tenth of them, exported by the
//! binary as a child process whose peak resident memory is sampled.

use std::time::{Duration, Instant};

use kore_ingest_core::delivery::Outcome;
use kore_ingest_core::port::Ledger;

use crate::figures::RECOMMENDED_RETENTION_DAYS;
use crate::measured::{BATCH, counted_ledger_kept, fleet_windows};
use crate::rows::row;

/// `kore-usage export` of 100,000 events, and of a tenth of them, as a child process: its
/// peak resident memory (the kernel's count, `ru_maxrss`) must not grow with the events.
pub async fn export_memory_row(kore_usage: &str) -> Result<(), String> {
    const SIMS: usize = 1_000;
    const WINDOWS: usize = 100;
    // Written as the recommended retention writes them: the storage row splits what
    // expires from what is kept.
    let (ledger, _) = counted_ledger_kept("export", Some(RECOMMENDED_RETENTION_DAYS)).await?;
    let fleet = fleet_windows("x", SIMS, WINDOWS);
    let loaded = Instant::now();
    for batch in fleet.chunks(BATCH) {
        let inputs: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    kore_test_support::parse_item(&e.twilio_json()),
                    kore_test_support::kinesis(i as u64),
                )
            })
            .collect();
        let outcomes = ledger.record_batch(&inputs, None).await;
        if let Some(o) = outcomes.iter().find(|o| !matches!(o, Outcome::New)) {
            return Err(format!("loading the export's events: {o:?}"));
        }
    }
    let load_time = loaded.elapsed();
    // The windows end from 06:01 on 3 November, 15 minutes apart: 100 windows reach into
    // the 4th. A tenth of the range holds a tenth of the events.
    let measure = |start: &str, end: &str| peak_memory(kore_usage, ledger.table_name(), start, end);
    let (small_kib, small_lines, _) = measure("2024-11-03T06:00:00Z", "2024-11-03T08:00:00Z")?;
    let (large_kib, large_lines, large_time) =
        measure("2024-11-03T00:00:00Z", "2024-11-05T00:00:00Z")?;
    if large_lines != SIMS * WINDOWS {
        return Err(format!(
            "export wrote {large_lines} lines, not {}",
            SIMS * WINDOWS
        ));
    }
    row(
        "kore-usage export: peak RSS for 100,000 events (and for 8,000)",
        &format!(
            "{:.1} MiB ({:.1} MiB for {small_lines} events); {:.1} s; events loaded in {:.0} s",
            large_kib as f64 / 1024.0,
            small_kib as f64 / 1024.0,
            large_time.as_secs_f64(),
            load_time.as_secs_f64()
        ),
        "bounded",
    );
    let days = [3, 4].map(|d| chrono::NaiveDate::from_ymd_opt(2024, 11, d).unwrap_or_default());
    crate::stored::stored_row(&ledger, (SIMS * WINDOWS) as u64).await?;
    crate::archive::seal_row(&ledger, &days, (SIMS * WINDOWS) as u64).await
}

/// `kore-usage export` of `[start, end)` from `table`: the child's peak memory in KiB, the
/// lines it wrote, how long it took. The child's own high-water mark (VmHWM), sampled while
/// it runs: it starts again at the exec, where the rusage counts would include the parent's
/// pages it was forked with.
fn peak_memory(
    kore_usage: &str,
    table: &str,
    start: &str,
    end: &str,
) -> Result<(u64, usize, Duration), String> {
    let started = Instant::now();
    let mut child = std::process::Command::new(kore_usage)
        .args([
            "--table", table, "export", "--start", start, "--end", end, "--format", "jsonl",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {kore_usage}: {e}"))?;
    let status_file = format!("/proc/{}/status", child.id());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak_kib = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let hwm = std::fs::read_to_string(&status_file).ok().and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                });
                peak_kib = peak_kib.max(hwm.unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak_kib
        })
    };
    let mut lines = 0;
    if let Some(stdout) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).split(b'\n') {
            line.map_err(|e| format!("reading the export: {e}"))?;
            lines += 1;
        }
    }
    let status = child.wait().map_err(|e| format!("export: {e}"))?;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_kib = sampler.join().unwrap_or(0);
    if !status.success() {
        return Err(format!("export failed ({status})"));
    }
    Ok((peak_kib, lines, started.elapsed()))
}
