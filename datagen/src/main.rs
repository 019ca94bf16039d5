//! Writes sample agency files: `datagen --out .data --rows 100,60 --winners 2,1`;
//! with no options, the course's five agencies ([`datagen::COURSE_ROWS`]).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;

/// Generate realistic agency files `agency-K.csv`, deterministic from a seed.
///
/// Prints one line per agency: `agency-K.csv rows=R winners=DNI,DNI,...`.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Folder to write the files into (created if missing).
    #[arg(long, default_value = ".data")]
    out: PathBuf,
    /// How many agencies.
    #[arg(long, default_value_t = datagen::COURSE_ROWS.len())]
    agencies: usize,
    /// Rows per agency: one value for all, or one per agency, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = datagen::COURSE_ROWS)]
    rows: Vec<usize>,
    /// Winners per agency: one value for all, or one per agency.
    #[arg(long, value_delimiter = ',', default_values_t = [datagen::COURSE_WINNERS])]
    winners: Vec<usize>,
    /// Seed of the generator.
    #[arg(long, default_value_t = datagen::SAMPLE_SEED)]
    seed: u64,
}

fn per_agency(values: &[usize], agencies: usize, name: &str) -> anyhow::Result<Vec<usize>> {
    match values {
        [one] => Ok(vec![*one; agencies]),
        many if many.len() == agencies => Ok(many.to_vec()),
        many => bail!("--{name} has {} values for {agencies} agencies", many.len()),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rows = per_agency(&args.rows, args.agencies, "rows")?;
    let winners = per_agency(&args.winners, args.agencies, "winners")?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let agencies = datagen::generate(&args.out, &rows, &winners, args.seed)
        .with_context(|| format!("cannot write into {}", args.out.display()))?;
    for a in agencies {
        let name = a.path.file_name().unwrap_or_default().to_string_lossy();
        println!("{name} rows={} winners={}", a.rows, a.winners.join(","));
    }
    Ok(())
}
