use serde::{Deserialize, Serialize};

/// Mean and sample standard deviation of repeated measurements, samples kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for a single sample.
    pub sd: f64,
    pub samples: Vec<f64>,
}

impl Stats {
    pub fn new(samples: Vec<f64>) -> Self {
        let n = samples.len() as f64;
        let mean = if samples.is_empty() {
            f64::NAN
        } else {
            samples.iter().sum::<f64>() / n
        };
        let sd = if samples.len() < 2 {
            0.0
        } else {
            (samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Self { mean, sd, samples }
    }

    /// `mean ± sd` with `digits` decimals, as llama-bench prints it.
    pub fn show(&self, digits: usize) -> String {
        format!("{:.*} ± {:.*}", digits, self.mean, digits, self.sd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let s = Stats::new(vec![2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((s.mean - 5.0).abs() < 1e-12);
        assert!((s.sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(Stats::new(vec![3.0]).sd, 0.0);
        assert_eq!(Stats::new(vec![1.0, 3.0]).show(1), "2.0 ± 1.4");
    }
}
