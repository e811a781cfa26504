//! EBS direct transfer against its pipeline limit: downloads every block of a snapshot
//! (GetSnapshotBlock) and uploads every non-zero block of a local image to a new snapshot
//! (StartSnapshot, PutSnapshotBlock, CompleteSnapshot), at each concurrency asked for,
//! through the same code `migrate` uses. With a fixed latency per request the ideal rate is
//! `concurrency / latency`.
//!
//!   cargo bench --bench ebs_transfer -- IMAGE CONCURRENCY… --fake-latency-ms MS [--runs N]
//!   cargo bench --bench ebs_transfer -- IMAGE CONCURRENCY… --snapshot SNAP [--runs N]
//!
//! With `--fake-latency-ms` the endpoint is an in-process server ([`fake_ebs`]) holding IMAGE
//! as a snapshot and each request that long: the pipeline alone. With `--snapshot` it is
//! whatever the standard AWS chain names (`AWS_ENDPOINT_URL`, e.g. the moto server), and SNAP
//! must hold IMAGE; upload snapshots are deleted after each run. Prints one JSON object per
//! line and run: direction, concurrency, blocks, seconds, blocks/s.

mod fake_ebs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pv2hvm::aws::ebs::{self, EbsSnapshotSource, NewSnapshot, Transfer};
use pv2hvm::aws::{Aws, Connection, ec2};
use pv2hvm::io::BlockSource;

fn main() {
    if let Err(e) = run() {
        eprintln!("ebs_transfer: {e}");
        std::process::exit(1);
    }
}

/// Takes `--name VALUE` out of `args`.
fn option(args: &mut Vec<String>, name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    let value = args.get(i + 1).cloned();
    args.drain(i..(i + 2).min(args.len()));
    value
}

fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let runs: usize = option(&mut args, "--runs").map_or(Ok(5), |n| n.parse()).map_err(|_| "--runs needs a number")?;
    let fake = option(&mut args, "--fake-latency-ms");
    let snapshot = option(&mut args, "--snapshot");
    let [image, concurrencies @ ..] = args.as_slice() else {
        return Err("usage: ebs_transfer IMAGE CONCURRENCY… (--fake-latency-ms MS | --snapshot SNAP) [--runs N]".into());
    };
    let image = PathBuf::from(image);
    let concurrencies: Vec<usize> = concurrencies
        .iter()
        .map(|c| c.parse().map_err(|_| format!("not a concurrency: {c}")))
        .collect::<Result<_, _>>()?;
    let snapshot = match (fake, snapshot) {
        (Some(ms), None) => {
            let ms: u64 = ms.parse().map_err(|_| "--fake-latency-ms needs a number")?;
            let url = fake_ebs::serve(&image, Duration::from_millis(ms))
                .map_err(|e| format!("serving {}: {e}", image.display()))?;
            // SAFETY: set before any other thread of this process exists (the runtime is made
            // by `Aws::connect` below).
            unsafe {
                std::env::set_var("AWS_ENDPOINT_URL", url);
                std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
                std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
                std::env::set_var("AWS_REGION", "us-east-1");
                std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
            }
            None
        }
        (None, Some(snap)) => Some(snap),
        _ => return Err("give one of --fake-latency-ms and --snapshot".into()),
    };
    let aws =
        Aws::connect(&Connection { region: None, profile: None, adaptive_retry: false }).map_err(|e| e.to_string())?;
    let snap = snapshot.clone().unwrap_or_else(|| fake_ebs::SNAPSHOT.to_string());
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    for &c in &concurrencies {
        for run in 1..=runs {
            let source = EbsSnapshotSource::open(&aws, &snap, work.path(), c).map_err(|e| e.to_string())?;
            let started = Instant::now();
            let everything = 0..source.len();
            source.prefetch(std::slice::from_ref(&everything)).map_err(|e| format!("downloading {snap}: {e}"))?;
            report("download", c, run, source.fetches.blocks(), started.elapsed().as_secs_f64());
            drop(source);

            let new = NewSnapshot {
                parent: None,
                encrypt: None,
                size_gib: std::fs::metadata(&image).map_err(|e| e.to_string())?.len().div_ceil(1 << 30) as i64,
                description: "pv2hvm ebs_transfer benchmark".into(),
                tags: Vec::new(),
                client_token: format!("pv2hvm-bench-{}-{c}-{run}", std::process::id()),
            };
            let uploads = Arc::new(Transfer::default());
            let started = Instant::now();
            let id = ebs::upload_image(&aws, &image, &new, c, &uploads).map_err(|e| e.to_string())?;
            report("upload", c, run, uploads.blocks(), started.elapsed().as_secs_f64());
            if snapshot.is_some() {
                ec2::delete_snapshot(&aws, &id).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

fn report(direction: &str, concurrency: usize, run: usize, blocks: u64, seconds: f64) {
    println!(
        "{{\"direction\":\"{direction}\",\"concurrency\":{concurrency},\"run\":{run},\"blocks\":{blocks},\"seconds\":{seconds:.3},\"blocks_per_s\":{:.1}}}",
        blocks as f64 / seconds
    );
}
