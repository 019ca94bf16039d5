//! A bet and its validation.

use jiff::civil::Date;

/// The number that wins the draw.
pub const WINNING_NUMBER: u32 = 7574;

/// A valid bet of one agency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bet {
    pub agency: u32,
    pub first_name: String,
    pub last_name: String,
    /// The DNI as written: digits only, leading zeros kept.
    pub document: String,
    pub birthdate: Date,
    pub number: u32,
}

/// Why a bet is not valid. The message names the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBet {
    #[error("{0} is empty")]
    Empty(&'static str),
    #[error("documento {0:?} is not all digits")]
    Document(String),
    #[error("nacimiento {0:?} is not a real date YYYY-MM-DD")]
    Birthdate(String),
    #[error("numero {0:?} is not a non-negative integer below 2^32")]
    Number(String),
}

/// A valid bet whose text fields are borrowed from wherever they were
/// read (a frame, a CSV record): validating and storing a bet need no copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BetRef<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    /// The DNI as written: digits only, leading zeros kept.
    pub document: &'a str,
    pub birthdate: Date,
    pub number: u32,
}

impl<'a> BetRef<'a> {
    /// Checks the five text fields of a bet (first name, last name,
    /// document, birthdate, number) and parses the last two.
    pub fn parse(fields: [&'a str; 5]) -> Result<BetRef<'a>, InvalidBet> {
        let [first_name, last_name, document, birthdate, number] = fields;
        if is_blank(first_name) {
            return Err(InvalidBet::Empty("nombre"));
        }
        if is_blank(last_name) {
            return Err(InvalidBet::Empty("apellido"));
        }
        if !is_digits(document) {
            return Err(InvalidBet::Document(document.to_owned()));
        }
        let birthdate = parse_date(birthdate).ok_or_else(|| InvalidBet::Birthdate(birthdate.to_owned()))?;
        let number = is_digits(number)
            .then(|| number.parse::<u32>().ok())
            .flatten()
            .ok_or_else(|| InvalidBet::Number(number.to_owned()))?;
        Ok(BetRef { first_name, last_name, document, birthdate, number })
    }

    /// Whether this bet wins the draw.
    pub fn has_won(&self) -> bool {
        self.number == WINNING_NUMBER
    }

    /// The same bet, owning its text, as a bet of `agency`.
    pub fn to_bet(&self, agency: u32) -> Bet {
        Bet {
            agency,
            first_name: self.first_name.to_owned(),
            last_name: self.last_name.to_owned(),
            document: self.document.to_owned(),
            birthdate: self.birthdate,
            number: self.number,
        }
    }
}

impl Bet {
    /// Builds a bet from its text fields, checking each one.
    pub fn parse(
        agency: u32,
        first_name: &str,
        last_name: &str,
        document: &str,
        birthdate: &str,
        number: &str,
    ) -> Result<Bet, InvalidBet> {
        BetRef::parse([first_name, last_name, document, birthdate, number]).map(|bet| bet.to_bet(agency))
    }

    /// This bet, borrowed.
    pub fn as_ref(&self) -> BetRef<'_> {
        BetRef {
            first_name: &self.first_name,
            last_name: &self.last_name,
            document: &self.document,
            birthdate: self.birthdate,
            number: self.number,
        }
    }
}

/// Whether `bet` wins the draw.
pub fn has_won(bet: &Bet) -> bool {
    bet.number == WINNING_NUMBER
}

/// Whether `s` is empty or only white space (Unicode's, as `str::trim`).
fn is_blank(s: &str) -> bool {
    // Nearly every name starts with a letter: no need to decode it.
    match s.as_bytes().first() {
        Some(b) if b.is_ascii() && !b.is_ascii_whitespace() => false,
        _ => s.trim().is_empty(),
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses exactly `YYYY-MM-DD` into a date that exists.
fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9].iter().all(|&i| b[i].is_ascii_digit());
    if !shape_ok {
        return None;
    }
    // Every digit was checked above.
    let number = |digits: &[u8]| digits.iter().fold(0i16, |n, d| n * 10 + i16::from(d - b'0'));
    let (year, month, day) = (number(&b[0..4]), number(&b[5..7]), number(&b[8..10]));
    Date::new(year, month as i8, day as i8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(document: &str, birthdate: &str, number: &str) -> Result<Bet, InvalidBet> {
        Bet::parse(1, "Santiago Lionel", "Lorca", document, birthdate, number)
    }

    #[test]
    fn a_valid_bet_keeps_its_fields() {
        let bet = parse("30904465", "1999-03-17", "7574").unwrap();
        assert_eq!(bet.document, "30904465");
        assert_eq!(bet.birthdate, Date::new(1999, 3, 17).unwrap());
        assert!(has_won(&bet));
    }

    #[test]
    fn leading_zeros_of_the_document_stay() {
        assert_eq!(parse("00012345", "1999-03-17", "1").unwrap().document, "00012345");
    }

    #[test]
    fn names_must_not_be_blank() {
        assert_eq!(Bet::parse(1, " ", "Lorca", "1", "1999-03-17", "1"), Err(InvalidBet::Empty("nombre")));
        assert_eq!(Bet::parse(1, "Ana", "", "1", "1999-03-17", "1"), Err(InvalidBet::Empty("apellido")));
    }

    #[test]
    fn documents_are_digits_only() {
        for bad in ["", "12a4", "-123", " 123", "１２３"] {
            assert!(matches!(parse(bad, "1999-03-17", "1"), Err(InvalidBet::Document(_))), "{bad}");
        }
    }

    #[test]
    fn birthdates_are_real_iso_dates() {
        for bad in ["1999-02-30", "1999-13-01", "1999-3-17", "17/03/1999", "19990317", "", "2023-02-29"] {
            assert!(matches!(parse("1", bad, "1"), Err(InvalidBet::Birthdate(_))), "{bad}");
        }
        assert!(parse("1", "2024-02-29", "1").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn blank_is_what_trim_leaves_empty(s in "[ \t\u{a0}\u{2003}a,]{0,4}") {
            proptest::prop_assert_eq!(is_blank(&s), s.trim().is_empty());
        }

        #[test]
        fn a_date_is_what_its_numbers_make(y in 0i16..=9999, m in 0i8..=99, d in 0i8..=99) {
            let text = format!("{y:04}-{m:02}-{d:02}");
            proptest::prop_assert_eq!(parse_date(&text), Date::new(y, m, d).ok());
        }
    }

    #[test]
    fn numbers_are_non_negative_integers() {
        for bad in ["-1", "", "7.5", "+3", "99999999999", "x"] {
            assert!(matches!(parse("1", "1999-03-17", bad), Err(InvalidBet::Number(_))), "{bad}");
        }
        assert_eq!(parse("1", "1999-03-17", "0").unwrap().number, 0);
    }
}
