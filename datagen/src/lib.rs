//! Realistic sample agency files, deterministic from a seed.
//!
//! Each row is `nombre,apellido,documento,nacimiento,numero`: Spanish names
//! with accents (and now and then two given names or a compound surname),
//! 8-digit DNIs, birth dates from 1940 to 2006 and numbers 0 to 9999. Every
//! agency gets exactly the number of winners asked for (bets on
//! [`WINNING_NUMBER`]); no other row bets on it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use rand::seq::{index, IndexedRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use lottery::WINNING_NUMBER;

/// Rows of the five agencies of the course's dataset: the sizes of the sample
/// data (`make sample-data`, `datagen`'s defaults), of the benchmark and of
/// the chaos campaign. The one place these numbers live.
pub const COURSE_ROWS: [usize; 5] = [26936, 25518, 16014, 9238, 991];

/// Winners in each sample agency file, beside [`COURSE_ROWS`].
pub const COURSE_WINNERS: usize = 3;

/// The seed of the sample data: `datagen` and the benchmark make the same files.
pub const SAMPLE_SEED: u64 = 75_74;

const FIRST_NAMES: &[&str] = &[
    "Santiago",
    "Lionel",
    "María",
    "José",
    "Lucía",
    "Martín",
    "Sofía",
    "Matías",
    "Valentina",
    "Joaquín",
    "Camila",
    "Tomás",
    "Agustina",
    "Nicolás",
    "Julián",
    "Florencia",
    "Sebastián",
    "Inés",
    "Ramón",
    "Belén",
    "Andrés",
    "Mónica",
    "Germán",
    "Verónica",
    "Iván",
    "Ángela",
    "Agustín",
    "Rocío",
    "Facundo",
    "Milagros",
    "Hernán",
    "Noelia",
    "Cristian",
    "Lourdes",
];

const LAST_NAMES: &[&str] = &[
    "Lorca",
    "González",
    "Rodríguez",
    "Gómez",
    "Fernández",
    "López",
    "Díaz",
    "Martínez",
    "Pérez",
    "García",
    "Sánchez",
    "Romero",
    "Sosa",
    "Álvarez",
    "Torres",
    "Ruiz",
    "Ramírez",
    "Flores",
    "Benítez",
    "Acosta",
    "Medina",
    "Herrera",
    "Suárez",
    "Aguirre",
    "Giménez",
    "Gutiérrez",
    "Peña",
    "Núñez",
    "Ibáñez",
    "Domínguez",
    "Muñoz",
    "Ortiz",
    "Quiroga",
];

/// One generated agency file and what the draw must find in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedAgency {
    pub agency: u32,
    pub path: PathBuf,
    pub rows: usize,
    /// DNIs of the agency's winning bets, in file order.
    pub winners: Vec<String>,
}

/// Writes `agency-K.csv` for K in `1..=rows.len()` into `dir`.
///
/// `rows[K-1]` and `winners[K-1]` are agency K's row count and winner count.
pub fn generate(
    dir: &Path,
    rows: &[usize],
    winners: &[usize],
    seed: u64,
) -> io::Result<Vec<GeneratedAgency>> {
    rows.iter()
        .zip(winners)
        .enumerate()
        .map(|(i, (&rows, &winners))| {
            let agency = i as u32 + 1;
            let path = dir.join(format!("agency-{agency}.csv"));
            // One stream per agency: an agency's file does not change when
            // another agency's size does.
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (u64::from(agency) << 32));
            let mut out = BufWriter::new(File::create(&path)?);
            let winners = write_agency(&mut out, &mut rng, rows, winners)?;
            out.flush()?;
            Ok(GeneratedAgency { agency, path, rows, winners })
        })
        .collect()
}

/// Writes `rows` bets, `winners` of them on the winning number, and returns
/// the winners' DNIs.
pub fn write_agency<W: Write>(
    out: W,
    rng: &mut impl Rng,
    rows: usize,
    winners: usize,
) -> io::Result<Vec<String>> {
    let winners = winners.min(rows);
    let mut winning_rows = index::sample(rng, rows, winners).into_vec();
    winning_rows.sort_unstable();
    let mut winning_rows = winning_rows.into_iter().peekable();
    let mut documents = Vec::with_capacity(winners);
    let mut out = csv::WriterBuilder::new().has_headers(false).from_writer(out);
    for row in 0..rows {
        let first = given_names(rng);
        let last = surnames(rng);
        let document = rng.random_range(10_000_000u32..100_000_000).to_string();
        let birthdate = random_date(rng).to_string();
        let number = if winning_rows.next_if_eq(&row).is_some() {
            documents.push(document.clone());
            WINNING_NUMBER
        } else {
            loop {
                let n = rng.random_range(0..10_000);
                if n != WINNING_NUMBER {
                    break n;
                }
            }
        };
        out.write_record([first.as_str(), &last, &document, &birthdate, &number.to_string()])?;
    }
    out.flush()?;
    Ok(documents)
}

fn given_names(rng: &mut impl Rng) -> String {
    one_or_two(rng, FIRST_NAMES, 4)
}

fn surnames(rng: &mut impl Rng) -> String {
    one_or_two(rng, LAST_NAMES, 8)
}

/// A name of `names`, and one time in `second_in` a second one after it.
fn one_or_two(rng: &mut impl Rng, names: &[&str], second_in: u32) -> String {
    let first = pick(rng, names);
    if rng.random_ratio(1, second_in) {
        format!("{first} {}", pick(rng, names))
    } else {
        first.to_owned()
    }
}

fn pick<'a>(rng: &mut impl Rng, names: &[&'a str]) -> &'a str {
    names.choose(rng).copied().unwrap_or("Ana")
}

fn random_date(rng: &mut impl Rng) -> Date {
    let start = Date::constant(1940, 1, 1);
    let days = rng.random_range(0..(2006 - 1940 + 1) * 365);
    start.checked_add(jiff::Span::new().days(days)).unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lottery::Bet;

    fn rows_of(seed: u64, rows: usize, winners: usize) -> (String, Vec<String>) {
        let mut out = Vec::new();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let docs = write_agency(&mut out, &mut rng, rows, winners).unwrap();
        (String::from_utf8(out).unwrap(), docs)
    }

    #[test]
    fn the_same_seed_gives_the_same_file() {
        assert_eq!(rows_of(7, 200, 3), rows_of(7, 200, 3));
        assert_ne!(rows_of(7, 200, 3).0, rows_of(8, 200, 3).0);
    }

    #[test]
    fn every_row_is_a_valid_bet_and_the_winners_are_exact() {
        let (text, docs) = rows_of(1, 2000, 5);
        assert_eq!(docs.len(), 5);
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
        let mut winners = Vec::new();
        let mut count = 0;
        for row in reader.records() {
            let row = row.unwrap();
            let bet = Bet::parse(1, &row[0], &row[1], &row[2], &row[3], &row[4]).unwrap();
            assert_eq!(bet.document.len(), 8);
            assert!((1940..=2006).contains(&bet.birthdate.year()));
            if bet.number == WINNING_NUMBER {
                winners.push(bet.document);
            }
            count += 1;
        }
        assert_eq!(count, 2000);
        assert_eq!(winners, docs);
    }
}
