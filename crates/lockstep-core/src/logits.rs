use crate::{Error, Result};

/// Row-major logits: one row of `vocab` scores per returned position.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    vocab: usize,
    data: Vec<f32>,
}

impl Logits {
    /// Panics if `data` is not a whole number of rows: a backend bug, not user input.
    pub fn new(vocab: usize, data: Vec<f32>) -> Self {
        assert!(
            vocab > 0 && data.len().is_multiple_of(vocab),
            "logits of {} values are not rows of {vocab}",
            data.len()
        );
        Self { vocab, data }
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn rows(&self) -> usize {
        self.data.len() / self.vocab
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    pub fn last(&self) -> &[f32] {
        self.row(self.rows() - 1)
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Index of the largest value of row `i`; the lowest index wins a tie, so that every
    /// backend breaks ties the same way.
    pub fn argmax(&self, i: usize) -> u32 {
        argmax(self.row(i))
    }
}

/// Fails unless every value of `row` is finite (and the row is not empty): NaN or an
/// infinity in a backend's logits means its output cannot be trusted, and neither an
/// argmax (which skips NaN and lets +inf win) nor a sampler may turn it into a token.
pub fn check_finite(row: &[f32]) -> Result<()> {
    if row.is_empty() {
        return Err(Error::Runtime("the backend returned empty logits".into()));
    }
    // A branch-free pass per chunk vectorizes; the position is looked up only on failure.
    if row
        .chunks(1024)
        .all(|c| c.iter().fold(true, |ok, l| ok & l.is_finite()))
    {
        return Ok(());
    }
    match row.iter().position(|l| !l.is_finite()) {
        Some(i) => Err(Error::Runtime(format!(
            "the backend returned a non-finite logit ({}) for token {i}; its output cannot be trusted",
            row[i]
        ))),
        None => Ok(()),
    }
}

/// Index of the largest value; the lowest index wins a tie. NaN never wins: callers that
/// cannot rule out non-finite values check the row with [`check_finite`] first.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_val = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_val {
            best = i;
            best_val = v;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_rows_are_errors() {
        assert!(check_finite(&[0.0, 1.0, -3.0]).is_ok());
        assert!(check_finite(&[]).is_err());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut row = vec![0.5f32; 3000];
            row[2500] = bad;
            let e = check_finite(&row).unwrap_err().to_string();
            assert!(e.contains("token 2500"), "{e}");
        }
    }

    #[test]
    fn argmax_takes_lowest_index_on_ties() {
        let l = Logits::new(4, vec![0.0, 2.0, 2.0, 1.0, 5.0, 5.0, 5.0, 5.0]);
        assert_eq!(l.rows(), 2);
        assert_eq!(l.argmax(0), 1);
        assert_eq!(l.argmax(1), 0);
    }
}
