//! Stop strings matched across token boundaries.

/// Finds stop strings in streamed text and holds back any tail that could still become
/// one, so that no part of a stop string is ever emitted.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    /// `stops` must not contain an empty string (checked by `GenerateOptions::validate`).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            held: String::new(),
        }
    }

    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Adds `text`; returns the text that is now safe to emit and, if a stop string
    /// matched, its index. After a match the text from the stop string on is dropped.
    /// The earliest match wins; at the same position, the first stop string listed.
    pub fn push(&mut self, text: &str) -> (String, Option<usize>) {
        self.held.push_str(text);
        let hit = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|pos| (pos, i)))
            .min();
        if let Some((pos, i)) = hit {
            self.held.truncate(pos);
            return (std::mem::take(&mut self.held), Some(i));
        }
        let hold = self
            .stops
            .iter()
            .map(|s| partial_suffix(&self.held, s))
            .max()
            .unwrap_or(0);
        let rest = self.held.split_off(self.held.len() - hold);
        (std::mem::replace(&mut self.held, rest), None)
    }

    /// Releases the held-back text: generation ended without it becoming a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn partial_suffix(text: &str, stop: &str) -> usize {
    let max = (stop.len() - 1).min(text.len());
    (1..=max)
        .rev()
        .find(|&k| {
            text.is_char_boundary(text.len() - k)
                && stop.as_bytes()[..k] == text.as_bytes()[text.len() - k..]
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (t, hit) = m.push(p);
            out += &t;
            if hit.is_some() {
                return (out, hit);
            }
        }
        out += &m.finish();
        (out, None)
    }

    #[test]
    fn stop_split_across_pieces_is_not_emitted() {
        let mut m = StopMatcher::new(vec!["</end>".into()]);
        assert_eq!(m.push("hello </"), ("hello ".into(), None));
        assert_eq!(m.push("en"), ("".into(), None));
        assert_eq!(m.push("d> tail"), ("".into(), Some(0)));
    }

    #[test]
    fn false_start_is_released() {
        assert_eq!(run(&["abc"], &["xa", "b", "d"]), ("xabd".into(), None));
        assert_eq!(run(&["aab"], &["a", "a", "a", "b"]), ("a".into(), Some(0)));
        // A held tail is released when generation ends for another reason.
        assert_eq!(run(&["abc"], &["x", "ab"]), ("xab".into(), None));
    }

    #[test]
    fn earliest_match_wins_and_multibyte_is_safe() {
        assert_eq!(
            run(&["world", "lo"], &["hello world"]),
            ("hel".into(), Some(1))
        );
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), Some(0)));
        assert_eq!(run(&["\n\n"], &["a\n", "b"]), ("a\nb".into(), None));
    }
}
